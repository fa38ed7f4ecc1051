"""The service's prediction log and feedback join (ddn_ray.eventlog), in-process, on real Parquet files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ddn_ray.eventlog import AnsweredRows, EventLog, new_event_ids


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def answered(n: int, at: float, version: int = 1, start: float = 0.0) -> AnsweredRows:
    x = np.arange(start, start + n, dtype=np.float64)
    return AnsweredRows(
        event_ids=[f"e{int(v)}" for v in x],
        features=pa.table({"x": x, "c": ["a"] * n}),
        predictions=(x.astype(np.int64) % 2),
        probabilities=np.full((n, 2), 0.5, np.float32),
        model_version=version,
        predicted_at_s=at,
        replica="r1",
    )


def test_join_is_durable_idempotent_and_names_unknown_and_late(tmp_path) -> None:
    clock = Clock()
    log = EventLog(uri=str(tmp_path), retention_s=60.0, clock=clock)
    log.add(answered(10, at=clock.t))
    clock.t += 2.0
    # rows 0..3 labelled: predictions were 0,1,0,1; labels 0,0,0,0 -> errors 0,1,0,1
    r = log.join(["e0", "e1", "e2", "e3", "nope", "e0"], [0, 0, 0, 0, 1, 0], np.array([0, 0, 0, 0, 1, 0]))
    assert r.joined == ["e0", "e1", "e2", "e3"] and r.unknown == ["nope"] and r.duplicate == ["e0"]
    assert r.first_offset == 0
    # durable before the call returned: the prediction log and the joined log are on disk
    preds = pq.read_table(tmp_path / "predictions")
    joined = pq.read_table(tmp_path / "joined")
    assert preds.num_rows == 10 and set(joined["event_id"].to_pylist()) == {"e0", "e1", "e2", "e3"}
    assert joined["offset"].to_pylist() == [0, 1, 2, 3] and joined["served_error"].to_pylist() == [0, 1, 0, 1]
    assert joined["x"].to_pylist() == [0.0, 1.0, 2.0, 3.0]
    # a repeated label is never learned twice
    again = log.join(["e1"], [1], np.array([1]))
    assert again.duplicate == ["e1"] and not again.joined
    assert log.stats()["online"]["all"] == 0.5 and log.stats()["awaiting_label"] == 6
    # late: the prediction is older than the retention window
    clock.t += 100.0
    late = log.join(["e5"], [1], np.array([1]))
    assert late.late == ["e5"] and not late.joined and log.stats()["late"] == 1


def test_take_hands_out_offsets_in_order_and_restart_resumes_at_the_checkpoint(tmp_path) -> None:
    clock = Clock()
    log = EventLog(uri=str(tmp_path), clock=clock)
    log.add(answered(30, at=clock.t))
    log.join([f"e{i}" for i in range(20)], [0] * 20, np.zeros(20, np.int64))
    log.add_labeled(pa.table({"x": [100.0, 101.0], "c": ["b", "b"]}), [1, 1], np.array([1, 1]), ["L1", "L2"])
    start, end, rows = log.take(15)
    assert (start, end, rows["offset"].to_pylist()) == (0, 15, list(range(15)))
    start, end, rows = log.take(50)
    assert (start, end) == (15, 22) and rows["event_id"].to_pylist()[-2:] == ["L1", "L2"]
    assert log.take(5)[2].num_rows == 0

    # a restart: the trainer's checkpoint says offsets < 15 were learned
    again = EventLog(uri=str(tmp_path), clock=clock)
    again.restore()
    assert again.next_offset == 22 and again.stats()["awaiting_label"] == 10
    again.resume_at(15)
    start, end, rows = again.take(100)
    assert (start, end, rows["offset"].to_pylist()) == (15, 22, list(range(15, 22)))
    # labels for predictions logged before the restart still join; joined ones stay joined
    r = again.join(["e25", "e3", "L1"], [1, 0, 1], np.array([1, 0, 1]))
    assert r.joined == ["e25"] and r.duplicate == ["e3", "L1"] and r.first_offset == 22


def test_generated_event_ids_are_unique() -> None:
    ids = new_event_ids(10_000)
    assert len(set(ids)) == 10_000 and all(len(i) == 32 for i in ids)


def test_a_regressions_error_is_the_squared_error_of_the_served_outputs(tmp_path) -> None:
    log = EventLog(uri=str(tmp_path), task="regression", clock=Clock())
    log.add(
        AnsweredRows(
            event_ids=["a", "b"],
            features=pa.table({"x": [1.0, 2.0]}),
            predictions=np.array([[1.0, 0.0], [2.0, 2.0]], np.float32),
            probabilities=None,
            model_version=3,
            predicted_at_s=1_000.0,
            replica="r",
        )
    )
    r = log.join(["a", "b"], [[1.0, 2.0], [2.0, 2.0]], np.array([[1.0, 2.0], [2.0, 2.0]]))
    assert r.joined == ["a", "b"]
    joined = pq.read_table(tmp_path / "joined")
    assert joined["served_error"].to_pylist() == [2.0, 0.0]  # mean over outputs of (0^2 + 2^2), then 0
    assert log.stats()["online"] == {"metric": "mse", "all": 1.0, "recent": 1.0, "recent_rows": 2}


def test_the_log_lives_on_any_pyarrow_filesystem_and_restores_from_it(s3) -> None:
    clock = Clock()
    uri = "s3://ddn-test/service-log"
    log = EventLog(uri=uri, clock=clock)
    log.add(answered(6, at=clock.t))
    assert log.join(["e1", "e2"], [1, 0], np.array([1, 0])).joined == ["e1", "e2"]
    log.flush()
    assert sorted(
        i.base_name
        for i in s3.get_file_info(pafs.FileSelector("ddn-test/service-log", recursive=True))
        if i.type == pafs.FileType.File
    ) == ["part-00000000.parquet", "part-000000000000-000000000001.parquet"]
    again = EventLog(uri=uri, clock=clock)
    again.restore()
    assert again.next_offset == 2 and again.stats()["awaiting_label"] == 4
    assert again.join(["e1", "e3"], [1, 1], np.array([1, 1])).joined == ["e3"]
