"""Elastic weight consolidation: EWC (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ddn_ray.strategy.base import Finetune, all_mean

__all__ = ["EWC"]


def diagonal_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: mean over mini-batches of squared log-likelihood gradients.

    Mini-batch (not per-sample) squared gradients, as Avalanche's ``EWCPlugin`` computes
    them; averaged over the DDP group so every rank holds the same Fisher.

    Args:
        model: the unwrapped model (parameters are not changed).
        x: ``(n, num_features)`` float32, y: ``(n,)`` int64.

    Returns:
        ``{parameter name: tensor of its shape}``, float32, non-negative.
    """
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    was_training = model.training
    model.eval()
    num_batches = 0
    for i in range(0, x.shape[0], batch_size):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + batch_size]), y[i : i + batch_size]).backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
        num_batches += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: all_mean(f / max(num_batches, 1)) for n, f in fisher.items()}


class EWC(Finetune):
    """Penalise moving the parameters that mattered for earlier windows.

    ``penalty = lambda_ / 2 * sum_i F_i (theta_i - theta*_i)^2`` (Kirkpatrick et al. 2017,
    eq. 3). ``mode="separate"`` keeps one ``(F, theta*)`` pair per window (or task) and sums
    their penalties; ``mode="online"`` keeps one pair, ``F <- decay * F + F_new`` and
    ``theta*`` the latest parameters (Schwarz et al. 2018, "Progress & Compress", eq. 8).

    Args:
        lambda_: penalty weight.
        mode: ``"separate"`` or ``"online"``.
        decay: online EWC's gamma in ``[0, 1]``.
        max_anchors: with ``"separate"``, keep only the most recent anchors (bounded memory).

    Raises:
        ValueError: a negative ``lambda_`` or a ``decay`` outside ``[0, 1]``.
    """

    def __init__(
        self,
        lambda_: float = 100.0,
        mode: Literal["separate", "online"] = "online",
        decay: float = 0.9,
        max_anchors: int = 10,
    ) -> None:
        if lambda_ < 0 or not 0.0 <= decay <= 1.0:
            raise ValueError(f"need lambda_ >= 0 and 0 <= decay <= 1, got {lambda_}, {decay}")
        self.lambda_, self.mode, self.decay, self.max_anchors = lambda_, mode, decay, max_anchors
        self.anchors: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (fisher, theta*)

    def penalty(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        if not self.anchors:
            return total
        params = dict(model.named_parameters())
        for fisher, star in self.anchors:
            for n, f in fisher.items():
                total = total + (f * (params[n] - star[n]) ** 2).sum()
        return 0.5 * self.lambda_ * total

    def after_window(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        fisher = diagonal_fisher(model, x, y)
        star = {n: p.detach().clone() for n, p in model.named_parameters() if n in fisher}
        if self.mode == "online" and self.anchors:
            old, _ = self.anchors[0]
            fisher = {n: self.decay * old[n] + f for n, f in fisher.items()}
            self.anchors = [(fisher, star)]
        else:
            self.anchors = (self.anchors + [(fisher, star)])[-self.max_anchors :]

    def state_dict(self) -> dict[str, Any]:
        return {"anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors = list(state["anchors"])
