"""Experience replay with a reservoir-sampled memory (Chaudhry et al. 2019, "On Tiny Episodic Memories")."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ddn_ray.strategy.base import Finetune

__all__ = ["Replay"]


class Replay(Finetune):
    """Mix rows from a bounded memory of past windows into every mini-batch.

    The memory is a reservoir sample (Vitter's algorithm R) of every row this rank
    has learned, so each past row is kept with equal probability ``memory_size / seen``.
    With ``class_balanced`` the memory is split evenly between the classes seen so
    far, each class keeping its own reservoir. Under DDP each rank samples its own
    shard; equal shards keep the ranks' memories, and so their batches, the same size.

    Args:
        memory_size: rows kept (per rank).
        replay_ratio: memory rows added per window row in each batch (1.0 doubles a batch).
        class_balanced: one reservoir per class instead of one for all.
        seed: seeds the reservoir's choices.

    Raises:
        ValueError: ``memory_size < 1`` or ``replay_ratio < 0``.
    """

    def __init__(self, memory_size: int = 1000, replay_ratio: float = 1.0, class_balanced: bool = False, seed: int = 0):
        if memory_size < 1 or replay_ratio < 0:
            raise ValueError(f"need memory_size >= 1 and replay_ratio >= 0, got {memory_size}, {replay_ratio}")
        self.memory_size, self.replay_ratio, self.class_balanced = memory_size, replay_ratio, class_balanced
        self.x: torch.Tensor | None = None  # (m, num_features) float32
        self.y = torch.zeros(0, dtype=torch.int64)  # (m,) class ids, or (m, k) float32 regression targets
        self.seen: dict[int, int] = {}  # class (or -1 for all) -> rows offered to its reservoir
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(len(self), round(self.replay_ratio * x.shape[0]))
        if k == 0 or self.x is None:
            return x, y
        idx = torch.randint(len(self), (k,), generator=generator)
        return torch.cat([x, self.x[idx]]), torch.cat([y, self.y[idx]])

    def _offer(self, key: int, rows: torch.Tensor, capacity: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Algorithm R over ``rows`` (indices into x) for the reservoir ``key`` holding ``capacity`` slots."""
        if self.x is not None and self.x.device != x.device:  # restored from a checkpoint of another device
            self.x, self.y = self.x.to(x.device), self.y.to(x.device)
        held = (self.y == key).nonzero().flatten() if key >= 0 else torch.arange(len(self))
        slots: list[int] = held.tolist()
        for i in rows.tolist():
            n = self.seen.get(key, 0)
            self.seen[key] = n + 1
            if len(slots) < capacity:
                if self.x is None:  # the memory takes the rows' dtypes: class ids, or regression targets (1, k)
                    self.x, self.y = x[i : i + 1].clone(), y[i : i + 1].clone()
                else:
                    self.x, self.y = torch.cat([self.x, x[i : i + 1]]), torch.cat([self.y, y[i : i + 1]])
                slots.append(len(self) - 1)
            else:
                j = int(torch.randint(n + 1, (1,), generator=self._gen))
                if j < capacity and self.x is not None:
                    self.x[slots[j]] = x[i]
                    self.y[slots[j]] = y[i]

    def after_window(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        if not self.class_balanced:
            self._offer(-1, torch.arange(x.shape[0]), self.memory_size, x, y)
            return
        classes = sorted(set(self.seen) | set(y.unique().tolist()))
        capacity = self.memory_size // len(classes)
        for c in classes:  # shrink over-full classes when a new class arrives
            held = (self.y == c).nonzero().flatten()
            if len(held) > capacity:
                keep = torch.ones(len(self), dtype=torch.bool)
                keep[held[capacity:]] = False
                assert self.x is not None  # rows are held
                self.x, self.y = self.x[keep], self.y[keep]
        for c in classes:
            self._offer(c, (y == c).nonzero().flatten(), capacity, x, y)

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "seen": dict(self.seen), "gen": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.y, self.seen = state["x"], state["y"], dict(state["seen"])
        self._gen.set_state(state["gen"])
