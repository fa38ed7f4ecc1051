from __future__ import annotations

import numpy as np
import pytest

from ddn_ray import stream
from ddn_ray.handoff import shard_tables
from ddn_ray.stream import Table


def _table(n: int = 10, nf: int = 3) -> Table:
    rng = np.random.default_rng(0)
    return Table(rng.random((n, nf), dtype=np.float32), rng.integers(0, 2, n), tuple("abc"[:nf]), 2)


def test_replay_windows_cover_every_offset_once() -> None:
    t = _table(10)
    wins = list(stream.ReplaySource(t, window_size=4))
    assert [(w.index, w.start, w.end) for w in wins] == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    assert np.array_equal(np.concatenate([w.offsets for w in wins]), np.arange(10))
    assert np.array_equal(np.concatenate([w.labels for w in wins]), t.labels)


def test_replay_resumes_at_offset_with_matching_window_index() -> None:
    wins = list(stream.ReplaySource(_table(10), window_size=4, start_offset=4))
    assert [(w.index, w.start) for w in wins] == [(1, 4), (2, 8)]


def test_bad_rows_are_quarantined_not_trained_on() -> None:
    t = _table(6)
    t.features[1, 0] = np.nan
    t.features[4, 2] = np.inf
    t.labels[3] = 7
    src = stream.ReplaySource(t, window_size=3)
    wins = list(src)
    assert [list(w.offsets) for w in wins] == [[0, 2], [5]]
    assert src.quarantine.offsets == [1, 3, 4]
    assert src.quarantine.reasons == ["non-finite feature", "label 7 not in [0, 2)", "non-finite feature"]
    assert all(np.isfinite(w.features).all() for w in wins)


def test_landing_dir_yields_the_same_windows_as_replay(tmp_path) -> None:
    t = _table(23)
    for seq, s in enumerate(range(0, 23, 7)):  # a producer writing files of 7 rows
        stream.write_landing_file(tmp_path, seq, t.features[s : s + 7], t.labels[s : s + 7])
    (tmp_path / ".part-99.parquet.tmp").write_bytes(b"in progress")  # ignored
    got = list(stream.LandingDirSource(tmp_path, 2, window_size=5, poll_interval_s=0.01, idle_timeout_s=0.05))
    want = list(stream.ReplaySource(t, window_size=5))
    assert [(w.index, w.start, w.end) for w in got] == [(w.index, w.start, w.end) for w in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.features, w.features)
        np.testing.assert_array_equal(g.labels, w.labels)


def test_landing_dir_resume_skips_windows_before_offset(tmp_path) -> None:
    t = _table(12)
    stream.write_landing_file(tmp_path, 0, t.features, t.labels)
    got = list(
        stream.LandingDirSource(tmp_path, 2, window_size=4, start_offset=8, poll_interval_s=0.01, idle_timeout_s=0.05)
    )
    assert [(w.index, w.start, w.end) for w in got] == [(2, 8, 12)]


def test_landing_dir_rejects_files_without_the_columns(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ddn_ray.errors import DataError

    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "part-0.parquet")
    with pytest.raises(DataError, match="needs columns 'features' and 'label'"):
        list(stream.LandingDirSource(tmp_path, 2, window_size=4, poll_interval_s=0.01, idle_timeout_s=0.05))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_are_equal_sized_and_disjoint(world: int) -> None:
    w = next(iter(stream.ReplaySource(_table(11), window_size=11)))
    shards = shard_tables(w, world)
    sizes = {s.num_rows for s in shards}
    assert len(sizes) == 1 and sizes.pop() == 11 // world
    feats = np.concatenate([np.stack(s["features"].to_numpy(zero_copy_only=False)) for s in shards])
    assert len({tuple(r) for r in feats}) == (11 // world) * world


def test_last_label_feature_is_the_newest_label_revealed_before_the_window() -> None:
    t = _table(10)
    one = list(stream.with_last_label(stream.ReplaySource(t, 1), initial=7))
    assert [float(w.features[0, -1]) for w in one] == [7.0, *map(float, t.labels[:-1])]  # W=1: the previous row's label
    four = list(stream.with_last_label(stream.ReplaySource(t, 4)))
    assert all(w.features.shape == (len(w), t.features.shape[1] + 1) for w in four)
    assert [set(w.features[:, -1].tolist()) for w in four] == [{0.0}, {float(t.labels[3])}, {float(t.labels[7])}]
    assert np.array_equal(four[1].features[:, :-1], t.features[4:8])  # the original columns are untouched


@pytest.mark.parametrize("regression", [False, True])
def test_from_arrow_is_the_inverse_of_to_arrow(regression: bool) -> None:
    from ddn_ray.stream import from_arrow, to_arrow

    rng = np.random.default_rng(0)
    x = rng.random((7, 3), dtype=np.float32)
    y = rng.random((7, 2), dtype=np.float32) if regression else rng.integers(0, 4, 7)
    x2, y2 = from_arrow(to_arrow(x, y))
    assert x2.dtype == np.float32 and x2.shape == (7, 3) and np.array_equal(x2, x)
    assert y2.dtype == (np.float32 if regression else np.int64) and np.array_equal(y2, y)
