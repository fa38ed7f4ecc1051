"""Served answers on durable storage: what a resumed run's report joins (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddn_ray.controller import Controller
from ddn_ray.report import last_revealed
from ddn_ray.served import ServedStore, StaticBaseline
from ddn_ray.versions import VersionStore


def window(index: int, size: int = 4, version: int = 1, regression: bool = False) -> dict[str, np.ndarray]:
    offsets = np.arange(index * size, (index + 1) * size, dtype=np.int64)
    rows = {
        "offset": offsets,
        "window": np.full(size, index, np.int64),
        "label": np.stack([offsets, -offsets], 1).astype(np.float32) if regression else offsets % 2,
        "prediction": np.stack([offsets, offsets], 1).astype(np.float64) if regression else (offsets + 1) % 2,
        "version": np.full(size, version, np.int64),
        "static_prediction": np.full((size, 2) if regression else size, 7, np.float64 if regression else np.int64),
    }
    return rows


def journal(run: Path, attempt: str, ends: dict[int, int]) -> None:
    c = Controller(journal=VersionStore(uri=str(run / "controller" / attempt)))
    for _, end in sorted(ends.items()):
        c.publish({"w": np.zeros(2, np.float32)}, {"trained_end_offset": end})


def test_earlier_attempts_give_each_offset_once_before_the_resume(tmp_path: Path) -> None:
    a = ServedStore(run_uri=str(tmp_path), attempt="20261205-090000-1")
    journal(tmp_path, a.attempt, {0: 0, 1: 4, 2: 8, 3: 12})
    for i in range(4):  # windows 0-3, then the driver died
        a.write(window(i, version=i), window=i, rows_trained=4)
    (tmp_path / "served" / a.attempt / ".w00000004.parquet.tmp").write_bytes(b"torn")  # killed mid-write
    b = ServedStore(run_uri=str(tmp_path), attempt="20261205-090500-2")
    journal(tmp_path, b.attempt, {0: 0, 1: 4, 2: 100})
    for i in (1, 2):  # resumed at window 1, died again after window 2
        b.write(window(i, version=2), window=i, rows_trained=3)
    c = ServedStore(run_uri=str(tmp_path), attempt="20261205-091000-3")
    prior = c.earlier(before_offset=12)  # resumed at window 3: rows 0-11 come from the two earlier attempts
    assert prior is not None
    assert (prior.rows["offset"] == np.arange(12)).all()
    # window 0 from the first attempt; windows 1-2 from the second, the latest that answered them
    assert (prior.rows["version"] == [0] * 4 + [2] * 8).all()
    assert (prior.rows["trained_end"] == [0] * 4 + [100] * 8).all()  # each attempt's own version 2
    assert prior.rows_trained == 4 + 3 + 3
    assert prior.attempts == [
        {"attempt": a.attempt, "rows": 4, "first_offset": 0, "end_offset": 4},
        {"attempt": b.attempt, "rows": 8, "first_offset": 4, "end_offset": 12},
    ]
    assert c.earlier(before_offset=0) is None
    # reading is read-only: an attempt without a controller journal reads as trained up to 0, nothing is made
    lone = ServedStore(run_uri=str(tmp_path / "lone"), attempt="1")
    lone.write(window(0), window=0, rows_trained=4)
    again = ServedStore(run_uri=str(tmp_path / "lone"), attempt="2").earlier(before_offset=4)
    assert again is not None and (again.rows["trained_end"] == 0).all()
    assert not (tmp_path / "lone" / "controller").exists()
    assert ServedStore(run_uri=str(tmp_path / "fresh"), attempt="x").earlier(before_offset=10) is None


def test_a_regressions_two_dimensional_columns_and_ids_round_trip(tmp_path: Path) -> None:
    a = ServedStore(run_uri=str(tmp_path), attempt="1")
    journal(tmp_path, "1", {0: 0, 1: 4})
    rows = {**window(0, regression=True), "id": np.array(["a", "b", "c", "d"])}
    a.write(rows, window=0, rows_trained=4)
    prior = ServedStore(run_uri=str(tmp_path), attempt="2").earlier(before_offset=4)
    assert prior is not None
    for k, v in rows.items():
        assert prior.rows[k].shape == v.shape and (prior.rows[k] == v).all(), k


def test_the_static_baseline_round_trips(tmp_path: Path) -> None:
    store = ServedStore(run_uri=str(tmp_path), attempt="1")
    assert store.read_static() is None
    weights = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    store.write_static(StaticBaseline(weights=weights, preprocessing={"mean": [0.5]}, window=5))
    got = ServedStore(run_uri=str(tmp_path), attempt="2").read_static()
    assert got is not None and got.window == 5 and got.preprocessing == {"mean": [0.5]}
    np.testing.assert_array_equal(got.weights["fc.weight"], weights["fc.weight"])


@pytest.mark.parametrize("regression", [False, True])
def test_no_change_sees_the_last_label_of_the_window_before(regression: bool) -> None:
    windows = np.array([3, 3, 4, 4, 4, 6])
    labels = np.arange(6) if not regression else np.stack([np.arange(6), np.arange(6) * 10], 1)
    got = last_revealed(windows, labels)
    expected = np.array([0, 0, 1, 1, 1, 4])
    if regression:
        expected = np.stack([expected, expected * 10], 1)
    assert got.shape == labels.shape and (got == expected).all()


def test_a_killed_runs_report_comes_from_its_served_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``ddn-ray report <storage>/<run>`` of a run that never reached its end: every row it served, scored."""
    from ddn_ray import cli

    a = ServedStore(run_uri=str(tmp_path), attempt="20261205-090000-1")
    journal(tmp_path, a.attempt, {0: 0, 1: 4})
    for i in range(5):
        rows = window(i)
        rows["prediction"] = rows["label"] if i % 2 else 1 - rows["label"]  # odd windows right, even wrong
        a.write(rows, window=i, rows_trained=4)
    a.write_static(StaticBaseline(weights={"w": np.zeros(1)}, preprocessing=None, window=2))
    report = cli.main(["report", str(tmp_path)])
    assert report["rows_served"] == 20 and report["static_windows"] == 2 and report["windows"] == 5
    # windows 2-4 are scored: 3 and its 4 right, 2 and 4 wrong
    assert report["scores"]["dynamic (served)"]["accuracy"] == pytest.approx(4 / 12)
    assert (tmp_path / "served_report.json").is_file() and "20 rows served by 1 attempt" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        cli.served_report(tmp_path / "nothing")
