"""The strategy protocol: how an update learns from a window.

Three hooks with narrow arguments; a strategy never sees the trainer, the optimizer
or the stream. State that must survive a restart (memory, Fisher, the previous
model) goes through ``state_dict`` / ``load_state_dict`` into the checkpoint.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Compose", "Finetune", "Strategy", "all_mean"]


@runtime_checkable
class Strategy(Protocol):
    """How the train loop learns a window (see :func:`ddn_ray.train.prequential_step`).

    Per window: for each mini-batch ``x, y = strategy.batch(x, y, generator)``, then
    ``loss = cross_entropy(model(x), y) + strategy.penalty(model, x, logits)``;
    after the window's last epoch ``strategy.after_window(model, x_window, y_window)``.
    """

    def batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the rows to train on: ``x (b, num_features) float32, y (b,) int64`` -> possibly more rows."""
        ...

    def penalty(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """A scalar float32 tensor added to the loss (0 for none); ``logits (b, num_classes)``."""
        ...

    def after_window(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Update the strategy's state once the window was learned (all rows of this rank)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor over the DDP process group in place (identity when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
        t /= torch.distributed.get_world_size()
    return t


class Finetune:
    """Naive fine-tuning: learn each window as it comes, with nothing against forgetting (the baseline)."""

    def batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def penalty(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits.new_zeros(())

    def after_window(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class Compose:
    """Several strategies at once, e.g. EWC + Replay: batches chained, penalties summed.

    Args:
        strategies: applied in order; ``batch`` passes each one's output to the next.
    """

    def __init__(self, strategies: list[Strategy]) -> None:
        self.strategies = list(strategies)

    def batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for s in self.strategies:
            x, y = s.batch(x, y, generator)
        return x, y

    def penalty(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        for s in self.strategies:
            total = total + s.penalty(model, x, logits)
        return total

    def after_window(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        for s in self.strategies:
            s.after_window(model, x, y)

    def state_dict(self) -> dict[str, Any]:
        return {"strategies": [s.state_dict() for s in self.strategies]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, st in zip(self.strategies, state["strategies"], strict=True):
            s.load_state_dict(st)
