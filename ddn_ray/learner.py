"""One worker's learning over a stream: the prequential step, drift monitoring and the policy's decisions.

Plain PyTorch: the Ray Train loop (:mod:`ddn_ray.train`) and the in-process replay
(:func:`ddn_ray.train.replay_in_process`) drive the same :class:`OnlineLearner`, so the
served model and the benchmarks learn identically. Under DDP every collective here is
called by every rank in the same order: the error stream is gathered so all ranks feed
their detectors the same values, and rank 0's decision is the one all ranks apply.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddn_ray import devices, drift, exits, models, policy, strategy
from ddn_ray.config import DistillConfig, DriftConfig, MetaConfig, PolicyConfig, StrategyConfig, TrainConfig
from ddn_ray.distill import Distiller
from ddn_ray.meta import Reptile
from ddn_ray.policy import Decision
from ddn_ray.strategy import Finetune, Strategy

__all__ = [
    "TASKS",
    "OnlineLearner",
    "StepResult",
    "WindowMetrics",
    "fit",
    "loss_fn",
    "make_optimizer",
    "make_scheduler",
    "prequential_step",
    "task_loss",
]


@dataclass(frozen=True)
class WindowMetrics:
    """What one prequential step measured, summed over all workers.

    Attributes:
        index: the window's number.
        start: the window's first offset.
        end: the offset after the window's last row.
        num_rows: rows trained on (all workers).
        pre_loss: mean loss of the model *before* it learned this window (cross-entropy; for
            regression the squared error per row, averaged over outputs).
        pre_accuracy: accuracy of the model before it learned this window (NaN for regression).
        train_loss: mean training loss over the window's last epoch.
        step_s: wall time of the step in seconds (retraining included).
        lr: learning rate used for the window.
        student_pre_accuracy: accuracy of the distilled student (``distill.student``) before the window was
            learned (NaN without a student).
        post_loss: mean loss on the window of the model *after* the step (policy decisions included): what the
            controller's quality gate compares with ``pre_loss`` (:func:`ddn_ray.controller.check_quality`).
        post_accuracy: its accuracy after the step (NaN for regression).
    """

    index: int
    start: int
    end: int
    num_rows: int
    pre_loss: float
    pre_accuracy: float
    train_loss: float
    step_s: float
    lr: float
    student_pre_accuracy: float = math.nan
    post_loss: float = math.nan
    post_accuracy: float = math.nan


class StepResult(NamedTuple):
    """:func:`prequential_step`'s results: counts and means over all ranks, and this rank's errors."""

    num_rows: int
    pre_loss: float
    pre_accuracy: float
    train_loss: float
    wrong: torch.Tensor  # (n,) float32 on this rank: 1.0 where the model was wrong before learning


def make_optimizer(cfg: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Build the optimizer ``cfg.optimizer`` names (sgd, adam, adamw, rmsprop) at ``cfg.lr``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-window schedule (``scheduler.step()`` once per window): constant, step decay or cosine.

    ``step``: ``lr * lr_gamma ** (t // lr_period_windows)``; ``cosine``: from ``lr`` down to
    ``lr * lr_min_factor`` over ``lr_period_windows`` windows (Loshchilov & Hutter 2017,
    SGDR, without warm restarts: a policy's ``all``/``reset`` decision restarts it).
    """
    period, gamma, floor = cfg.lr_period_windows, cfg.lr_gamma, cfg.lr_min_factor
    if cfg.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=period, gamma=gamma)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, period) / period))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)


def _all_sum(values: list[float]) -> list[float]:
    """Sum values over the DDP process group (identity when not distributed)."""
    t = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (a collective: all ranks must call it)."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


TASKS = ("classification", "regression")


def loss_fn(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss: cross-entropy on logits ``(b, C)`` vs int64 ``(b,)``, or MSE on ``(b, k)`` vs ``(b, k)``.

    Raises:
        ValueError: unknown task.
    """
    if task == "classification":
        return F.cross_entropy(out, y)
    if task == "regression":
        return F.mse_loss(out, y)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def task_loss(raw: nn.Module, task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`loss_fn` of the head's output ``out``; for a multi-exit model in training, the joint loss of every
    exit (:func:`ddn_ray.exits.joint_loss`, the earlier exits' logits kept by its ``forward``)."""
    early = getattr(raw, "exit_logits", None) if raw.training else None
    if not early:
        return loss_fn(task, out, y)
    raw.exit_logits = []  # type: ignore[assignment]  # this forward's graph is used once
    return exits.joint_loss(raw, [*(loss_fn(task, e, y) for e in early), loss_fn(task, out, y)])


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", None)  # DDP keeps the model in .module
    return inner if isinstance(inner, nn.Module) else model


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    strategy: Strategy,
    task: str = "classification",
    amp: bool = False,
) -> float:
    """Mini-batch training: ``epochs`` shuffled passes, each batch through ``strategy.batch`` and ``strategy.penalty``.

    Only the parameters ``optimizer`` holds move; every gradient is cleared before each step
    and at the end, so parameters left out of ``optimizer`` stay as they were.

    Args:
        model: the (possibly DDP-wrapped) classifier; penalties read its unwrapped parameters.
        x: ``(n, num_features)`` float32; y: ``(n,)`` int64, or ``(n, k)`` float32 for regression.
        batch_size: rows per gradient step (before the strategy adds memory rows).
        generator: seeds the shuffles and the strategy's sampling.
        task: ``classification`` (cross-entropy) or ``regression`` (MSE), see :func:`loss_fn`.
        amp: the forward pass and the loss in bfloat16 (:func:`ddn_ray.devices.autocast`), gradients into the
            float32 weights.

    Returns:
        The summed training loss (task loss + penalty, per window row) of the last pass.
    """
    raw = _unwrap(model)
    model.train()
    loss_sum = 0.0
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        loss_sum = 0.0
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            xb, yb = strategy.batch(x[idx], y[idx], generator)
            with devices.autocast(xb.device, amp):
                logits = model(xb)
                loss = task_loss(raw, task, logits, yb) + strategy.penalty(raw, xb, logits)
            model.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * idx.shape[0]
    model.zero_grad(set_to_none=True)
    return loss_sum


def prequential_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    strategy: Strategy | None = None,
    task: str = "classification",
    amp: bool = False,
) -> StepResult:
    """Score the model on a window, then learn from it (test-then-train).

    Every rank must call this with the same number of rows so DDP's collectives match.

    Args:
        model: the (possibly DDP-wrapped) classifier.
        optimizer: its optimizer.
        x: ``(n, num_features)`` float32, this rank's rows.
        y: ``(n,)`` int64 labels, or ``(n, k)`` float32 targets for regression.
        batch_size: rows per gradient step on this rank.
        epochs: passes over the window.
        generator: seeds the per-epoch shuffle (and a strategy's sampling).
        strategy: how to learn (memory rows, penalties); :class:`~ddn_ray.strategy.Finetune` if ``None``.
        task: ``classification`` or ``regression``. For regression the error stream ``wrong``
            holds each row's squared error (mean over outputs) and ``pre_accuracy`` is NaN.
        amp: train in mixed precision (:func:`fit`); the scores before and after are in float32.

    Returns:
        A :class:`StepResult`; ``pre_*`` are measured before any update on this window.
    """
    model.eval()
    with torch.no_grad():
        pre_loss_sum, wrong = _window_errors(model(x), y, task)
    strategy = strategy if strategy is not None else Finetune()
    train_loss_sum = fit(model, optimizer, x, y, batch_size, epochs, generator, strategy, task, amp)
    strategy.after_window(_unwrap(model), x, y)
    pre_correct = float(x.shape[0] - wrong.sum()) if task == "classification" else 0.0
    n, pre_loss_sum, pre_correct, train_loss_sum = _all_sum([x.shape[0], pre_loss_sum, pre_correct, train_loss_sum])
    n = max(n, 1.0)
    accuracy = pre_correct / n if task == "classification" else math.nan
    return StepResult(int(n), pre_loss_sum / n, accuracy, train_loss_sum / n, wrong)


def _window_errors(out: torch.Tensor, y: torch.Tensor, task: str) -> tuple[float, torch.Tensor]:
    """``(loss summed over rows, (n,) float32 error per row)`` of a window's outputs: cross-entropy and 1.0 where
    the class is wrong, or for regression the squared error per row (mean over outputs) for both."""
    if task == "regression":
        wrong = ((out - y) ** 2).mean(dim=1)
        return float(wrong.sum()), wrong
    return float(F.cross_entropy(out, y, reduction="sum")), (out.argmax(dim=1) != y).float()


def window_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``model`` on a window, over every rank's rows (a collective when distributed).

    Args:
        model: the unwrapped model (no DDP hooks on an evaluation).
        x: ``(n, num_features)`` float32, this rank's rows.
        y: ``(n,)`` int64 class ids, or ``(n, k)`` float32 targets (loss: squared error; accuracy NaN).
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        loss_sum, wrong = _window_errors(model(x), y, task)
    model.train(was_training)
    correct = float(x.shape[0] - wrong.sum()) if task == "classification" else 0.0
    n, loss_sum, correct = _all_sum([x.shape[0], loss_sum, correct])
    n = max(n, 1.0)
    return loss_sum / n, correct / n if task == "classification" else math.nan


def retrain(
    model: nn.Module,
    params: list[nn.Parameter],
    cfg: TrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    generator: torch.Generator,
    task: str = "classification",
) -> None:
    """Fit ``params`` (others frozen by omission) to ``(x, y)`` with a fresh optimizer of ``cfg``'s kind.

    Args:
        model: the (possibly DDP-wrapped) classifier; every rank calls this with as many rows.
        params: the parameters to update (e.g. the head's).
        x: ``(n, num_features)`` float32; y: ``(n,)`` int64.
    """
    fit(model, make_optimizer(cfg, params), x, y, max(1, cfg.batch_size), epochs, generator, Finetune(), task)


def _replays(s: Strategy) -> list[strategy.Replay]:
    if isinstance(s, strategy.Replay):
        return [s]
    return [r for child in getattr(s, "strategies", []) for r in _replays(child)]


class OnlineLearner:
    """One rank's learner: model, optimizer and schedule, strategy, drift monitor and policy.

    Args:
        model: the classifier, DDP-wrapped or not; it must have ``body`` and ``head`` (see
            :class:`~ddn_ray.models.MLP`).
        fresh: ``fresh(k, classes)`` builds the ``k``-th fresh model (same on every rank) for a reset
            (:func:`ddn_ray.models.fresh`; ``classes`` defaults to the width it was made for).
        train_cfg: the job's ``train`` section.
        strategy_cfg: the job's ``strategy`` section.
        drift_cfg: the job's ``drift`` section.
        policy_cfg: the job's ``policy`` section.
        seed: base seed (this rank's shuffles use ``seed + rank``).
        rank: this worker's rank.
        world: the number of workers.
        feature_names: names of the input columns, for drift signals.
        task: ``classification`` or ``regression`` (see :func:`prequential_step`).
        meta_cfg: the job's ``meta`` section: with ``init: reptile`` a :class:`~ddn_ray.meta.Reptile`
            meta-initialisation learns from every window and a ``reset`` starts from it.
        distill_cfg: the job's ``distill`` section (with ``student``).
        student: the student model to distil (:class:`~ddn_ray.distill.Distiller`); ``None``: no student.
    """

    def __init__(
        self,
        model: nn.Module,
        fresh: Callable[..., nn.Module],
        train_cfg: TrainConfig,
        strategy_cfg: StrategyConfig,
        drift_cfg: DriftConfig,
        policy_cfg: PolicyConfig,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        feature_names: list[str] | None = None,
        task: str = "classification",
        *,
        meta_cfg: MetaConfig | None = None,
        distill_cfg: DistillConfig | None = None,
        student: nn.Module | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.model, self.raw, self.fresh = model, _unwrap(model), fresh
        self.cfg, self.strategy_cfg, self.policy_cfg = train_cfg, strategy_cfg, policy_cfg
        self.rank, self.world, self.seed = rank, world, seed
        self.strategy = strategy.build(strategy_cfg, seed=seed + rank)
        self.optimizer = make_optimizer(train_cfg, self.model.parameters())
        self.scheduler = make_scheduler(train_cfg, self.optimizer)
        self.monitoring = drift_cfg.detector != "none"
        self.monitor = drift.Monitor(
            drift.make(drift_cfg.detector, drift_cfg.params),
            drift_cfg.reference_windows,
            drift_cfg.feature_alpha,
            drift_cfg.correction,
            drift_cfg.mmd_permutations,
            feature_names,
            seed,
        )
        self.policy = policy.build(policy_cfg)
        self.recent: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=policy_cfg.recent_windows)
        self.generator = torch.Generator().manual_seed(seed + rank)
        self.num_resets = 0
        self.meta_cfg = meta_cfg or MetaConfig()
        self.reptile = (
            Reptile(model=self.raw, cfg=self.meta_cfg, loss=self._loss, seed=seed, world=world)
            if self.meta_cfg.init == "reptile"
            else None
        )
        if student is not None and task != "classification":
            raise ValueError("a distilled student is for classification")
        self.distiller = (
            Distiller(student=student, cfg=distill_cfg or DistillConfig(), seed=seed, world=world)
            if student is not None
            else None
        )

    def _loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return task_loss(model, self.task, out, y)

    def _embed(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            embedded: np.ndarray = models.body_of(self.raw)(torch.from_numpy(x).to(self.device)).cpu().numpy()
            return embedded

    def step(
        self, index: int, start: int, end: int, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[WindowMetrics, dict[str, Any] | None]:
        """Test then train on one window; on a drift signal, apply the policy's decision.

        Args:
            index: the window's number.
            start: the window's first offset.
            end: the offset after the window's last row.
            x: ``(n, num_features)`` float32, this rank's rows.
            y: ``(n,)`` int64 class ids (regression: ``(n, k)`` float32 targets).

        Returns:
            The window's metrics, and the drift event (signal, decision, reason) or ``None``.
        """
        t0 = time.perf_counter()
        x, y = x.to(self.device), y.to(self.device)  # the model's device (a Train worker's GPU, or the CPU)
        lr = self.optimizer.param_groups[0]["lr"]
        student_hits = self.distiller.correct(x, y) if self.distiller is not None else 0
        local_batch = max(1, self.cfg.batch_size // self.world)
        res = prequential_step(
            self.model,
            self.optimizer,
            x,
            y,
            local_batch,
            self.cfg.epochs_per_window,
            self.generator,
            self.strategy,
            self.task,
            amp=self.cfg.amp,
        )
        self.scheduler.step()
        self.recent.append((x, y))
        if self.reptile is not None and (index + 1) % self.meta_cfg.every_windows == 0:
            self.reptile.update(x, y)
        event = None
        if self.monitoring:
            wrong = np.concatenate(gather(res.wrong.cpu().numpy(), self.world))
            signal = self.monitor.update(index, start, wrong, x.cpu().numpy(), self._embed)
            if signal is not None:  # every rank saw the same errors, so every rank is here
                decision = self.policy.decide(signal)
                decision, reason = gather((decision, self.policy.reason), self.world)[0]  # rank 0's rules
                self.apply(decision)
                event = {**signal.to_dict(), "decision": decision.value, "reason": reason}
        student_accuracy = math.nan
        if self.distiller is not None:
            student_accuracy = _all_sum([student_hits])[0] / max(res.num_rows, 1) if res.num_rows else math.nan
            if (index + 1) % self.distiller.cfg.every_windows == 0:
                self.distiller.distil(self.raw, *self._recent_rows(), max(1, self.cfg.batch_size // self.world))
        post_loss, post_accuracy = window_scores(self.raw, x, y, self.task)
        metrics = WindowMetrics(
            index,
            start,
            end,
            res.num_rows,
            res.pre_loss,
            res.pre_accuracy,
            res.train_loss,
            time.perf_counter() - t0,
            lr,
            student_accuracy,
            post_loss,
            post_accuracy,
        )
        return metrics, event

    def apply(self, decision: Decision) -> None:
        """Carry out a decision on this rank (every rank must apply the same one)."""
        if decision is Decision.NOOP:
            return
        epochs = self.policy_cfg.retrain_epochs
        if decision is Decision.HEAD:
            retrain(
                self.model,
                list(models.head_of(self.raw).parameters()),
                self.cfg,
                *self._recent_rows(),
                epochs,
                self.generator,
                self.task,
            )
            return
        if decision in (Decision.RESET, Decision.ROLLBACK):
            self._fresh_strategy()
        self.optimizer = make_optimizer(self.cfg, self.model.parameters())  # moments of the old concept go
        self.scheduler = make_scheduler(self.cfg, self.optimizer)
        if decision is Decision.ROLLBACK:
            return
        x, y = self._recent_rows()
        if decision is Decision.RESET:
            self.num_resets += 1
            start = self.reptile.init if self.reptile is not None else self.fresh(self.num_resets).state_dict()
            self.raw.load_state_dict(start)
            for memory in _replays(self.strategy):
                if memory.x is not None:
                    x, y = torch.cat([x, memory.x]), torch.cat([y, memory.y])
        retrain(self.model, list(self.model.parameters()), self.cfg, x, y, epochs, self.generator, self.task)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (the CPU, or a Train worker's GPU): each window is moved there."""
        return next(self.raw.parameters()).device

    @property
    def num_classes(self) -> int:
        """The model's output width (the head's ``out_features``)."""
        return models.head_of(self.raw).out_features

    def grow_outputs(self, num_classes: int) -> bool:
        """New classes were revealed: widen the head (:func:`ddn_ray.models.grow_head`) to ``num_classes`` outputs.

        The optimizer and its schedule restart (the head's parameters are new tensors); a later
        reset builds fresh models of the new width. Only for one worker without DDP and strategies
        that keep no per-parameter state (finetune, replay; the config checks this).

        Returns:
            Whether the head grew.
        """
        if num_classes <= self.num_classes:
            return False
        if exits.num_exits(self.raw) > 1:
            raise ValueError("a multi-exit model cannot grow its outputs: only the head would widen")
        models.grow_head(self.raw, num_classes, self.seed)
        self.optimizer = make_optimizer(self.cfg, self.model.parameters())
        self.scheduler = make_scheduler(self.cfg, self.optimizer)
        old_fresh = self.fresh
        self.fresh = lambda k: old_fresh(k, num_classes)
        return True

    def _recent_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of the last ``recent_windows`` windows: ``(n, num_features)`` float32, ``(n,)`` int64."""
        return torch.cat([r[0] for r in self.recent]), torch.cat([r[1] for r in self.recent])

    def _fresh_strategy(self) -> None:
        """A new strategy (no Fisher anchors or teacher from the old weights), keeping the replay memory."""
        old = self.strategy
        self.strategy = strategy.build(self.strategy_cfg, seed=self.seed + self.rank + 7919 * (self.num_resets + 1))
        for new_r, old_r in zip(_replays(self.strategy), _replays(old)):
            new_r.load_state_dict(old_r.state_dict())

    def rollback(self, weights: Mapping[str, np.ndarray], at_window: int, reason: str) -> dict[str, Any]:
        """Reload the served version's weights (as the controller holds them) after the gate
        rejected an update; return the event to log."""
        models.load_numpy_state(self.raw, weights)
        self.apply(Decision.ROLLBACK)
        return {"window": at_window, "decision": Decision.ROLLBACK.value, "reason": reason}

    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights: optimizer, schedule, strategy, monitor, policy, recent windows, and the
        Reptile meta-initialisation and the distilled student when the job has them."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "strategy": self.strategy.state_dict(),
            "monitor": self.monitor.state_dict(),
            "policy": self.policy.state_dict(),
            "recent": list(self.recent),
            "num_resets": self.num_resets,
            "generator": self.generator.get_state(),
            **({"reptile": self.reptile.state_dict()} if self.reptile is not None else {}),
            **({"distiller": self.distiller.state_dict()} if self.distiller is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.strategy.load_state_dict(state["strategy"])
        self.monitor.load_state_dict(state["monitor"])
        self.policy.load_state_dict(state["policy"])
        self.recent.clear()
        self.recent.extend(state["recent"])
        self.num_resets = state["num_resets"]
        self.generator.set_state(state["generator"])
        if self.reptile is not None and "reptile" in state:  # a checkpoint from before meta.init keeps phi = weights
            self.reptile.load_state_dict(state["reptile"])
        if self.distiller is not None and "distiller" in state:
            self.distiller.load_state_dict(state["distiller"])
