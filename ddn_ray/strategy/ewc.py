"""Elastic weight consolidation: EWC (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ddn_ray.strategy.base import Finetune, all_mean

__all__ = ["EWC"]


def diagonal_fisher(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: the mean over rows of squared per-row log-likelihood gradients.

    ``F_i = 1/n sum_k (d log p(y_k | x_k) / d theta_i)^2`` (Kirkpatrick et al. 2017, with
    the observed labels), per-row gradients by ``torch.func.vmap`` over ``torch.func.grad``.
    Squaring per-row gradients, not mini-batch means, matters: near a minimum the mean
    gradient vanishes while the rows' gradients do not. Averaged over the DDP group so
    every rank holds the same Fisher.

    Args:
        model: the unwrapped model (parameters are not changed).
        x: ``(n, num_features)`` float32, y: ``(n,)`` int64.
        batch_size: rows per vectorised chunk (bounds memory).

    Returns:
        ``{parameter name: tensor of its shape}``, float32, non-negative.
    """
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def nll(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    per_row = vmap(grad(nll), in_dims=(None, 0, 0))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    for i in range(0, x.shape[0], batch_size):
        for n, g in per_row(params, x[i : i + batch_size], y[i : i + batch_size]).items():
            fisher[n] += (g**2).sum(0)
    model.train(was_training)
    return {n: all_mean(f / max(x.shape[0], 1)) for n, f in fisher.items()}


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
            self.anchors = [*self.anchors, (fisher, star)][-self.max_anchors :]

    def state_dict(self) -> dict[str, Any]:
        return {"anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors = list(state["anchors"])
