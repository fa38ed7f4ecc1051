"""Reptile meta-initialisation and the distilled student: in the learner, its checkpoint state and the controller's
choice of what to serve. No Ray."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
import torch

from ddn_ray import config, distill, models
from ddn_ray.controller import Controller
from ddn_ray.learner import OnlineLearner
from ddn_ray.policy import Decision
from ddn_ray.train import build_learner


def _cfg(**sections: Any) -> config.JobConfig:
    base = {
        "model": {"hidden_sizes": [16]},
        "train": {"lr": 0.01, "epochs_per_window": 2},
        "drift": {"detector": "none"},
        "policy": {"name": "none"},
    }
    return config.load(None, {**base, **sections})


def _learner(cfg: config.JobConfig) -> OnlineLearner:
    return build_learner(cfg, models.build(cfg.model, 4, 2, seed=0), ["a", "b", "c", "d"], 2)


def _window(w: int, flip: bool = False, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(w)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, 1 - y if flip else y


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_reptile_moves_the_meta_init_towards_each_windows_adapted_weights() -> None:
    learner = _learner(_cfg(meta={"init": "reptile", "outer_lr": 0.5, "inner_steps": 3}))
    assert learner.reptile is not None
    phi0 = {k: v.clone() for k, v in learner.reptile.init.items()}
    learner.step(0, 0, 40, *_window(0))
    phi1 = learner.reptile.init
    assert any(not torch.equal(phi0[k], phi1[k]) for k in phi0)
    assert learner.reptile.updates == 1
    # phi is not the learner's weights: it took 3 SGD steps, the learner 2 epochs of Adam
    assert any(not torch.equal(phi1[k], v) for k, v in learner.raw.state_dict().items())


def test_a_reset_starts_from_the_meta_init_and_a_fresh_learner_from_fresh_weights() -> None:
    for init in ("reptile", "fresh"):
        learner = _learner(_cfg(meta={"init": init, "inner_steps": 2}, policy={"name": "reset", "retrain_epochs": 1}))
        for w in range(3):
            learner.step(w, 40 * w, 40 * w + 40, *_window(w))
        learner.recent.clear()  # no rows to retrain on after the reset: the weights stay where it started
        learner.recent.append((torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)))
        expected = (
            {k: v.clone() for k, v in learner.reptile.init.items()}
            if learner.reptile is not None
            else _state(learner.fresh(1))
        )
        learner.apply(Decision.RESET)
        assert all(torch.equal(v, expected[k]) for k, v in learner.raw.state_dict().items()), init


def test_a_checkpoint_round_trips_the_meta_init_and_the_student() -> None:
    cfg = _cfg(meta={"init": "reptile"}, distill={"student": {"hidden_sizes": [4]}, "every_windows": 1})
    learner = _learner(cfg)
    for w in range(2):
        learner.step(w, 40 * w, 40 * w + 40, *_window(w))
    blob = io.BytesIO()
    torch.save(learner.state_dict(), blob)  # as train.py's checkpoint saves it
    blob.seek(0)
    restored = _learner(cfg)
    restored.load_state_dict(torch.load(blob, weights_only=False))
    assert restored.reptile is not None and learner.reptile is not None
    assert all(torch.equal(restored.reptile.init[k], v) for k, v in learner.reptile.init.items())
    assert restored.reptile.updates == 2
    assert restored.distiller is not None and learner.distiller is not None
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            restored.distiller.student.state_dict().values(), learner.distiller.student.state_dict().values()
        )
    )
    # the restored learner continues exactly as the original: the next meta-update is the same
    x, y = _window(2)
    learner.reptile.update(x, y)
    restored.reptile.update(x, y)
    assert all(torch.equal(restored.reptile.init[k], v) for k, v in learner.reptile.init.items())


def test_the_student_learns_from_the_teacher_and_is_scored_before_each_window() -> None:
    cfg = _cfg(distill={"student": {"hidden_sizes": [8]}, "every_windows": 2, "epochs": 5})
    learner = _learner(cfg)
    scores = []
    for w in range(12):
        m, _ = learner.step(w, 40 * w, 40 * w + 40, *_window(w))
        scores.append(m.student_pre_accuracy)
    assert learner.distiller is not None and learner.distiller.distillations == 6
    assert all(0 <= s <= 1 for s in scores)
    assert np.mean(scores[-4:]) > np.mean(scores[:2]) + 0.15, scores
    # without a student the metric is NaN
    plain = _learner(_cfg())
    assert math.isnan(plain.step(0, 0, 40, *_window(0))[0].student_pre_accuracy)


def test_the_distillation_loss_is_hintons() -> None:
    s, t, y = torch.randn(5, 3), torch.randn(5, 3), torch.randint(0, 3, (5,))
    T, a = 3.0, 0.25
    p = torch.softmax(t / T, 1)
    kl = (p * (torch.log(p) - torch.log_softmax(s / T, 1))).sum(1).mean()
    expected = a * T**2 * kl + (1 - a) * torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distill.distillation_loss(s, t, y, T, a), expected, atol=1e-6)


def _weights(width: int, value: float = 0.1) -> dict[str, np.ndarray]:
    return {"w": np.full((2, width), value, np.float32)}


def test_the_controller_serves_the_student_only_within_the_margin() -> None:
    c = Controller(student_margin=0.02)
    c.publish(_weights(8))
    cases = [
        (0.90, 0.89, "student"),  # 1 point behind: within 2
        (0.90, 0.88, "student"),  # exactly the margin
        (0.90, 0.80, "teacher"),  # fell behind: the teacher takes over
        (0.85, 0.86, "student"),  # ahead
        (math.nan, 0.9, "teacher"),  # nothing measured: the teacher
    ]
    for teacher_acc, student_acc, expected in cases:
        meta = {"teacher_accuracy": teacher_acc, "student_accuracy": student_acc}
        result = c.publish(_weights(8, 0.2), meta, student=_weights(3, 0.3))
        assert result["accepted"]
        rec = c.record(result["version"])
        assert rec.meta["served_model"] == expected, (teacher_acc, student_acc)
        version, ref = c.served_handle()
        served_width = ref["w"].shape[1]
        assert served_width == (3 if expected == "student" else 8)
        assert c.weights(version)[1]["w"].shape[1] == 8  # the trainer always gets the teacher back


def test_a_non_finite_student_is_never_served_and_the_teacher_version_still_lands() -> None:
    c = Controller(student_margin=0.5)
    c.publish(_weights(8))
    result = c.publish(
        _weights(8), {"teacher_accuracy": 0.9, "student_accuracy": 0.9}, student=_weights(3, float("nan"))
    )
    assert result["accepted"]
    rec = c.record(result["version"])
    assert rec.meta["served_model"] == "teacher" and rec.meta["student_gate"] == "reject_non_finite"


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ({"distill": {"student": {"exits": [0], "hidden_sizes": [8, 8]}}}, "without early exits"),
        ({"meta": {"outer_lr": 0}}, "greater than 0"),
        ({"distill": {"margin": 2}}, "less than or equal to 1"),
    ],
)
def test_bad_meta_and_distill_settings_are_refused(sections: dict[str, Any], needle: str) -> None:
    with pytest.raises(config.ConfigError, match=needle):
        config.load(None, sections)
