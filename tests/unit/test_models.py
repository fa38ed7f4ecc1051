"""The model registry and the builder contract (ddn_ray.models), and the config of a user's table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ddn_ray import config, models
from ddn_ray.errors import ConfigError


def sequential(num_features: int, num_classes: int, cfg: Any) -> nn.Module:
    """Breaks the contract: no ``body`` / ``head``."""
    return nn.Sequential(nn.Linear(num_features, num_classes))


class _TwoHeads(nn.Module):
    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Linear(num_features, 8)
        self.head = nn.Linear(8, num_classes + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def wrong_width(num_features: int, num_classes: int, cfg: Any) -> nn.Module:
    return _TwoHeads(num_features, num_classes)


NOT_CALLABLE = 3


def test_builtin_kinds_are_registered_by_name_and_follow_the_contract() -> None:
    assert models.resolve("mlp") is models.mlp and models.resolve("ddn_ray.models:cnn") is models.cnn
    m = models.build(config.ModelConfig(hidden_sizes=(16,)), 5, 3, seed=0)
    x = torch.randn(4, 5)
    assert torch.equal(m(x), m.head(m.body(x))) and m.head.out_features == 3
    c = models.build(config.ModelConfig(kind="cnn", image_shape=(1, 8, 8), channels=(4,), hidden_sizes=(8,)), 64, 2)
    assert isinstance(c.head, nn.Linear) and c(torch.randn(2, 64)).shape == (2, 2)


def test_a_user_builder_is_imported_by_name_with_its_options() -> None:
    cfg = config.ModelConfig(builder="tests.integration.user_models:residual_mlp", options={"width": 12, "blocks": 3})
    m = models.build(cfg, 7, 4, seed=1)
    assert type(m).__name__ == "ResidualMLP" and m.head.in_features == 12 and len(m.body) == 2 + 3
    again = models.build(cfg, 7, 4, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize(
    "name,error,needle",
    [
        ("no_colon", ValueError, "must be 'package.module:attribute'"),
        ("ddn_ray.no_such_module:f", ValueError, "cannot import 'ddn_ray.no_such_module'"),
        ("tests.unit.test_models:missing", TypeError, "has no 'missing'"),
        ("tests.unit.test_models:NOT_CALLABLE", TypeError, "no callable 'NOT_CALLABLE'"),
    ],
)
def test_bad_builder_names_are_refused_with_the_name(name: str, error: type, needle: str) -> None:
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")):
        models.resolve(name)


@pytest.mark.parametrize(
    "name,error,needle",
    [
        ("tests.unit.test_models:sequential", TypeError, "a .body module and an nn.Linear .head"),
        ("tests.unit.test_models:wrong_width", ValueError, "head has 4 outputs; expected 3"),
    ],
)
def test_a_builder_that_breaks_the_contract_is_refused(name: str, error: type, needle: str) -> None:
    with pytest.raises(error, match=needle):
        models.build(config.ModelConfig(builder=name), 5, 3)


def test_grow_head_keeps_the_known_classes_and_is_the_same_on_every_rank() -> None:
    a = models.build(config.ModelConfig(hidden_sizes=(8,)), 4, 2, seed=0)
    b = models.build(config.ModelConfig(hidden_sizes=(8,)), 4, 2, seed=0)
    x = torch.randn(6, 4)
    before = a(x).detach()
    models.grow_head(a, 3, seed=7)
    models.grow_head(b, 3, seed=7)
    after = a(x).detach()
    assert after.shape == (6, 3) and torch.allclose(after[:, :2], before)
    assert torch.equal(a.head.weight, b.head.weight)
    assert models.output_width(models.state_to_numpy(a)) == 3
    with pytest.raises(ValueError, match="cannot shrink"):
        models.grow_head(a, 2, seed=7)


def test_predict_gives_class_ids_or_outputs() -> None:
    m = models.build(config.ModelConfig(hidden_sizes=(8,)), 4, 3, seed=0).eval()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    ids = models.predict(m, x, "classification")
    assert ids.dtype == np.int64 and ids.shape == (5,) and ids.max() < 3
    out = models.predict(m, x, "regression")
    assert out.dtype == np.float64 and out.shape == (5, 3)


TABLE = {"source": {"kind": "table", "uri": "loans.csv"}, "features": ["amount", "region"], "label": "defaulted"}


@pytest.mark.parametrize(
    "data,sections,needle",
    [
        ({**TABLE, "name": "elec2"}, {}, "not both"),
        ({k: v for k, v in TABLE.items() if k != "label"}, {}, "needs data.features"),
        ({**TABLE, "categorical": ["colour"]}, {}, "data.categorical ['colour'] are not in data.features"),
        ({**TABLE, "id": "amount"}, {}, "named in more than one role"),
        (TABLE, {}, "needs data.classes, or data.allow_new_classes"),
        ({**TABLE, "allow_new_classes": True}, {"train": {"num_workers": 2}}, "needs train.num_workers 1"),
        ({**TABLE, "allow_new_classes": True}, {"strategy": {"name": "ewc"}}, "strategy finetune or replay"),
        ({**TABLE, "classes": [0, 1]}, {"model": {"task": "regression"}}, "are for classification"),
        ({**TABLE, "classes": ["no", "yes"]}, {"stream": {"last_label_feature": True}}, "last_label_feature"),
        ({**TABLE, "classes": ["no", "yes"]}, {"model": {"kind": "cnn"}}, "model.kind cnn"),
        ({**TABLE, "classes": ["no", "yes"], "scenario": "rotation"}, {}, "data.scenario is for built-in"),
        ({**TABLE, "classes": ["no", "yes"]}, {"model": {"builder": "not a name"}}, "model.builder"),
    ],
)
def test_a_table_config_that_cannot_run_is_refused_naming_the_field(data: dict, sections: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(overrides={"data": data, **sections})
    assert needle in str(err.value)


def test_a_table_config_that_can_run_loads() -> None:
    cfg = config.load(
        overrides={
            "data": {**TABLE, "classes": ["no", "yes"], "order_by": "t"},
            "model": {"builder": "my_models:tabular_resnet", "options": {"depth": 3}},
        }
    )
    assert cfg.data.name is None and cfg.data.source.kind == "table" and cfg.model.options == {"depth": 3}
    landing = config.load(
        overrides={"data": {**TABLE, "source": {"kind": "landing_dir", "path": "in/"}, "allow_new_classes": True}}
    )
    assert landing.data.source.idle_timeout_s == 30.0
