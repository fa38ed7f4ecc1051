from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ddn_ray import config, models
from ddn_ray.learner import make_scheduler
from ddn_ray.train import make_optimizer, prequential_step


def _data(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 4, generator=g)
    return x, (x[:, 0] + x[:, 1] > 1.0).long()


def test_scores_before_learning_then_learns() -> None:
    cfg = config.load(overrides={"model": {"hidden_sizes": [16]}, "train": {"lr": 0.01}})
    model = models.build(cfg.model, 4, 2, seed=0)
    before = copy.deepcopy(model).eval()
    x, y = _data()
    opt = make_optimizer(cfg.train, model.parameters())
    n, pre_loss, pre_acc, _, _ = prequential_step(model, opt, x, y, 16, 20, torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = before(x)
    assert n == 200
    assert pre_loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert pre_acc == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    _, post_loss, post_acc, _, _ = prequential_step(model, opt, x, y, 16, 1, torch.Generator().manual_seed(1))
    assert post_loss < pre_loss and post_acc > 0.9


@pytest.mark.parametrize(
    "name,cls",
    [
        ("sgd", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_optimizer_by_name(name: str, cls: type) -> None:
    cfg = config.load(overrides={"train": {"optimizer": name, "lr": 0.5}})
    opt = make_optimizer(cfg.train, models.build(cfg.model, 3, 2).parameters())
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.5


def test_numpy_state_round_trip_on_read_only_arrays() -> None:
    cfg = config.load()
    a, b = models.build(cfg.model, 6, 2, seed=1), models.build(cfg.model, 6, 2, seed=2)
    state = models.state_to_numpy(a)
    for v in state.values():
        v.flags.writeable = False  # as arrays read from Ray's object store are
    models.load_numpy_state(b, state)
    x = torch.rand(5, 6)
    assert torch.equal(a(x), b(x))


def test_build_for_inference_aliases_read_only_weights_and_matches() -> None:
    cfg = config.load()
    trained = models.build(cfg.model, 6, 2, seed=3).eval()
    state = models.state_to_numpy(trained)
    for v in state.values():
        v.flags.writeable = False
    served = models.build_for_inference(cfg.model, 6, 2, state)
    x = torch.rand(4, 6)
    assert not served.training and torch.equal(served(x), trained(x))
    w = state["head.weight"]
    assert served.head.weight.data_ptr() == w.__array_interface__["data"][0]  # no copy


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", [1.0, 1.0, 1.0, 1.0, 1.0]),
        ("step", [1.0, 1.0, 0.5, 0.5, 0.25]),
        ("cosine", [1.0, 0.55, 0.1, 0.1, 0.1]),
    ],
)
def test_lr_schedules_per_window(schedule: str, expected: list[float]) -> None:
    cfg = config.TrainConfig(lr=1.0, lr_schedule=schedule, lr_period_windows=2, lr_gamma=0.5, lr_min_factor=0.1)
    opt = make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    sched = make_scheduler(cfg, opt)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(expected)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_optimizers_by_name(name: str) -> None:
    cfg = config.TrainConfig(optimizer=name, lr=0.05)
    opt = make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    assert type(opt).__name__.lower() == name and opt.param_groups[0]["lr"] == 0.05


@pytest.mark.parametrize("name", ["finetune", "online_ewc", "replay", "lwf"])
@pytest.mark.parametrize("window", [1, 7])
def test_no_prediction_uses_a_label_revealed_after_it(name: str, window: int) -> None:
    """DESIGN.md's no-leakage invariant: flipping labels from row k on changes no prediction up to row k."""
    import numpy as np

    from ddn_ray.stream import Table
    from ddn_ray.train import replay_in_process

    rng = np.random.default_rng(0)
    x = rng.normal(size=(140, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    k = 84
    flipped = y.copy()
    flipped[k:] = 1 - flipped[k:]
    cfg = config.load(
        overrides={
            "stream": {"window_size": window, "last_label_feature": True},
            "model": {"hidden_sizes": [8]},
            "train": {"epochs_per_window": 2},
            "strategy": {"name": name, "memory_size": 20},
            "drift": {"detector": "adwin", "params": {"delta": 0.5}, "mmd_permutations": 0},
            "policy": {"name": "all", "cooldown_windows": 0},
        }
    )
    a = replay_in_process(cfg, Table(x, y, ("a", "b", "c"), 2))
    b = replay_in_process(cfg, Table(x, flipped, ("a", "b", "c"), 2))
    first_window_with_k = k // window
    last_safe = (first_window_with_k + 1) * window  # rows of k's window are predicted before any of its labels
    assert np.array_equal(a.predictions[:last_safe], b.predictions[:last_safe])
    assert not np.array_equal(a.predictions, b.predictions)  # the flip does reach later predictions
    assert b.events  # the detector saw the flip and the policy acted on it
