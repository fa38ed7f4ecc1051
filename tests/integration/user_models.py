"""A user's model builder, as a module of their own (``model.builder: tests.integration.user_models:residual_mlp``)."""

from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.fc(x))


class ResidualMLP(nn.Module):
    """``(batch, num_features)`` float32 -> ``(batch, num_classes)`` logits as ``head(body(x))``."""

    def __init__(self, num_features: int, num_classes: int, width: int, blocks: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(num_features, width), nn.ReLU(), *[_Block(width) for _ in range(blocks)])
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


BUILT: list[int] = []  # how many times this process built one (the test checks the builder ran)


def residual_mlp(num_features: int, num_classes: int, cfg) -> ResidualMLP:
    """The builder contract of :mod:`ddn_ray.models`: settings from ``cfg.options``."""
    BUILT.append(1)
    return ResidualMLP(num_features, num_classes, int(cfg.options.get("width", 32)), int(cfg.options.get("blocks", 2)))
