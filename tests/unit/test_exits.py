"""Early exit (ddn_ray.exits): per-row exits by confidence, MACs from FlopCounterMode, the joint loss, and a
user's builder that declares its exits. No Ray."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ddn_ray import exits, models
from ddn_ray.config import ModelConfig, StrategyConfig, TrainConfig
from ddn_ray.errors import ConfigError
from ddn_ray.learner import fit, task_loss
from ddn_ray.strategy import Finetune


class TwoStage(exits.MultiExit):
    """A user's multi-exit model (the documented contract): two stages, one early exit."""

    def __init__(self, num_features: int, num_classes: int, cfg: Any) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Sequential(nn.Linear(num_features, 8), nn.ReLU()), nn.Linear(8, 8))
        self.exits = nn.ModuleList([nn.Linear(8, num_classes)])
        self.head = nn.Linear(8, num_classes)


def two_stage(num_features: int, num_classes: int, cfg: Any) -> nn.Module:
    return TwoStage(num_features, num_classes, cfg)


def _flops(module: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def _rigged() -> exits.MultiExitMLP:
    """An MLP with one early exit whose logits are chosen: row 0 is confident at exit 0, row 1 is not."""
    model = exits.MultiExitMLP(2, 2, (4, 4), exits=(0,)).eval()
    with torch.no_grad():
        first = model.body[0][0]
        first.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [0, 0], [0, 0]]))
        first.bias.zero_()
        gate = model.exits[0]
        gate.weight.copy_(torch.tensor([[10.0, 0, 0, 0], [0, 0, 0, 0]]))  # logit 0 = 10 * x0
        gate.bias.zero_()
    return model


def test_a_row_past_the_threshold_exits_early_and_one_below_goes_on() -> None:
    model = _rigged()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # row 0: softmax(10, 0) ~ 0.99995 at exit 0; row 1: (0.5, 0.5)
    logits, exit_of = exits.early_exit(model, x, threshold=0.9)
    assert exit_of.tolist() == [0, 1]
    full = exits.exit_outputs(model, x)
    assert torch.allclose(logits[0], full[0][0]) and torch.allclose(logits[1], full[1][1])
    # the same rows alone (a batch of one each) exit where they did in the batch
    assert exits.early_exit(model, x[:1], 0.9)[1].tolist() == [0]
    assert exits.early_exit(model, x[1:], 0.9)[1].tolist() == [1]
    # threshold 1 keeps every row to the head; a low threshold stops both at the first exit
    assert exits.early_exit(model, x, 1.0)[1].tolist() == [1, 1]
    assert exits.early_exit(model, x, 0.4)[1].tolist() == [0, 0]


def test_an_empty_batch_is_answered_with_no_rows() -> None:
    logits, exit_of = exits.early_exit(_rigged(), torch.zeros(0, 2), threshold=0.9)
    assert logits.shape == (0, 2) and exit_of.shape == (0,)


def test_the_entropy_criterion_exits_by_normalised_entropy() -> None:
    sure, unsure = torch.tensor([[12.0, 0.0]]), torch.tensor([[0.1, 0.0]])
    assert exits.confidence(sure, "entropy").item() > 0.99
    assert exits.confidence(unsure, "entropy").item() < 0.01
    model = _rigged()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert exits.early_exit(model, x, threshold=0.9, criterion="entropy")[1].tolist() == [0, 1]


def test_macs_per_exit_match_the_flop_counter_on_each_path() -> None:
    cfg = ModelConfig(hidden_sizes=(32, 16, 8), exits=(0, 1))
    model = models.build(cfg, 6, 3, seed=0).eval()
    costs = exits.exit_macs(model, 6)
    x = torch.zeros(1, 6)
    h0 = model.body[0](x)
    h1 = model.body[1](h0)
    assert costs[0] == (_flops(model.body[0], x) + _flops(model.exits[0], h0)) // 2 == 6 * 32 + 32 * 3
    assert costs[1] == (_flops(model.body[0], x) + _flops(model.body[1], h0) + _flops(model.exits[1], h1)) // 2
    assert costs[2] == _flops(model, x) // 2 == 6 * 32 + 32 * 16 + 16 * 8 + 8 * 3
    plain = models.build(ModelConfig(hidden_sizes=(32, 16, 8)), 6, 3, seed=0)
    assert exits.exit_macs(plain, 6) == (costs[2],)  # the same network answering from its last exit


def test_a_cnn_exit_after_the_first_block_costs_a_fraction_of_the_network() -> None:
    cfg = ModelConfig(kind="cnn", exits=(0,), hidden_sizes=(32,))
    model = models.build(cfg, 784, 10, seed=0)
    first, last = exits.exit_macs(model, 784)
    assert last == _flops(model.eval(), torch.zeros(1, 784)) // 2
    assert first < 0.2 * last


def test_the_last_exit_is_the_head_so_forward_keeps_the_builder_contract() -> None:
    model = models.build(ModelConfig(hidden_sizes=(16, 16), exits=(0,)), 5, 2, seed=1).eval()
    x = torch.randn(7, 5)
    assert torch.equal(model(x), models.head_of(model)(models.body_of(model)(x)))
    assert torch.equal(exits.exit_outputs(model, x)[-1], model(x))


def test_joint_training_lowers_every_exits_loss() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = models.build(ModelConfig(hidden_sizes=(16, 16), exits=(0,)), 4, 2, seed=0)
    with torch.no_grad():
        before = [float(nn.functional.cross_entropy(o, y)) for o in exits.exit_outputs(model.eval(), x)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    fit(model, opt, x, y, 32, 20, torch.Generator().manual_seed(0), Finetune())
    with torch.no_grad():
        after = [float(nn.functional.cross_entropy(o, y)) for o in exits.exit_outputs(model.eval(), x)]
    assert all(a < 0.5 * b for a, b in zip(after, before)), (before, after)
    assert model.exit_logits == []  # the forward's graph is not kept between steps


def test_the_joint_loss_is_the_weighted_mean_of_the_exits_losses() -> None:
    model = models.build(ModelConfig(hidden_sizes=(8, 8), exits=(0,), exit_loss_weights=(1.0, 3.0)), 3, 2, seed=0)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    model.train()
    out = model(x)
    early = model.exit_logits[0]
    expected = (nn.functional.cross_entropy(early, y) + 3 * nn.functional.cross_entropy(out, y)) / 4
    assert torch.allclose(task_loss(model, "classification", out, y), expected)


def test_a_users_builder_declares_its_exits() -> None:
    cfg = ModelConfig(builder="tests.unit.test_exits:two_stage")
    model = models.build(cfg, 3, 2, seed=0).eval()
    assert exits.num_exits(model) == 2
    costs = exits.exit_macs(model, 3)
    assert costs == (3 * 8 + 8 * 2, 3 * 8 + 8 * 8 + 8 * 2)
    _, exit_of = exits.early_exit(model, torch.randn(9, 3), threshold=1.0)
    assert exit_of.tolist() == [1] * 9


def test_a_broken_multi_exit_model_is_refused() -> None:
    model = TwoStage(3, 2, None)
    model.exits.append(nn.Linear(8, 2))  # two exits for two stages: the head would have no stage
    with pytest.raises(TypeError, match="len\\(exits\\) \\+ 1 stages"):
        exits.num_exits(model)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"exits": (1,)}, "to exit after"),  # (64, 64): only after layer 0
        ({"exits": (0, 0), "hidden_sizes": (8, 8, 8)}, "increasing"),
        ({"exits": (0,), "exit_loss_weights": (1.0,)}, "2 weights"),
        ({"exits": (0,), "task": "regression"}, "classification only"),
        ({"exits": (0,), "builder": "tests.unit.test_exits:two_stage"}, "declares its own"),
        ({"exit_threshold": 0.0}, "greater than 0"),
        ({"kind": "cnn", "exits": (2,)}, "conv blocks"),
    ],
)
def test_bad_exit_settings_are_refused_naming_the_field(fields: dict[str, Any], needle: str) -> None:
    from ddn_ray import config

    with pytest.raises(ConfigError, match=needle):
        config.load(None, {"model": fields})


def test_a_quantised_copy_answers_like_the_float_model_and_leaves_it_float() -> None:
    torch.manual_seed(0)
    model = models.build(ModelConfig(hidden_sizes=(64, 64), exits=(0,)), 8, 3, seed=0).eval()
    q = models.quantized(model)
    x = torch.randn(200, 8)
    assert isinstance(models.head_of(model), nn.Linear) and model.head.weight.dtype == torch.float32
    f_out, f_exit = exits.early_exit(model, x, 0.6)
    q_out, q_exit = exits.early_exit(q, x, 0.6)
    assert (f_out.argmax(1) == q_out.argmax(1)).float().mean() > 0.95
    assert (f_exit == q_exit).float().mean() > 0.95
    assert float((f_out - q_out).abs().max()) < 0.1


def test_strategies_train_a_multi_exit_model() -> None:
    from ddn_ray import strategy

    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    for name in ("online_ewc+replay", "lwf"):
        model = models.build(ModelConfig(hidden_sizes=(8, 8), exits=(0,)), 4, 2, seed=0)
        s = strategy.build(StrategyConfig(name=name), seed=0)
        cfg = TrainConfig()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        for _ in range(2):
            fit(model, opt, x, y, 16, 1, torch.Generator().manual_seed(0), s)
            s.after_window(model, x, y)
        assert np.isfinite([p.detach().sum().item() for p in model.parameters()]).all()
