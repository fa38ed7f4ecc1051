"""Every strategy through one contract, plus golden values for each."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from ddn_ray import config, models, strategy
from ddn_ray.train import make_optimizer, prequential_step

NAMES = ["finetune", "replay", "ewc", "online_ewc", "lwf", "online_ewc+replay"]


def _window(seed: int, n: int = 40, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 4, generator=g) + shift
    return x, (x[:, 0] > x[:, 1]).long()


def _model() -> nn.Module:
    return models.build(config.ModelConfig(hidden_sizes=(8,)), 4, 2, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str) -> None:
    s = strategy.build(config.StrategyConfig(name=name, memory_size=16))
    assert isinstance(s, strategy.Strategy)
    model = _model()
    gen = torch.Generator().manual_seed(0)
    for w in range(3):
        x, y = _window(w)
        xb, yb = s.batch(x[:8], y[:8], gen)
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64
        assert xb.shape[0] == yb.shape[0] >= 8 and xb.shape[1] == 4
        logits = model(xb)
        pen = s.penalty(model, xb, logits)
        assert pen.shape == () and float(pen.detach()) >= 0.0
        (nn.functional.cross_entropy(logits, yb) + pen).backward()
        s.after_window(model, x, y)
    # state_dict round trip: a fresh strategy behaves identically
    clone = strategy.build(config.StrategyConfig(name=name, memory_size=16))
    clone.load_state_dict(copy.deepcopy(s.state_dict()))
    x, y = _window(9)
    logits = model(x)
    assert torch.allclose(s.penalty(model, x, logits), clone.penalty(model, x, logits))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(s.batch(x, y, g1), clone.batch(x, y, g2)))


@pytest.mark.parametrize("name", NAMES)
def test_prequential_step_runs_each_strategy(name: str) -> None:
    cfg = config.load(
        overrides={"strategy": {"name": name, "memory_size": 32}, "model": {"hidden_sizes": [8]}, "train": {"lr": 0.03}}
    )
    model = models.build(cfg.model, 4, 2, seed=0)
    opt = make_optimizer(cfg.train, model.parameters())
    learner = strategy.build(cfg.strategy)
    gen = torch.Generator().manual_seed(0)
    accs = [prequential_step(model, opt, *_window(w, 64), 16, 5, gen, learner)[2] for w in range(8)]
    assert accs[-1] > 0.8, accs


class TwoParams(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.0))
        self.b = nn.Parameter(torch.tensor(-2.0))


def test_ewc_penalty_by_hand_on_two_parameters() -> None:
    m = TwoParams()
    ewc = strategy.EWC(lambda_=4.0, mode="separate")
    ewc.anchors = [
        ({"a": torch.tensor(0.5), "b": torch.tensor(2.0)}, {"a": torch.tensor(0.0), "b": torch.tensor(-1.0)})
    ]
    # 4/2 * (0.5 * (1-0)^2 + 2.0 * (-2-(-1))^2) = 2 * (0.5 + 2.0) = 5.0
    assert float(ewc.penalty(m, torch.zeros(1), torch.zeros(1, 2)).detach()) == pytest.approx(5.0)
    ewc.anchors.append(
        ({"a": torch.tensor(1.0), "b": torch.tensor(0.0)}, {"a": torch.tensor(3.0), "b": torch.tensor(0.0)})
    )
    # second anchor adds 2 * (1.0 * (1-3)^2) = 8
    assert float(ewc.penalty(m, torch.zeros(1), torch.zeros(1, 2))) == pytest.approx(13.0)


def test_online_ewc_decays_fisher_and_keeps_one_anchor() -> None:
    model = _model()
    ewc = strategy.EWC(lambda_=1.0, mode="online", decay=0.5)
    x, y = _window(0)
    ewc.after_window(model, x, y)
    f1 = {n: f.clone() for n, f in ewc.anchors[0][0].items()}
    ewc.after_window(model, x, y)  # same model, same data: F_new == f1
    assert len(ewc.anchors) == 1
    for n, f in ewc.anchors[0][0].items():
        assert torch.allclose(f, 1.5 * f1[n])
    assert float(ewc.penalty(model, x, model(x))) == pytest.approx(0.0)  # at the anchor


def test_separate_ewc_bounds_its_anchors() -> None:
    model = _model()
    ewc = strategy.EWC(mode="separate", max_anchors=2)
    for w in range(4):
        ewc.after_window(model, *_window(w))
    assert len(ewc.anchors) == 2


def test_reservoir_is_bounded_and_roughly_uniform() -> None:
    counts = torch.zeros(1000)
    for seed in range(200):
        r = strategy.Replay(memory_size=50, seed=seed)
        for w in range(10):  # 10 windows of 100 rows; feature 0 holds the row id
            ids = torch.arange(w * 100, (w + 1) * 100, dtype=torch.float32)
            r.after_window(_model(), torch.stack([ids, ids, ids, ids], 1), torch.zeros(100, dtype=torch.int64))
        assert len(r) == 50 and r.seen == {-1: 1000}
        counts[r.x[:, 0].long()] += 1
    per_window = counts.view(10, 100).sum(1) / 200  # expected 5 rows of each window
    assert per_window.min() > 4.0 and per_window.max() < 6.0


def test_class_balanced_memory_splits_between_classes() -> None:
    r = strategy.Replay(memory_size=40, class_balanced=True)
    x, _ = _window(0, 100)
    r.after_window(_model(), x, torch.zeros(100, dtype=torch.int64))
    assert (r.y == 0).sum() == 40
    r.after_window(_model(), x, torch.ones(100, dtype=torch.int64))  # a new class arrives
    assert (r.y == 0).sum() == 20 and (r.y == 1).sum() == 20


def test_replay_mixes_memory_rows_in_proportion() -> None:
    r = strategy.Replay(memory_size=100, replay_ratio=0.5)
    x, y = _window(0, 100)
    assert r.batch(x[:10], y[:10], torch.Generator())[0].shape[0] == 10  # empty memory
    r.after_window(_model(), x, y)
    assert r.batch(x[:10], y[:10], torch.Generator())[0].shape[0] == 15


def test_lwf_penalty_is_zero_against_itself_and_grows_with_change() -> None:
    model = _model()
    lwf = strategy.LwF(alpha=1.0, temperature=2.0)
    x, y = _window(0)
    assert float(lwf.penalty(model, x, model(x))) == 0.0  # no teacher yet
    lwf.after_window(model, x, y)
    assert float(lwf.penalty(model, x, model(x))) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.head.bias += torch.tensor([2.0, -2.0])
    assert float(lwf.penalty(model, x, model(x))) > 0.01


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        strategy.Replay(memory_size=0)
    with pytest.raises(ValueError):
        strategy.EWC(decay=1.5)
    with pytest.raises(ValueError):
        strategy.LwF(temperature=0)


def test_compose_chains_batches_and_sums_penalties() -> None:
    s = strategy.build(config.StrategyConfig(name="ewc+replay+lwf", memory_size=8))
    assert [type(x).__name__ for x in s.strategies] == ["EWC", "Replay", "LwF"]
    model = _model()
    x, y = _window(0)
    s.after_window(model, x, y)
    with torch.no_grad():
        model.head.bias += 1.0
    logits = model(x)
    total = s.penalty(model, x, logits)
    parts = sum(float(p.penalty(model, x, logits)) for p in s.strategies)
    assert float(total) == pytest.approx(parts) and float(total) > 0
    assert s.batch(x[:4], y[:4], torch.Generator())[0].shape[0] == 8  # replay doubled the batch


@pytest.mark.parametrize("name", ["ewc+ewc", "replay+bogus", "dropout"])
def test_unknown_or_repeated_strategy_names_are_config_errors(name: str) -> None:
    from ddn_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape("strategy.name")):
        config.load(overrides={"strategy": {"name": name}})
