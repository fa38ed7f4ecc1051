from __future__ import annotations

import numpy as np
import pytest

from ddn_ray.controller import Controller, Gate, QualityGate, check_quality, check_update


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


def test_a_replicas_next_poll_with_the_version_it_loaded_is_its_ack() -> None:
    """A replica polls again as soon as it loaded an offer, naming the version it serves: that is its ack (no call
    of its own). Its first poll only registers it, and a poll naming what the controller knew changes nothing."""
    clock = Clock()
    c = Controller(clock=clock)
    assert not c.polled("r1", None)  # a new replica: no version yet
    c.publish(w())
    clock.t += 0.010
    assert c.polled("r1", 0) and c.records[0].served_s == {"r1": pytest.approx(0.010)} and c.all_serving(0)
    clock.t += 5.0
    assert not c.polled("r1", 0)  # nothing new: the freshness stays what the first poll said
    assert c.records[0].served_s == {"r1": pytest.approx(0.010)}
    # a replica this controller never saw (every replica after a restore) polls with a version it served before:
    # it serves it, but when it loaded it is not known, so no freshness is recorded for it
    c.publish(w())
    assert not c.polled("r2", 1) and c.replica_versions() == {"r1": 0, "r2": 1}
    assert "r2" not in c.records[1].served_s and c.lagging(1) == ["r1"]


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
    assert c.trainer_ready(300, 3, 7, pid=4242, device={"device": "cpu", "gpu_ids": []}) == 0  # the first start
    c.trainer_progress({"index": 3, "num_rows": 100})
    s = c.summary()
    assert c.windows_done == 3 and s["trainer"] == {
        "next_offset": 300,
        "next_window": 3,
        "version": 7,
        "preprocessing": None,
        "generation": 0,
        "pid": 4242,
        "device": {"device": "cpu", "gpu_ids": []},
    }
    assert s["progress"] == [{"index": 3, "num_rows": 100}] and s["decisions"] == []
    event = {"window": 4, "offset": 417, "detector": "ADWIN", "decision": "all", "reason": "error 0.1 -> 0.3"}
    c.trainer_progress({"index": 4, "num_rows": 100, "events": [event]})
    c.trainer_progress({"index": 5, "num_rows": 100, "events": []})
    s = c.summary()
    assert s["decisions"] == [event] and all("events" not in p for p in s["progress"])


def test_a_publish_records_its_window_progress_only_when_accepted_and_once() -> None:
    c = Controller()
    c.publish(w(0.0))
    meta = {"window": 0, "parent": 0, "generation": 0, "trained_end_offset": 50}
    assert c.publish(w(1.0), meta, progress={"index": 0, "generation": 0, "events": [{"decision": "keep"}]})["accepted"]
    assert c.windows_done == 0 and c.latest_version == 1 and c.decisions == [{"decision": "keep"}]
    # the same call again (a restarted controller's retry): one version, one progress record
    assert c.publish(w(1.0), meta, progress={"index": 0, "generation": 0, "events": []})["version"] == 1
    assert len(c.records) == 2 and [p["index"] for p in c.progress] == [0]
    # a rejected update records no progress: the trainer reports the window after its reaction to the rejection
    bad = {"window": 1, "parent": 1, "generation": 0, "trained_end_offset": 100}
    assert not c.publish(w(np.nan), bad, progress={"index": 1, "generation": 0, "events": []})["accepted"]
    assert c.windows_done == 0


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


def test_the_quality_gate_rejects_an_update_whose_loss_exploded_or_accuracy_collapsed() -> None:
    gate = QualityGate(max_loss_ratio=10.0, max_accuracy_drop=0.25)
    ok = {"pre_loss": 0.5, "post_loss": 0.3, "pre_accuracy": 0.7, "post_accuracy": 0.8}
    assert check_quality(ok, gate) is Gate.ACCEPT
    assert check_quality({**ok, "post_loss": 5.1}, gate) is Gate.REJECT_LOSS_EXPLODED
    assert check_quality({**ok, "post_loss": float("nan")}, gate) is Gate.REJECT_LOSS_EXPLODED
    assert check_quality({**ok, "pre_loss": 0.0, "post_loss": 0.09}, gate) is Gate.ACCEPT  # floor 0.01
    assert check_quality({**ok, "post_accuracy": 0.44}, gate) is Gate.REJECT_ACCURACY_COLLAPSED
    assert check_quality({**ok, "post_accuracy": 0.46}, gate) is Gate.ACCEPT
    assert check_quality({**ok, "pre_accuracy": float("nan"), "post_accuracy": float("nan")}, gate) is Gate.ACCEPT
    assert check_quality({"window": 3}, gate) is Gate.ACCEPT  # a resume carries no scores
    assert check_quality({**ok, "post_loss": 99.0}, QualityGate(max_loss_ratio=None)) is Gate.ACCEPT
    c = Controller(quality=gate)
    c.publish(w(1.0))
    result = c.publish(w(2.0), {**ok, "post_accuracy": 0.1, "window": 4})
    assert result == {"accepted": False, "version": 0, "decision": "reject_accuracy_collapsed"}
    assert c.latest_version == 0 and c.rejected[0]["meta"]["window"] == 4


def test_a_rollback_serves_an_earlier_version_as_a_new_one_and_the_trainer_learns_on_from_it() -> None:
    c = Controller()
    for value in (1.0, 2.0, 3.0):
        c.publish(w(value), preprocessing={"mean": value})
    result = c.rollback(1)
    assert result == {"accepted": True, "version": 3, "decision": "rollback", "rollback_to": 1}
    assert c.weights()[1]["a"][0, 0] == 2.0 and c.preprocessing(3) == {"mean": 2.0}
    assert c.records[-1].parent == 1 and c.summary()["rollbacks"] == [{"version": 3, "rollback_to": 1}]
    # the trainer's next update was trained from version 2: superseded, so it reloads version 3
    assert c.publish(w(4.0), {"parent": 2})["decision"] == "reject_superseded"
    assert c.publish(w(5.0), {"parent": 3}) == {"accepted": True, "version": 4, "decision": "accept"}
    with pytest.raises(KeyError, match="version 9 is not held"):
        c.rollback(9)


def test_a_diverging_step_is_what_the_quality_gate_refuses() -> None:
    """A learner with an absurd learning rate: its post-update scores on the window trip the gate."""
    import torch

    from ddn_ray import config, models
    from ddn_ray.train import build_learner

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long()
    scores = {}
    for lr in (3e-3, 5.0):  # sgd at lr 5 diverges on this window with finite weights (loss 0.67 -> ~1,300)
        cfg = config.load(overrides={"train": {"lr": lr, "optimizer": "sgd", "epochs_per_window": 5}})
        learner = build_learner(cfg, models.build(cfg.model, 4, 2, seed=0), list("abcd"), 2)
        m, _ = learner.step(0, 0, 64, x, y)
        meta = {"pre_loss": m.pre_loss, "post_loss": m.post_loss, "pre_accuracy": m.pre_accuracy}
        scores[lr] = check_quality({**meta, "post_accuracy": m.post_accuracy}, QualityGate())
        assert m.post_loss == m.post_loss and 0.0 <= m.post_accuracy <= 1.0
    assert scores[3e-3] is Gate.ACCEPT and scores[5.0] is Gate.REJECT_LOSS_EXPLODED


def test_a_restarted_trainer_is_a_new_generation_and_says_where_it_resumed() -> None:
    c = Controller()
    c.trainer_ready(0, 0, 0)
    for i in range(8):
        c.trainer_progress({"index": i, "num_rows": 100})
    assert c.trainer_ready(500, 5, 4) == 1  # the worker group restarted from its checkpoint at window 5
    assert c.summary()["trainer_restarts"] == [{"generation": 1, "next_window": 5, "windows_done": 7}]
    c.trainer_progress({"index": 5, "num_rows": 100})
    assert c.windows_done == 5  # the stream waits for the windows trained again
