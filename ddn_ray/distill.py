"""A compact student distilled from the learner for serving, and the rule that decides which one is served.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network": the student learns
the teacher's softened outputs ``softmax(z / T)`` (KL divergence, scaled by ``T**2`` so its gradients
keep their size as ``T`` changes) mixed with the hard labels. Here the teacher is the streaming
learner's model; every ``distill.every_windows`` windows the student is distilled on the recent
windows. Before each window is learned both are scored on it (prequential, so the rows are new to
both); the controller serves the student only while it is within ``distill.margin`` of the teacher
there (:func:`serve_student`), and the teacher otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddn_ray.config import DistillConfig
from ddn_ray.meta import average_gradients

__all__ = ["Distiller", "distillation_loss", "serve_student"]


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)`` (Hinton et al. 2015).

    Args:
        student_logits: ``(batch, C)`` float32.
        teacher_logits: ``(batch, C)`` float32 (no gradient flows into them).
        y: ``(batch,)`` int64 labels.
        temperature: ``T > 0``.
        alpha: weight of the soft targets in ``[0, 1]``.
    """
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(teacher_logits.detach() / temperature, dim=1),
        reduction="batchmean",
    )
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student_logits, y)


def serve_student(teacher_accuracy: float, student_accuracy: float, margin: float) -> bool:
    """Whether the student is served: both measured on the latest revealed window, and the student at most
    ``margin`` below the teacher (a NaN, e.g. a window with no rows or no student yet, serves the teacher)."""
    if math.isnan(teacher_accuracy) or math.isnan(student_accuracy):
        return False
    return teacher_accuracy - student_accuracy <= margin + 1e-9  # accuracies are ratios: 0.90 - 0.88 > 0.02 in floats


class Distiller:
    """The student, its optimizer, and its distillation from the teacher.

    Args:
        student: the student model (built from ``distill.student``, the same on every rank).
        cfg: the job's ``distill`` section.
        seed: seeds the distillation batches (the same on every rank).
        world: the number of workers; gradients are averaged over them so every rank's student is the same.
    """

    def __init__(self, *, student: nn.Module, cfg: DistillConfig, seed: int, world: int = 1) -> None:
        self.student, self.cfg, self.world = student, cfg, world
        self.optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
        self.generator = torch.Generator().manual_seed(seed + 15_485_863)
        self.distillations = 0

    def correct(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """How many of this rank's rows the student gets right (``x``: ``(n, F)`` float32, ``y``: ``(n,)`` int64)."""
        self.student.eval()
        with torch.no_grad():
            return int((self.student(x).argmax(1) == y).sum()) if x.shape[0] else 0

    def distil(self, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
        """``cfg.epochs`` shuffled passes of :func:`distillation_loss` over ``(x, y)``; the teacher is not changed.

        Returns:
            The mean loss of the last pass.
        """
        teacher_mode = teacher.training
        teacher.eval()
        with torch.no_grad():
            targets = teacher(x)
        teacher.train(teacher_mode)
        self.student.train()
        total = 0.0
        for _ in range(self.cfg.epochs):
            order = torch.randperm(x.shape[0], generator=self.generator)
            total = 0.0
            for i in range(0, x.shape[0], batch_size):
                idx = order[i : i + batch_size]
                loss = distillation_loss(
                    self.student(x[idx]), targets[idx], y[idx], self.cfg.temperature, self.cfg.alpha
                )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                average_gradients(self.student, self.world)
                self.optimizer.step()
                total += float(loss.detach()) * idx.shape[0]
        self.distillations += 1
        return total / max(x.shape[0], 1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "distillations": self.distillations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.distillations = state["distillations"]
