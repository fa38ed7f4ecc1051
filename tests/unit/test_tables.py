"""User tables as streams: pyarrow readers, files / dirs / globs / URIs, bad files named, reveal after serving."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddn_ray import sources, tables
from ddn_ray.errors import DataError
from ddn_ray.features import Featurizer


def _rows(n: int, start: int = 0) -> pa.Table:
    i = np.arange(start, start + n)
    return pa.table(
        {
            "id": [f"r{k}" for k in i],
            "t": (i[::-1]).astype(np.int64),
            "amount": i.astype(float),
            "region": [["n", "s", "e"][k % 3] for k in i],
            "y": [["no", "yes"][k % 2] for k in i],
        }
    )


def _write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = sources.infer_format(str(path))
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        path.write_text("".join(__import__("json").dumps(r) + "\n" for r in table.to_pylist()))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_each_format_streams_the_same_windows(tmp_path: Path, suffix: str) -> None:
    f = _write(_rows(25), tmp_path / f"data{suffix}")
    src = sources.FileSource(
        uri=str(f), columns=["amount", "region", "y"], numeric=["amount"], window_size=10, batch_rows=7
    )
    ws = list(src)
    assert [(w.start, w.end) for w in ws] == [(0, 10), (10, 20), (20, 25)] and src.count_rows() == 25
    assert ws[1].table["amount"].to_pylist() == [float(k) for k in range(10, 20)]
    assert ws[2].offsets.tolist() == list(range(20, 25))


def test_directory_glob_and_file_uri_read_every_file_in_name_order(tmp_path: Path) -> None:
    for k in range(3):
        _write(_rows(5, 5 * k), tmp_path / "d" / f"part-{k}.parquet")
    _write(_rows(5), tmp_path / "d" / ".in-progress.parquet")
    cols: dict = {"columns": ["amount"], "numeric": ["amount"], "window_size": 4}
    by_dir = [w.table["amount"].to_pylist() for w in sources.FileSource(uri=str(tmp_path / "d"), **cols)]
    by_glob = [
        w.table["amount"].to_pylist() for w in sources.FileSource(uri=str(tmp_path / "d" / "part-*.parquet"), **cols)
    ]
    by_uri = [w.table["amount"].to_pylist() for w in sources.FileSource(uri=f"file://{tmp_path}/d", **cols)]
    assert by_dir == by_glob == by_uri and [v for w in by_dir for v in w] == [float(k) for k in range(15)]


def test_order_by_resume_and_max_rows(tmp_path: Path) -> None:
    f = _write(_rows(30), tmp_path / "x.csv")
    src = sources.FileSource(
        uri=str(f), columns=["amount"], numeric=["amount"], window_size=10, order_by="t", start_offset=10, max_rows=25
    )
    ws = list(src)
    assert [(w.index, w.start, w.end) for w in ws] == [(1, 10, 20), (2, 20, 25)]
    assert ws[0].table["amount"].to_pylist()[0] == 19.0  # sorted by t, which runs backwards


def test_bad_files_stop_at_start_naming_file_and_column(tmp_path: Path) -> None:
    f = _write(_rows(5), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"a\.parquet: missing column 'income'"):
        sources.FileSource(uri=str(f), columns=["income"], window_size=2)
    with pytest.raises(DataError, match=r"column 'region' is string, expected numbers"):
        sources.FileSource(uri=str(f), columns=["region"], numeric=["region"], window_size=2)
    broken = tmp_path / "b.parquet"
    broken.write_bytes(f.read_bytes()[:40])
    with pytest.raises(DataError, match=r"b\.parquet does not parse"):
        sources.FileSource(uri=str(broken), columns=["amount"], window_size=2)
    with pytest.raises(DataError, match="no such file"):
        sources.FileSource(uri=str(tmp_path / "nope.csv"), columns=["amount"], window_size=2)
    with pytest.raises(DataError, match=re.escape("set data.format")):
        sources.FileSource(
            uri=str(_write(_rows(2), tmp_path / "c.csv").rename(tmp_path / "c.dat")), columns=["amount"], window_size=2
        )


def test_landing_dir_reads_files_as_they_arrive(tmp_path: Path) -> None:
    land = tmp_path / "land"
    land.mkdir()

    def produce() -> None:  # as a producer does: write to a dot name (in progress), then rename
        for k in range(3):
            time.sleep(0.1)
            name = f"part-{k:03d}.csv" if k == 1 else f"part-{k:03d}.parquet"
            _write(_rows(7, 7 * k), land / f".{name}").rename(land / name)

    threading.Thread(target=produce, daemon=True).start()
    src = sources.LandingDirSource(
        path=str(land),
        columns=["amount", "y"],
        numeric=["amount"],
        window_size=5,
        poll_interval_s=0.05,
        idle_timeout_s=1.0,
    )
    ws = list(src)
    assert [(w.start, w.end) for w in ws] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 21)]
    assert [v for w in ws for v in w.table["amount"].to_pylist()] == [float(k) for k in range(21)]
    assert len(src.files_read) == 3


def test_a_landing_dir_quarantines_the_files_it_cannot_read_and_goes_on(tmp_path: Path) -> None:
    land = tmp_path / "land"
    _write(_rows(4, 0), land / "part-000.parquet")
    good = (land / "part-000.parquet").read_bytes()
    (land / "part-001.parquet").write_bytes(good[: len(good) // 2])  # truncated mid-write
    _write(_rows(4, 4).drop_columns(["amount"]), land / "part-002.parquet")  # wrong schema
    _write(_rows(4, 8).set_column(2, "amount", pa.array(["x"] * 4)), land / "part-003.csv")  # text, not numbers
    (land / "part-004.txt").write_text("amount,y\n1,no\n")  # a suffix that names no format
    bad = _rows(4, 12).set_column(2, "amount", pa.array([12.0, None, 14.0, 15.0]))
    _write(bad, land / "part-005.parquet")
    src = sources.LandingDirSource(
        path=str(land), columns=["amount", "y"], numeric=["amount"], window_size=3, idle_timeout_s=0.2
    )
    feat = Featurizer(numeric=["amount"], label="y", classes=["no", "yes"], missing="quarantine")
    ts = tables.TabularStream(source=src, featurizer=feat)
    ws = list(ts.windows())
    assert [v for w in ws for v in w.table["amount"].to_pylist()] == [0.0, 1.0, 2.0, 3.0, 12.0, 14.0, 15.0]
    assert [Path(f).name for f in src.files_read] == ["part-000.parquet", "part-005.parquet"]
    reasons = {Path(f).name: why for f, why in ts.quarantine.files}
    assert sorted(reasons) == ["part-001.parquet", "part-002.parquet", "part-003.csv", "part-004.txt"]
    assert "does not parse as parquet" in reasons["part-001.parquet"]
    assert "missing column 'amount'" in reasons["part-002.parquet"]
    assert "amount" in reasons["part-003.csv"] and "unknown format" in reasons["part-004.txt"]
    assert ts.quarantine.offsets == [5]  # offsets count the rows of the files read
    assert ts.quarantine.reasons == [f"{land / 'part-005.parquet'}: missing value in amount"]
    assert src.file_of(3) == str(land / "part-000.parquet") and src.file_of(4) == str(land / "part-005.parquet")


def test_tabular_stream_quarantines_then_reveals_after_serving(tmp_path: Path) -> None:
    t = _rows(6).set_column(2, "amount", pa.array([0.0, None, 2.0, 3.0, 4.0, 5.0]))
    t = t.set_column(4, "y", pa.array(["no", "yes", "maybe", "no", None, "yes"]))
    f = _write(t, tmp_path / "q.parquet")
    feat = Featurizer(
        numeric=["amount"],
        categorical=["region"],
        label="y",
        classes=["no", "yes"],
        missing="quarantine",
        max_categories=4,
    )
    ts = tables.TabularStream(
        source=sources.FileSource(
            uri=str(f), columns=["amount", "region", "y", "id"], numeric=["amount"], window_size=3
        ),
        featurizer=feat,
        id_column="id",
    )
    served = []
    for w in ts.windows():
        recs = ts.records(w)
        assert all(set(r) == {"amount", "region", "id"} for r in recs)  # no label in what is served
        served.append(([r["id"] for r in recs], feat.rows_seen))
        revealed = ts.reveal(w)
        assert revealed.features.shape == (len(w), feat.width) and revealed.labels.dtype == np.int64
    assert served == [(["r0"], 0), (["r3", "r5"], 1)]  # each window served before it was fitted
    assert ts.quarantine.offsets == [1, 2, 4]
    assert ts.quarantine.reasons[0] == "missing value in amount" and "declared classes" in ts.quarantine.reasons[1]


def test_an_empty_csv_cell_is_a_missing_value_not_an_empty_string(tmp_path: Path) -> None:
    f = tmp_path / "gaps.csv"
    f.write_text("amount,region,y\n1.5,n,yes\n,,\n2.5,s,no\n")
    (w,) = sources.FileSource(uri=str(f), columns=["amount", "region", "y"], numeric=["amount"], window_size=10)
    assert w.table["region"].to_pylist() == ["n", None, "s"] and w.table["y"].to_pylist() == ["yes", None, "no"]
    fz = Featurizer(numeric=["amount"], categorical=["region"], label="y", classes=["no", "yes"])
    good, reasons = fz.check(w.table)
    assert good.tolist() == [True, False, True] and reasons == ["missing label y"]


SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


@pytest.mark.skipif(not (SHARED / "elec2").is_dir(), reason="needs ../shared/datasets")
def test_elec2_as_a_user_table_gives_the_built_in_windows_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    from ddn_ray import config, stream
    from ddn_ray.usecases import datasets

    monkeypatch.setenv("DDN_RAY_DATA_DIR", str(SHARED))
    cfg = config.load(Path(__file__).parents[2] / "jobs" / "configs" / "elec2.yaml", {"data": {"max_rows": 3000}})
    fz = tables.featurizer_for(cfg.data, cfg.model.task)
    generic = tables.TabularStream(source=tables.source_for(cfg.data, fz, window_size=50), featurizer=fz)
    built_in = stream.iter_windows(stream.ReplaySource(datasets.load_elec2(SHARED, 3000), 50, 0), False)
    n = 0
    for raw, want in zip(generic.windows(), built_in, strict=True):
        got = generic.reveal(raw)
        assert np.array_equal(got.features, want.features) and np.array_equal(got.labels, want.labels)
        assert got.features.dtype == np.float32 and got.labels.dtype == np.int64
        n += 1
    assert n == 60 and len(generic.quarantine) == 0


@pytest.mark.parametrize("how", ["rows", "prepare", "prepare, stateless"])
def test_batches_converted_once_give_the_windows_of_per_window_conversion(tmp_path: Path, how: str) -> None:
    """Windows that cross record batches (7 rows each) carry the same Rows as converting each window's table;
    with ``prepare``, the batch's checks (and a stateless featurizer's inputs) are those of each window."""
    t = _rows(40).set_column(2, "amount", pa.array([None if k % 9 == 4 else float(k) for k in range(40)]))
    t = t.set_column(
        4,
        "y",
        pa.array([None if k % 11 == 3 else ("maybe" if k % 13 == 5 else ("no", "yes")[k % 2]) for k in range(40)]),
    )
    f = _write(t, tmp_path / "b.parquet")
    stateless = how.endswith("stateless")
    feat = Featurizer(
        numeric=["amount", "t"],
        categorical=[] if stateless else ["region"],
        label="y",
        classes=["no", "yes"],
        max_categories=3,
        scaling="none" if stateless else "standard",
        missing="quarantine" if stateless else "impute",
    )
    src = sources.FileSource(
        uri=str(f),
        columns=["amount", "t", "region", "y"],
        numeric=["amount", "t"],
        window_size=10,
        batch_rows=7,
        prepare=feat.rows if how == "rows" else feat.prepare,
    )
    windows = list(src)
    assert [len(w) for w in windows] == [10, 10, 10, 10]
    assert (windows[0].rows.checked is None) == (how == "rows")
    assert (windows[0].rows.inputs is not None) == stateless
    for w in windows:
        assert w.rows is not None
        direct = feat.rows(w.table)
        np.testing.assert_array_equal(w.rows.numeric, direct.numeric)
        assert w.rows.label.to_pylist() == direct.label.to_pylist()
        good, reasons = feat.check(w.rows)
        want_good, want_reasons = feat.check(direct)
        assert good.tolist() == want_good.tolist() and reasons == want_reasons
        np.testing.assert_array_equal(feat.label_ids(w.rows), feat.label_ids(direct))
        np.testing.assert_array_equal(feat.transform(w.rows), feat.transform(direct))
        feat.update(w.rows.filter(good))
    assert feat.rows_seen == sum(feat.check(w.table)[0].sum() for w in windows)


def test_split_rows_are_the_records_values_in_column_order(tmp_path: Path) -> None:
    t = _rows(6).set_column(2, "amount", pa.array([0.0, None, 2.0, 3.0, 4.0, 5.0]))
    f = _write(t, tmp_path / "s.parquet")
    feat = Featurizer(numeric=["amount"], categorical=["region"], label="y", classes=["no", "yes"])
    ts = tables.TabularStream(
        source=sources.FileSource(
            uri=str(f), columns=["amount", "region", "y", "id"], numeric=["amount"], window_size=4, prepare=feat.prepare
        ),
        featurizer=feat,
        id_column="id",
    )
    assert ts.record_columns == ["amount", "region", "id"]
    for w in ts.windows():
        assert ts.split(w) == [[r[c] for c in ts.record_columns] for r in ts.records(w)]
        if w.index == 0:
            assert ts.split(w)[:2] == [[0.0, "n", "r0"], [None, "s", "r1"]]  # JSON has no NaN: a gap is null
        ts.reveal(w)


def test_a_variable_in_the_uri_that_is_not_set_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DDN_RAY_NOT_SET", raising=False)
    with pytest.raises(DataError, match="environment variable DDN_RAY_NOT_SET is not set"):
        sources.resolve("${DDN_RAY_NOT_SET}/elec2/electricity.csv")


def test_replay_table_featurizes_each_window_as_served_and_leaves_refused_rows_out(tmp_path: Path) -> None:
    from ddn_ray import config

    t = _rows(30).set_column(4, "y", pa.array([None if k == 7 else ("no", "yes")[k % 2] for k in range(30)]))
    f = _write(t, tmp_path / "r.csv")
    data = config.DataConfig(
        source={"kind": "table", "uri": str(f)}, features=["amount", "region"], label="y", classes=["no", "yes"]
    )
    table = tables.replay_table(data, "classification", window_size=10)
    assert table.features.shape == (29, 2 + 32) and table.labels.tolist()[:7] == [0, 1, 0, 1, 0, 1, 0]
    assert table.feature_names[:2] == ("amount", "amount__missing") and table.num_classes == 2
    # Window 0 is served before anything was fitted (identity scaling); window 1 with window 0's moments.
    assert table.features[:9, 0].tolist() == [float(k) for k in range(10) if k != 7]
    window0 = np.array([k for k in range(10) if k != 7], float)
    assert table.features[9, 0] == pytest.approx((10 - window0.mean()) / window0.std(ddof=1), rel=1e-6)
    landing = config.DataConfig(
        source={"kind": "landing_dir", "path": str(tmp_path)}, features=["amount"], label="y", classes=["no", "yes"]
    )
    with pytest.raises(ValueError, match="landing dir"):
        tables.replay_table(landing, "classification", window_size=10)


def _put(fs: pafs.FileSystem, table: pa.Table, path: str, local: Path) -> None:
    """Write ``table`` as the file ``local`` (its suffix names the format), then upload it to ``path`` on ``fs``."""
    pafs.copy_files(str(_write(table, local)), path, destination_filesystem=fs)


def test_an_s3_uri_streams_what_the_local_files_stream(s3: pafs.S3FileSystem, tmp_path: Path) -> None:
    from ddn_ray import config

    t = _rows(30).set_column(4, "y", pa.array([None if k == 7 else ("no", "yes")[k % 2] for k in range(30)]))
    for k in range(3):
        _put(s3, t.slice(10 * k, 10), f"ddn-test/loans/part-{k}.parquet", tmp_path / "local" / f"part-{k}.parquet")
    cols: dict = {"columns": ["amount"], "numeric": ["amount"], "window_size": 4}
    expected = [w.table["amount"].to_pylist() for w in sources.FileSource(uri=str(tmp_path / "local"), **cols)]
    for uri in ("s3://ddn-test/loans", "s3://ddn-test/loans/", "s3://ddn-test/loans/part-*"):
        src = sources.FileSource(uri=uri, **cols)
        assert src.files[0] == "ddn-test/loans/part-0.parquet" and len(src.files) == 3
        assert [w.table["amount"].to_pylist() for w in src] == expected, uri
    # The whole path of a job's table: schema, categorical columns, quarantine, featurized as served.
    kw: dict = {"features": ["amount", "region"], "label": "y", "classes": ["no", "yes"]}
    local = tables.replay_table(
        config.DataConfig(source={"kind": "table", "uri": str(tmp_path / "local")}, **kw),
        "classification",
        window_size=10,
    )
    remote = tables.replay_table(
        config.DataConfig(source={"kind": "table", "uri": "s3://ddn-test/loans"}, **kw),
        "classification",
        window_size=10,
    )
    assert remote.features.shape == (29, 2 + 32) and remote.feature_names == local.feature_names
    np.testing.assert_array_equal(remote.features, local.features)
    np.testing.assert_array_equal(remote.labels, local.labels)
    # A CSV beside the parquet parts: refused at start, unless data.format picks the parquet ones.
    _put(s3, t.slice(0, 5), "ddn-test/loans/extra.csv", tmp_path / "extra.csv")
    with pytest.raises(
        DataError,
        match=r"several formats \(csv: ddn-test/loans/extra\.csv, parquet: "
        r"ddn-test/loans/part-0\.parquet\); keep one format",
    ):
        sources.FileSource(uri="s3://ddn-test/loans", **cols)
    src = sources.FileSource(uri="s3://ddn-test/loans", format="parquet", **cols)
    assert [w.table["amount"].to_pylist() for w in src] == expected
    # A bad object is named by its path in the bucket; a prefix with nothing under it says so.
    s3.open_output_stream("ddn-test/bad/a.parquet").close()
    with pytest.raises(DataError, match=r"ddn-test/bad/a\.parquet does not parse"):
        sources.FileSource(uri="s3://ddn-test/bad/a.parquet", **cols)
    with pytest.raises(DataError, match="no such file"):
        sources.FileSource(uri="s3://ddn-test/nothing-here", **cols)


def test_a_landing_dir_on_s3_reads_objects_as_they_arrive(s3: pafs.S3FileSystem, tmp_path: Path) -> None:
    def produce() -> None:  # an S3 PUT is atomic: an object is whole once it is listed
        for k in range(3):
            time.sleep(0.1)
            _put(s3, _rows(7, 7 * k), f"ddn-test/land/part-{k:03d}.parquet", tmp_path / f"part-{k:03d}.parquet")

    s3.create_dir("ddn-test/land")
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    src = sources.LandingDirSource(
        path="s3://ddn-test/land",
        columns=["amount", "y"],
        numeric=["amount"],
        window_size=5,
        poll_interval_s=0.05,
        idle_timeout_s=1.5,
    )
    ws = list(src)
    producer.join()
    assert [v for w in ws for v in w.table["amount"].to_pylist()] == [float(k) for k in range(21)]
    assert src.files_read == [f"ddn-test/land/part-{k:03d}.parquet" for k in range(3)]


_BAD_NUMBERS = [float("nan"), float("inf"), float("-inf"), None, 1e300, -1e300]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(st.floats(-1e6, 1e6), st.sampled_from(_BAD_NUMBERS)),
            st.one_of(st.sampled_from(["n", "s", "e"]), st.none(), st.text(max_size=3)),
            st.one_of(st.sampled_from(["no", "yes"]), st.none(), st.sampled_from(["maybe", ""])),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 9),
)
def test_every_bad_row_a_source_can_meet_is_quarantined_and_counted_never_revealed(rows: list, window: int) -> None:
    import tempfile

    amount, region, label = (list(c) for c in zip(*rows))
    table = pa.table({"amount": pa.array(amount, pa.float64()), "region": region, "y": label})
    feat = Featurizer(
        numeric=["amount"], categorical=["region"], label="y", classes=["no", "yes"], missing="quarantine"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(table, Path(tmp) / "rows.parquet")
        src = sources.FileSource(
            uri=str(path), columns=["amount", "region", "y"], numeric=["amount"], window_size=window
        )
        ts = tables.TabularStream(source=src, featurizer=feat)
        kept = []
        for w in ts.windows():
            revealed = ts.reveal(w)  # what training gets
            assert np.isfinite(revealed.features).all() and set(revealed.labels.tolist()) <= {0, 1}
            kept += w.offsets.tolist()
    bad = {
        i
        for i, (a, r, y) in enumerate(rows)
        if a is None or not np.isfinite(a) or abs(a) > 3.4e38 or r is None or y not in ("no", "yes")
    }
    assert sorted(ts.quarantine.offsets) == sorted(bad)  # every bad row, and only those, counted with a reason
    assert len(ts.quarantine.reasons) == len(bad) and all(ts.quarantine.reasons)
    assert sorted(kept + ts.quarantine.offsets) == list(range(len(rows)))  # nothing lost, nothing twice
