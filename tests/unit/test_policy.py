"""Policies through one contract; the drift monitor's signals; the learner acting on each decision."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ddn_ray import config, drift, models, policy
from ddn_ray.drift import DriftSignal
from ddn_ray.learner import OnlineLearner
from ddn_ray.policy import Decision

MODES = ["level", "head", "all", "reset", "none"]


def _signal(window: int, before: float, recent: float, moved: tuple[str, ...] = ()) -> DriftSignal:
    return DriftSignal(window, window * 50, "Trigger", before, recent, moved)


@pytest.mark.parametrize("mode", MODES)
def test_contract_cooldown_and_state(mode: str) -> None:
    p = policy.LevelPolicy(mode, cooldown_windows=5, reset_error_increase=0.15)
    assert isinstance(p, policy.Policy)
    first = p.decide(_signal(10, 0.1, 0.5))
    assert isinstance(first, Decision) and p.reason
    assert first is (Decision.NOOP if mode == "none" else Decision.RESET if mode == "level" else Decision(mode))
    # within the cooldown every mode does nothing, and says why
    assert p.decide(_signal(12, 0.1, 0.5)) is Decision.NOOP
    assert mode == "none" or "cooldown" in p.reason
    clone = policy.LevelPolicy(mode, cooldown_windows=5, reset_error_increase=0.15)
    clone.load_state_dict(copy.deepcopy(p.state_dict()))
    for w in (14, 15, 30):
        assert clone.decide(_signal(w, 0.1, 0.5)) is p.decide(_signal(w, 0.1, 0.5))


@pytest.mark.parametrize(
    ("before", "recent", "moved", "expected"),
    [
        (0.2, 0.21, (), Decision.NOOP),  # below min_error_increase: a false alarm
        (0.3, 0.2, ("x1",), Decision.NOOP),  # the model got better
        (0.2, 0.3, (), Decision.HEAD),  # same inputs, worse answers: a new labelling
        (0.2, 0.3, ("x1",), Decision.ALL),  # the inputs moved too
        (0.1, 0.3, ("x1",), Decision.RESET),  # a severe rise
    ],
)
def test_level_rules(before: float, recent: float, moved: tuple[str, ...], expected: Decision) -> None:
    p = policy.LevelPolicy("level", cooldown_windows=0, min_error_increase=0.02, reset_error_increase=0.15)
    assert p.decide(_signal(3, before, recent, moved)) is expected


def test_bad_policy_arguments() -> None:
    with pytest.raises(ValueError, match="unknown policy mode"):
        policy.LevelPolicy("sometimes")
    with pytest.raises(ValueError, match="reset_error_increase"):
        policy.LevelPolicy(min_error_increase=0.2, reset_error_increase=0.1)


def _windows(n_windows: int, shift_at: int, rows: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    for w in range(n_windows):
        x = rng.normal(0, 1, (rows, 3)).astype(np.float32)
        if w >= shift_at:
            x[:, 1] += 3.0  # only feature x1 moves
        yield w, x


def test_monitor_signal_describes_the_change() -> None:
    mon = drift.Monitor(
        drift.Trigger([6 * 50 + 7]), reference_windows=2, mmd_permutations=50, feature_names=["a", "b", "c"]
    )
    signals = []
    for w, x in _windows(8, shift_at=6):
        wrong = np.full(50, 0.5 if w >= 6 else 0.1)
        s = mon.update(w, w * 50, wrong, x, embed=lambda z: z)
        signals += [s] if s is not None else []
    (s,) = signals
    assert (s.window, s.offset, s.detector) == (6, 307, "Trigger")
    # reference half = windows 3-4 (error 0.1), current half = windows 5-6 (0.1 and 0.5)
    assert s.error_before == pytest.approx(0.1) and s.error_recent == pytest.approx(0.3)
    assert s.features_moved == ("b",) and s.mean_shift["b"] == pytest.approx(1.5, abs=0.4)
    assert s.mmd_p_value is not None and s.mmd_p_value < 0.05
    assert set(s.to_dict()) >= {"window", "offset", "detector", "features_moved", "ks_statistic", "mmd_p_value"}


def test_monitor_state_round_trip() -> None:
    a = drift.Monitor(drift.ADWIN(), reference_windows=2, mmd_permutations=0)
    b = drift.Monitor(drift.ADWIN(), reference_windows=2, mmd_permutations=0)
    rng = np.random.default_rng(1)
    errs = [(rng.random(50) < (0.1 if w < 10 else 0.6)).astype(float) for w in range(20)]
    xs = [rng.normal(size=(50, 2)).astype(np.float32) for _ in range(20)]
    for w in range(8):
        a.update(w, w * 50, errs[w], xs[w])
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    out_a = [a.update(w, w * 50, errs[w], xs[w]) for w in range(8, 20)]
    out_b = [b.update(w, w * 50, errs[w], xs[w]) for w in range(8, 20)]
    assert [s and s.to_dict() for s in out_a] == [s and s.to_dict() for s in out_b]
    assert any(s is not None for s in out_a)  # ADWIN sees the jump from 10% to 60% errors


def _learner(policy_name: str, strategy_name: str = "finetune", trigger_at: tuple[int, ...] = ()) -> OnlineLearner:
    cfg = config.load(
        overrides={
            "model": {"hidden_sizes": [8]},
            "train": {"lr": 0.01, "epochs_per_window": 2},
            "strategy": {"name": strategy_name, "memory_size": 30},
            "drift": {"detector": "adwin", "mmd_permutations": 0},
            "policy": {"name": policy_name, "cooldown_windows": 0, "recent_windows": 2, "retrain_epochs": 2},
        }
    )
    model = models.build(cfg.model, 3, 2, seed=0)
    learner = OnlineLearner(
        model, lambda k: models.build(cfg.model, 3, 2, seed=1000 * k), cfg.train, cfg.strategy, cfg.drift, cfg.policy
    )
    learner.monitor.detector = drift.Trigger(trigger_at)
    return learner


def _xy(w: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(w)
    x = torch.randn(20, 3, generator=g)
    return x, (x[:, 0] > 0).long() if w < 4 else (x[:, 0] <= 0).long()  # the labelling flips at window 4


def _params(learner: OnlineLearner, part: str) -> list[torch.Tensor]:
    return [p.detach().clone() for p in getattr(learner.raw, part).parameters()]


@pytest.mark.parametrize("mode", ["head", "all", "reset", "none"])
def test_learner_applies_each_decision(mode: str) -> None:
    learner = _learner(mode, "replay", trigger_at=(4 * 20 + 3,))
    for w in range(4):
        assert learner.step(w, w * 20, w * 20 + 20, *_xy(w))[1] is None
    body = _params(learner, "body")
    metrics, event = learner.step(4, 80, 100, *_xy(4))
    assert event is not None and event["window"] == 4 and event["offset"] == 83
    assert event["decision"] == ("no-op" if mode == "none" else mode) and event["reason"]
    body_changed = any(not torch.equal(a, b) for a, b in zip(body, _params(learner, "body")))
    assert body_changed  # the regular step trains everything, whatever the decision
    if mode == "reset":
        assert learner.num_resets == 1
        assert len(learner.strategy.y) == 30  # the replay memory survives a reset
    assert metrics.index == 4 and 0.0 <= metrics.pre_accuracy <= 1.0


def test_head_decision_moves_only_the_head() -> None:
    learner = _learner("head")
    for w in range(3):
        learner.step(w, w * 20, w * 20 + 20, *_xy(w))
    body, head = _params(learner, "body"), _params(learner, "head")
    learner.apply(Decision.HEAD)
    assert all(torch.equal(a, b) for a, b in zip(body, _params(learner, "body")))
    assert any(not torch.equal(a, b) for a, b in zip(head, _params(learner, "head")))


def test_reset_starts_from_fresh_weights_and_all_resets_the_optimizer() -> None:
    learner = _learner("reset")
    for w in range(3):
        learner.step(w, w * 20, w * 20 + 20, *_xy(w))
    assert learner.optimizer.state  # Adam moments from the old windows
    learner.policy_cfg = learner.policy_cfg.model_copy(update={"retrain_epochs": 1})
    before = _params(learner, "body")
    learner.apply(Decision.RESET)
    fresh = models.build(config.ModelConfig(hidden_sizes=(8,)), 3, 2, seed=1000)
    # one retraining epoch moved it, but it is near the fresh init, far from the old weights
    dist_fresh = sum(float((a - b).detach().norm()) for a, b in zip(_params(learner, "body"), fresh.body.parameters()))
    dist_old = sum(float((a - b).norm()) for a, b in zip(_params(learner, "body"), before))
    assert dist_fresh < dist_old
    learner.step(3, 60, 80, *_xy(3))
    assert learner.optimizer.state
    learner.apply(Decision.ALL)
    assert learner.optimizer.state == {}  # a new optimizer: no Adam moments carried over the drift


def test_rollback_restores_weights_and_learner_state_round_trips() -> None:
    learner = _learner("level", "online_ewc+replay")
    for w in range(3):
        learner.step(w, w * 20, w * 20 + 20, *_xy(w))
    good = models.state_to_numpy(learner.raw)  # the served version, as the controller holds it
    with torch.no_grad():
        for p in learner.raw.parameters():
            p.fill_(float("nan"))
    event = learner.rollback(good, 2, "gate rejected")
    assert event["decision"] == "rollback"
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(good.values(), learner.raw.state_dict().values()))
    # a learner restored from (weights, state_dict) continues exactly as the original
    twin = _learner("level", "online_ewc+replay")
    twin.raw.load_state_dict(copy.deepcopy(learner.raw.state_dict()))
    twin.load_state_dict(copy.deepcopy(learner.state_dict()))
    for w in range(3, 6):
        ma, _ = learner.step(w, w * 20, w * 20 + 20, *_xy(w))
        mb, _ = twin.step(w, w * 20, w * 20 + 20, *_xy(w))
        assert (ma.pre_loss, ma.train_loss) == (mb.pre_loss, mb.train_loss)
