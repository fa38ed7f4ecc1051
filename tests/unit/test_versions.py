"""The controller's journal: a restarted controller restores every version, weight and record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from fsspec.implementations.local import LocalFileSystem as FsspecLocal
from pyarrow.fs import FSSpecHandler, PyFileSystem

from ddn_ray.controller import Controller
from ddn_ray.versions import JOURNAL, VersionStore
from tests.unit.test_controller import Clock, w


def busy_controller(store: VersionStore, clock: Clock) -> Controller:
    """Every kind of change the journal records: versions with preprocessing and a student, acknowledgements,
    a rejection, trainer starts and windows with drift decisions, a rollback, a dead replica."""
    c = Controller(clock=clock, journal=store)
    c.set_spec({"model": {"name": "mlp"}, "num_features": 3, "num_classes": 2})
    for r in ("r1", "r2"):
        c.replica_seen(r)
    c.publish(w(0.0), {"window": -1, "trained_end_offset": 0}, {"mean": [0.5, float("nan")]})
    clock.t += 0.01
    c.ack("r1", 0)
    c.ack("r2", 0)
    c.trainer_ready(0, 0, 0, None, pid=11)
    c.trainer_progress({"index": 0, "generation": 0, "pre_accuracy": float("nan"), "events": [{"decision": "keep"}]})
    meta = {"window": 0, "parent": 0, "generation": 0, "teacher_accuracy": 0.9, "student_accuracy": 0.89}
    c.publish(w(1.0), meta, {"mean": [1.0]}, student={"s": np.ones(4, np.float32)})
    clock.t += 0.02
    c.ack("r1", 1)
    c.publish(w(float("nan")), {"window": 1, "parent": 1, "generation": 0})  # rejected
    c.trainer_ready(50, 1, 1, None, pid=12)  # a restarted worker group
    c.rollback(0)
    c.replica_gone("r2")
    # a window's progress recorded with its version, in the same call (the train loop's publish)
    c.publish(w(3.0), {"window": 2, "parent": 2, "generation": 1}, progress={"index": 2, "generation": 1, "events": []})
    return c


def test_a_restored_controller_has_every_version_weight_and_record(tmp_path: Path) -> None:
    clock = Clock()
    before = busy_controller(VersionStore(uri=str(tmp_path)), clock)
    old = before.summary()
    clock.t += 1.0
    after = Controller(clock=clock, journal=VersionStore(uri=str(tmp_path)))
    assert after.restore() > 10
    new = after.summary()
    # every record as it was, but no replica counts as live until it polls the restored controller
    same = lambda s: json.dumps({k: v for k, v in s.items() if k not in ("controller_restarts", "replica_versions")})
    assert same(new) == same(old)  # NaN included
    assert old["replica_versions"] == {"r1": 1} and new["replica_versions"] == {}
    assert [v["version"] for v in new["versions"]] == [0, 1, 2, 3] and new["rollbacks"] == [
        {"version": 2, "rollback_to": 0}
    ]
    assert new["rejected"][0]["decision"] == "reject_non_finite" and new["replicas_gone"] == ["r2"]
    assert new["trainer"]["generation"] == 1 and new["trainer_restarts"][0]["generation"] == 1
    assert new["decisions"] == [{"decision": "keep"}] and np.isnan(new["progress"][0]["pre_accuracy"])
    assert after.spec == before.spec and after.preprocessing(1) == {"mean": [1.0]}
    assert np.isnan(after.preprocessing(0)["mean"][1])
    for v in range(4):  # weights load from their files, the served student too
        np.testing.assert_array_equal(after.weights(v)[1]["a"], before.weights(v)[1]["a"])
    assert before.record(1).meta["served_model"] == "student"
    np.testing.assert_array_equal(after.served_handle(1)[1]["s"], np.ones(4, np.float32))
    np.testing.assert_array_equal(after.weights(2)[1]["a"], w(0.0)["a"])  # the rollback serves version 0
    # a replica re-attaches with the version it serves: freshness counts it from then on
    assert not after.all_serving(3)
    clock.t += 0.7
    after.replica_seen("r1", serving=3)
    assert after.all_serving(3) and after.restarts[0]["reattached_s"] == {"r1": pytest.approx(0.7)}
    assert after.publish(w(4.0), {"window": 3, "parent": 3})["version"] == 4


def test_a_second_restart_keeps_the_first_ones_record(tmp_path: Path) -> None:
    clock = Clock()
    busy_controller(VersionStore(uri=str(tmp_path)), clock)
    first = Controller(clock=clock, journal=VersionStore(uri=str(tmp_path)))
    first.restore()
    clock.t += 1.5
    first.replica_seen("r1", serving=3)
    second = Controller(clock=clock, journal=VersionStore(uri=str(tmp_path)))
    second.restore()
    assert [r["reattached_s"] for r in second.restarts] == [{"r1": pytest.approx(1.5)}, {}]
    assert second.latest_version == 3


def test_retried_calls_are_recorded_once(tmp_path: Path) -> None:
    """Ray runs a call in flight again on the restarted controller (max_task_retries): each is recognised."""
    c = Controller(journal=VersionStore(uri=str(tmp_path)))
    c.publish(w())
    meta = {"window": 0, "parent": 0, "generation": 0, "trained_end_offset": 50}
    assert c.publish(w(1.0), meta)["version"] == 1
    assert c.publish(w(1.0), meta) == {"accepted": True, "version": 1, "decision": "accept"}
    assert c.publish(w(1.0), {**meta, "generation": 1})["version"] == 2  # a restarted worker group's: new
    assert c.trainer_ready(0, 0, 0, pid=7) == 0 and c.trainer_ready(0, 0, 0, pid=7) == 0
    assert c.trainer_restarts == [] and c.trainer_ready(0, 0, 0, pid=8) == 1
    for _ in range(2):
        c.trainer_progress({"index": 0, "generation": 1})
    assert len(c.progress) == 1
    again = Controller(journal=VersionStore(uri=str(tmp_path)))
    again.restore()
    assert len(again.records) == 3 and len(again.progress) == 1 and again.trainer["generation"] == 1


def test_weights_files_of_dropped_versions_are_deleted(tmp_path: Path) -> None:
    c = Controller(keep_versions=2, journal=VersionStore(uri=str(tmp_path)))
    for i in range(3):
        c.publish(w(float(i)))
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["v00000001.npz", "v00000002.npz"]
    c.rollback(1)  # version 3 serves version 1's file: it stays while version 3 is kept
    c.publish(w(9.0), {"parent": 3})
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["v00000001.npz", "v00000004.npz"]
    again = Controller(keep_versions=2, journal=VersionStore(uri=str(tmp_path)))
    again.restore()
    np.testing.assert_array_equal(again.weights(3)[1]["a"], w(1.0)["a"])
    with pytest.raises(KeyError):
        again.weights(2)


def test_a_line_torn_by_a_crash_is_dropped_and_the_next_starts_clean(tmp_path: Path) -> None:
    c = Controller(journal=VersionStore(uri=str(tmp_path)))
    c.publish(w())
    with open(tmp_path / JOURNAL, "ab") as f:
        f.write(b'{"op":"ack","replica":"r1","ver')  # the process died mid-write
    c2 = Controller(journal=VersionStore(uri=str(tmp_path)))
    c2.restore()
    c2.publish(w(1.0))
    c3 = Controller(journal=VersionStore(uri=str(tmp_path)))
    c3.restore()
    assert [r.version for r in c3.records] == [0, 1] and not c3.replica_versions()


class NoAppend(FSSpecHandler):
    """An object store's semantics on a local directory: files are written whole, never appended to."""

    def open_append_stream(self, path: str, metadata: dict | None = None) -> None:  # type: ignore[override]
        raise NotImplementedError("append")


def test_a_filesystem_that_cannot_append_gets_one_object_per_line(tmp_path: Path) -> None:
    fs = PyFileSystem(NoAppend(FsspecLocal()))
    with pytest.raises(NotImplementedError):
        fs.open_append_stream(str(tmp_path / "x"))
    c = Controller(journal=VersionStore(uri=str(tmp_path), filesystem=fs))
    c.publish(w(1.0))
    c.ack("r1", 0)
    c.wait_durable()  # an ack is journaled without a wait: its line may still be queued
    assert not (tmp_path / JOURNAL).exists() and len(list((tmp_path / "journal").glob("*.json"))) == 2
    again = Controller(journal=VersionStore(uri=str(tmp_path), filesystem=fs))
    assert again.restore() == 2
    again.publish(w(2.0))
    assert len(list((tmp_path / "journal").glob("*.json"))) == 4  # the restore marker, the new version
    np.testing.assert_array_equal(again.weights(0)[1]["a"], w(1.0)["a"])
    assert isinstance(pafs.LocalFileSystem(), pafs.FileSystem)


def test_only_the_newest_versions_stay_in_memory_and_older_ones_read_back_from_their_files(tmp_path: Path) -> None:
    c = Controller(journal=VersionStore(uri=str(tmp_path)), memory_versions=2, keep_versions=4)
    for i in range(6):
        c.publish(w(float(i)))
    assert sorted(c._weights) == [4, 5]  # the object store holds two; versions 2 and 3 are on file only
    assert c.weights(2)[1]["a"][0, 0] == 2.0 and c.weights(3)[1]["a"][0, 0] == 3.0
    with pytest.raises(KeyError):
        c.weights(1)  # out of keep_versions: its file is gone too
    assert c.rollback(2)["version"] == 6 and c.weights(6)[1]["a"][0, 0] == 2.0
    memory_only = Controller(memory_versions=2)  # no journal: nothing else holds them
    for i in range(6):
        memory_only.publish(w(float(i)))
    assert memory_only.weights(0)[1]["a"][0, 0] == 0.0


def test_a_hold_delays_the_writes_queued_after_it_until_set_or_timed_out(tmp_path: Path) -> None:
    import threading
    import time

    store = VersionStore(uri=str(tmp_path))
    loaded = threading.Event()
    store.hold(loaded, timeout_s=30.0)
    first = store.submit("first", weights=[("v1.npz", w(1.0))])
    time.sleep(0.2)
    assert not first.done() and not (tmp_path / "v1.npz").exists()
    loaded.set()
    first.result(timeout=5)
    store.hold(threading.Event(), timeout_s=0.1)  # never set: the writer goes on after 0.1 s
    store.submit("second").result(timeout=5)
    assert [e["op"] for e in store.events()] == ["first", "second"] and (tmp_path / "v1.npz").exists()


def test_a_held_publish_writes_its_file_once_released_and_a_rejected_one_holds_nothing(tmp_path: Path) -> None:
    import threading
    import time

    c = Controller(journal=VersionStore(uri=str(tmp_path)))
    c.publish(w(0.0))
    never = threading.Event()
    t0 = time.monotonic()
    assert not c.publish(w(np.nan), {"window": 0}, durable=False, write_after=never)["accepted"]
    c.wait_durable()  # the rejection's line is not behind a hold
    assert time.monotonic() - t0 < 0.5
    loaded = threading.Event()
    assert c.publish(w(1.0), {"window": 1}, durable=False, write_after=loaded)["version"] == 1
    time.sleep(0.2)
    assert c.pending is not None and not c.pending.done() and not (tmp_path / "v00000001.npz").exists()
    loaded.set()
    c.wait_durable()
    assert (tmp_path / "v00000001.npz").exists()
