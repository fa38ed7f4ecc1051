"""Learning without Forgetting (Li & Hoiem 2016): distil from the previous model version."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddn_ray.strategy.base import Finetune

__all__ = ["LwF", "distillation_loss"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, batch mean (Hinton et al. 2015).

    Args:
        student_logits: ``(b, num_classes)`` float32.
        teacher_logits: ``(b, num_classes)`` float32.
        temperature: ``T > 0``; the ``T^2`` factor keeps gradient scale independent of ``T``.
    """
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


class LwF(Finetune):
    """Keep the new model's outputs close to the previous model version's on the new data.

    After each window the model is copied and frozen as the teacher; while learning the
    next window, ``alpha * distillation_loss(model(x), teacher(x), T)`` is added.

    Args:
        alpha: distillation weight.
        temperature: softmax temperature ``T``.

    Raises:
        ValueError: ``alpha < 0`` or ``temperature <= 0``.
    """

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0) -> None:
        if alpha < 0 or temperature <= 0:
            raise ValueError(f"need alpha >= 0 and temperature > 0, got {alpha}, {temperature}")
        self.alpha, self.temperature = alpha, temperature
        self.teacher: nn.Module | None = None
        self._restored: dict[str, torch.Tensor] | None = None  # teacher weights from a checkpoint

    def _teacher(self, model: nn.Module) -> nn.Module | None:
        if self._restored is not None:  # the architecture is the live model's
            self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
            self.teacher.load_state_dict(self._restored)
            self._restored = None
        return self.teacher

    def penalty(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        teacher = self._teacher(model)
        if teacher is None or self.alpha == 0:
            return logits.new_zeros(())
        with torch.no_grad():
            teacher_logits = teacher(x)
        return self.alpha * distillation_loss(logits, teacher_logits, self.temperature)

    def after_window(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self._restored = None
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        if self._restored is not None:
            return {"teacher": self._restored}
        return {"teacher": None if self.teacher is None else self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher, self._restored = None, state["teacher"]
