from __future__ import annotations

import numpy as np
import pytest

from ddn_ray.controller import Controller, Gate, check_update


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def w(value: float = 0.0) -> dict[str, np.ndarray]:
    return {"a": np.full((2, 3), value, np.float32), "b": np.zeros(3, np.float32)}


def test_versions_are_strictly_increasing_and_weights_are_copied() -> None:
    c = Controller()
    src = w(1.0)
    assert [c.publish(src)["version"] for _ in range(3)] == [0, 1, 2]
    src["a"][:] = 9  # the controller owns its copy
    assert c.weights(1)[1]["a"][0, 0] == 1.0
    assert c.latest_version == 2 and [r.parent for r in c.records] == [None, 0, 1]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_update_is_rejected_and_served_version_stays(bad: float) -> None:
    c = Controller()
    c.publish(w(1.0))
    result = c.publish(w(bad))
    assert result == {"accepted": False, "version": 0, "decision": Gate.REJECT_NON_FINITE.value}
    assert c.latest_version == 0 and c.weights()[1]["a"][0, 0] == 1.0
    assert c.rejected[0]["decision"] == "reject_non_finite"


def test_shape_or_key_change_is_rejected() -> None:
    assert check_update({"a": np.zeros(2)}, {"a": np.zeros(3)}) is Gate.REJECT_SHAPE
    assert check_update({"x": np.zeros(3)}, {"a": np.zeros(3)}) is Gate.REJECT_SHAPE
    assert check_update({"a": np.zeros(3)}, None) is Gate.ACCEPT
    assert check_update({"n": np.array([1, 2])}, None) is Gate.ACCEPT  # integer buffers are finite


def test_resumed_parent_continues_numbering_above_it() -> None:
    c = Controller()
    c.publish(w())  # v0 = fresh init of a restarted job
    assert c.publish(w(), {"parent": 41})["version"] == 42
    assert c.publish(w())["version"] == 43


def test_freshness_is_publish_to_every_expected_replica_serving() -> None:
    clock = Clock()
    c = Controller(clock=clock)
    c.replica_seen("r1")
    c.replica_seen("r2")
    c.publish(w())
    clock.t += 0.010
    c.ack("r1", 0)
    assert c.records[0].all_served_s is None and not c.all_serving(0)
    clock.t += 0.015
    c.ack("r2", 0)
    assert c.records[0].all_served_s == pytest.approx(0.025)
    assert c.all_serving(0)


def test_ack_of_newer_version_also_serves_skipped_ones() -> None:
    clock = Clock()
    c = Controller(clock=clock)
    c.replica_seen("r1")
    c.publish(w())
    clock.t += 1.0
    c.publish(w())
    clock.t += 0.5
    c.ack("r1", 1)  # replica jumped straight to v1
    assert c.records[0].served_s == {"r1": pytest.approx(1.5)}
    assert c.records[1].served_s == {"r1": pytest.approx(0.5)}


def test_silent_replicas_stop_being_expected() -> None:
    clock = Clock()
    c = Controller(clock=clock, replica_ttl_s=5.0)
    c.replica_seen("gone")
    clock.t += 6.0
    c.replica_seen("r1")
    c.publish(w())
    assert c.records[0].expected == {"r1"}
    c.ack("r1", 0)
    assert c.all_serving(0) and c.replica_versions() == {"r1": 0}


def test_a_dead_replica_stops_being_expected_at_once_and_freshness_counts_the_live_ones() -> None:
    clock = Clock()
    c = Controller(clock=clock, replica_ttl_s=30.0)
    for r in ("r1", "r2"):
        c.replica_seen(r)
    c.publish(w())
    clock.t += 0.010
    c.ack("r1", 0)
    assert c.lagging(0) == ["r2"] and not c.all_serving(0)
    c.replica_gone("r2")  # its actor died (SIGKILL): the stream does not wait replica_ttl_s for it
    assert c.all_serving(0) and c.lagging(0) == [] and c.records[0].expected == {"r1"}
    assert c.records[0].all_served_s == pytest.approx(0.010) and c.summary()["replicas_gone"] == ["r2"]
    c.replica_seen("r3")  # the replacement registers under its own id and is expected from the next version
    c.publish(w())
    assert c.records[1].expected == {"r1", "r3"} and c.lagging(1) == ["r1", "r3"]


def test_old_weights_are_evicted_but_records_kept() -> None:
    c = Controller(keep_versions=2)
    for _ in range(4):
        c.publish(w())
    with pytest.raises(KeyError, match="version 1 is not held"):
        c.handle(1)
    assert c.handle(3)[0] == 3 and len(c.records) == 4


def test_trainer_progress_and_summary_are_plain_data() -> None:
    c = Controller()
    assert c.windows_done == -1
    c.trainer_ready(300, 3, 7)
    c.trainer_progress({"index": 3, "num_rows": 100})
    s = c.summary()
    assert c.windows_done == 3 and s["trainer"] == {
        "next_offset": 300,
        "next_window": 3,
        "version": 7,
        "preprocessing": None,
    }
    assert s["progress"] == [{"index": 3, "num_rows": 100}] and s["decisions"] == []
    event = {"window": 4, "offset": 417, "detector": "ADWIN", "decision": "all", "reason": "error 0.1 -> 0.3"}
    c.trainer_progress({"index": 4, "num_rows": 100, "events": [event]})
    c.trainer_progress({"index": 5, "num_rows": 100, "events": []})
    s = c.summary()
    assert s["decisions"] == [event] and all("events" not in p for p in s["progress"])


def test_large_but_finite_float32_weights_are_accepted() -> None:
    big = {"a": np.full(1_000_000, np.finfo(np.float32).max, np.float32)}  # a float32 sum would overflow
    assert check_update(big, None) is Gate.ACCEPT
    big["a"][-1] = -np.inf
    assert check_update(big, None) is Gate.REJECT_NON_FINITE
    assert check_update({"d": np.array([1e308, 1e308])}, None) is Gate.ACCEPT


def test_the_head_may_grow_only_when_the_update_declares_more_classes() -> None:
    c = Controller()
    two = {"body.w": np.ones((4, 3)), "head.weight": np.ones((2, 4)), "head.bias": np.zeros(2)}
    three = {"body.w": np.ones((4, 3)), "head.weight": np.ones((3, 4)), "head.bias": np.zeros(3)}
    c.publish(two, {"num_classes": 2})
    assert c.publish(three, {"num_classes": 2})["decision"] == Gate.REJECT_SHAPE.value  # grown but undeclared
    assert c.publish(three, {"num_classes": 3})["accepted"]
    wider_body = {**three, "body.w": np.ones((4, 5))}
    assert check_update(wider_body, three, grow=True) is Gate.REJECT_SHAPE  # only the first dimension may grow
    assert check_update(two, three, grow=True) is Gate.REJECT_SHAPE  # never shrinks


def test_each_version_keeps_the_preprocessing_it_was_trained_with() -> None:
    c = Controller(keep_versions=2)
    for k in range(3):
        c.publish({"a": np.zeros(1)}, {}, {"rows_seen": 10 * k})
    assert c.preprocessing(2) == {"rows_seen": 20} and c.preprocessing(1) == {"rows_seen": 10}
    assert c.preprocessing(0) is None  # dropped with its weights
