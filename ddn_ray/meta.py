"""A meta-learned initialisation for resets: Reptile on the windows already learned.

Nichol, Achiam & Schulman (2018), "On First-Order Meta-Learning Algorithms": with the
meta-initialisation ``phi`` and a task ``tau``, take ``k`` SGD steps on ``tau`` from ``phi`` to get
``W``, then move ``phi <- phi + epsilon (W - phi)``. Here each learned window is a task, so ``phi``
drifts towards weights from which *any* recent concept is a few steps away; when the policy decides
``reset`` the learner starts from ``phi`` instead of fresh random weights
(:class:`~ddn_ray.learner.OnlineLearner`). ``phi`` is part of the learner state, so it is
checkpointed and restored with it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ddn_ray.config import MetaConfig

__all__ = ["Reptile", "average_gradients"]

Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def average_gradients(module: nn.Module, world: int) -> None:
    """Average every gradient of ``module`` over the DDP process group (nothing with one worker), so every rank's
    copy takes the same step. A collective: every rank must call it."""
    if world == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for p in module.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= world


class Reptile:
    """The meta-initialisation ``phi`` and its first-order meta-update.

    Args:
        model: the learner's (unwrapped) model; ``phi`` starts as a copy of its weights.
        cfg: the job's ``meta`` section (``outer_lr`` is epsilon, ``inner_steps`` is ``k``).
        loss: ``loss(model, x, y)``: the training loss of ``model`` on a batch (the learner's task loss).
        seed: seeds the inner batches (the same on every rank).
        world: the number of workers; inner gradients are averaged over them, so ``phi`` is the same on every rank.
    """

    def __init__(self, *, model: nn.Module, cfg: MetaConfig, loss: Loss, seed: int, world: int = 1) -> None:
        self.cfg, self.loss, self.world = cfg, loss, world
        self.init: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._inner = copy.deepcopy(model)
        self.generator = torch.Generator().manual_seed(seed + 104_729)
        self.updates = 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One meta-update on a window (a task): ``inner_steps`` SGD steps from ``phi``, then ``phi`` moves
        ``outer_lr`` of the way to the adapted weights.

        Args:
            x: ``(n, num_features)`` float32, this rank's rows of the window.
            y: ``(n,)`` int64 labels (``(n, k)`` float32 targets for regression).

        Returns:
            The distance ``||W - phi||_2`` the update moved towards (before the step of ``epsilon``).
        """
        if x.shape[0] == 0:
            return 0.0
        inner = self._inner
        inner.load_state_dict(self.init)
        inner.train()
        optimizer = torch.optim.SGD(inner.parameters(), lr=self.cfg.inner_lr)
        for _ in range(self.cfg.inner_steps):
            idx = torch.randint(0, x.shape[0], (min(self.cfg.inner_batch_size, x.shape[0]),), generator=self.generator)
            loss = self.loss(inner, x[idx], y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(inner, self.world)
            optimizer.step()
        adapted = inner.state_dict()
        moved = 0.0
        with torch.no_grad():
            for key, phi in self.init.items():
                if phi.is_floating_point():
                    step = adapted[key] - phi
                    moved += float((step**2).sum())
                    phi += self.cfg.outer_lr * step
        self.updates += 1
        return moved**0.5

    def state_dict(self) -> dict[str, Any]:
        return {"init": self.init, "generator": self.generator.get_state(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init = {k: v.detach().clone() for k, v in state["init"].items()}
        self.generator.set_state(state["generator"])
        self.updates = state["updates"]
