"""The streaming train loop: per window, test then train (prequential), publish, checkpoint.

:func:`prequential_step` is plain PyTorch (unit-tested without Ray);
:func:`train_loop_per_worker` is the Ray Train v2 loop that runs it on every worker,
taking each window as a Ray Dataset shard from a per-rank queue, publishing weights
to the controller every ``publish_every_windows`` windows and reporting a checkpoint
every ``checkpoint_every_windows`` windows.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddn_ray.config import TrainConfig
from ddn_ray.strategy import Finetune, Strategy

__all__ = [
    "WindowItem",
    "WindowMetrics",
    "make_optimizer",
    "prequential_step",
    "replay_in_process",
    "train_loop_per_worker",
]

FEATURES = "features"
LABEL = "label"


@dataclass(frozen=True)
class WindowItem:
    """One window handed to one worker: its shard of rows as a Ray Dataset.

    Attributes:
        index: window number in the stream, from 0.
        start: offset of the window's first row (inclusive).
        end: offset one past its last row (exclusive).
        dataset: this rank's ``ray.data.Dataset`` with columns ``features``
            (fixed-size list of float32) and ``label`` (int64).
    """

    index: int
    start: int
    end: int
    dataset: Any


@dataclass(frozen=True)
class WindowMetrics:
    """What one prequential step measured, summed over all workers.

    Attributes:
        index, start, end: the window.
        num_rows: rows trained on (all workers).
        pre_loss: mean cross-entropy of the model *before* it learned this window.
        pre_accuracy: accuracy of the model before it learned this window.
        train_loss: mean training loss over the window's last epoch.
        step_s: wall time of the step in seconds.
    """

    index: int
    start: int
    end: int
    num_rows: int
    pre_loss: float
    pre_accuracy: float
    train_loss: float
    step_s: float


def make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """Build the optimizer ``cfg.optimizer`` names (sgd, adam, adamw, rmsprop)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _all_sum(values: list[float]) -> list[float]:
    """Sum values over the DDP process group (identity when not distributed)."""
    t = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def prequential_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    strategy: Strategy | None = None,
) -> tuple[float, float, float, float]:
    """Score the model on a window, then learn from it (test-then-train).

    Every rank must call this with the same number of rows so DDP's collectives match.

    Args:
        model: the (possibly DDP-wrapped) classifier.
        optimizer: its optimizer.
        x: ``(n, num_features)`` float32, this rank's rows.
        y: ``(n,)`` int64 labels.
        batch_size: rows per gradient step on this rank.
        epochs: passes over the window.
        generator: seeds the per-epoch shuffle (and a strategy's sampling).
        strategy: how to learn (memory rows, penalties); :class:`~ddn_ray.strategy.Finetune` if ``None``.

    Returns:
        ``(num_rows, pre_loss, pre_accuracy, train_loss)`` summed/averaged over all ranks;
        ``pre_*`` are measured before any update on this window.
    """
    model.eval()
    with torch.no_grad():
        logits = model(x)
        pre_loss_sum = float(F.cross_entropy(logits, y, reduction="sum"))
        pre_correct = float((logits.argmax(dim=1) == y).sum())
    strategy = strategy if strategy is not None else Finetune()
    raw = model.module if hasattr(model, "module") else model  # penalties read the unwrapped parameters
    model.train()
    train_loss_sum = 0.0
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        train_loss_sum = 0.0
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            xb, yb = strategy.batch(x[idx], y[idx], generator)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb) + strategy.penalty(raw, xb, logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_loss_sum += float(loss.detach()) * idx.shape[0]
    strategy.after_window(raw, x, y)
    n, pre_loss_sum, pre_correct, train_loss_sum = _all_sum([x.shape[0], pre_loss_sum, pre_correct, train_loss_sum])
    n = max(n, 1.0)
    return int(n), pre_loss_sum / n, pre_correct / n, train_loss_sum / n


def _window_tensors(item: WindowItem) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [b for b in item.dataset.iter_torch_batches(batch_size=None, dtypes={FEATURES: torch.float32, LABEL: torch.int64})]
    if not rows:
        return torch.zeros((0, 0)), torch.zeros((0,), dtype=torch.int64)
    return torch.cat([b[FEATURES] for b in rows]), torch.cat([b[LABEL] for b in rows])


def _gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (a collective: all ranks must call it)."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop (Train v2). Runs on every worker until it reads the end-of-stream marker.

    ``config`` keys: ``train`` (TrainConfig as dict), ``model`` (ModelConfig as dict),
    ``strategy`` (StrategyConfig as dict),
    ``num_features``, ``num_classes``, ``queues`` (one ``ray.util.queue.Queue`` per rank,
    yielding :class:`WindowItem` and finally ``None``), ``controller`` (actor handle).

    Resumes from ``ray.train.get_checkpoint()`` when there is one: weights, optimizer,
    every rank's strategy state, stream offset, window index and model version;
    otherwise starts from the controller's latest version. Rank 0 tells the controller where it resumes
    (``trainer_ready``) so the stream starts there.
    """
    import ray
    import ray.train
    import ray.train.torch
    from ray.data import DataContext

    from ddn_ray import models, strategy
    from ddn_ray.config import ModelConfig, StrategyConfig

    torch.set_num_threads(1)
    ctx_data = DataContext.get_current()
    ctx_data.enable_progress_bars = False
    ctx_data.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    cfg = TrainConfig(**config["train"])
    controller = config["controller"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    queue = config["queues"][rank]

    model = models.build(ModelConfig(**config["model"]), config["num_features"], config["num_classes"], seed=cfg.seed)
    learner = strategy.build(StrategyConfig(**config["strategy"]), seed=cfg.seed + rank)
    optimizer_state = None
    next_offset, next_index, version = 0, 0, None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False)
            meta = json.loads((Path(d) / "meta.json").read_text())
        model.load_state_dict(state["model"])
        optimizer_state = state["optimizer"]
        saved = state["strategy"]  # one state per rank; more ranks than saved reuse the last one
        learner.load_state_dict(saved[min(rank, len(saved) - 1)])
        next_offset, next_index, version = meta["next_offset"], meta["next_window"], meta["model_version"]
    else:
        version, weights = ray.get(controller.latest_weights.remote())
        models.load_numpy_state(model, weights)
    model = ray.train.torch.prepare_model(model)
    raw_model = model.module if hasattr(model, "module") else model
    optimizer = make_optimizer(cfg, model.parameters())
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if rank == 0:
        if ckpt is not None:  # serve the restored weights, not the job's fresh initial version
            meta = {"window": next_index - 1, "trained_end_offset": next_offset, "parent": version, "resumed": True}
            version = ray.get(controller.publish.remote(models.state_to_numpy(raw_model), meta))["version"]
        ray.get(controller.trainer_ready.remote(next_offset, next_index, version))
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    local_batch = max(1, cfg.batch_size // world)

    while True:
        item: WindowItem | None = queue.get()
        if item is None:
            break
        t0 = time.perf_counter()
        x, y = _window_tensors(item)
        n, pre_loss, pre_acc, train_loss = prequential_step(
            model, optimizer, x, y, local_batch, cfg.epochs_per_window, gen, learner
        )
        metrics = WindowMetrics(item.index, item.start, item.end, n, pre_loss, pre_acc, train_loss, time.perf_counter() - t0)
        next_offset, next_index = item.end, item.index + 1
        if rank == 0 and next_index % cfg.publish_every_windows == 0:
            meta = {"window": item.index, "trained_end_offset": item.end, "pre_accuracy": pre_acc, "parent": version}
            result = ray.get(controller.publish.remote(models.state_to_numpy(raw_model), meta))
            version = result["version"] if result["accepted"] else version
        checkpoint = None
        tmp = None
        if next_index % cfg.checkpoint_every_windows == 0:
            tmp = tempfile.TemporaryDirectory()
            strategy_states = _gather(learner.state_dict(), world)  # each rank's memory / Fisher / teacher
            if rank == 0:
                state = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "strategy": strategy_states}
                torch.save(state, Path(tmp.name) / "state.pt")
                meta = {"next_offset": next_offset, "next_window": next_index, "model_version": version}
                (Path(tmp.name) / "meta.json").write_text(json.dumps(meta))
                checkpoint = ray.train.Checkpoint.from_directory(tmp.name)
        if rank == 0:
            ray.get(controller.trainer_progress.remote(asdict(metrics)))
        if tmp is not None:
            ray.train.report({"next_offset": next_offset, "pre_accuracy": pre_acc}, checkpoint=checkpoint)
            tmp.cleanup()


def replay_in_process(cfg: Any, table: Any) -> tuple[np.ndarray, np.ndarray]:
    """The main job's learning protocol in one process, without Ray or HTTP.

    Window ``w`` is predicted by the model trained on windows ``0..w-1`` (what the
    served model is with ``max_lag_windows=0``, ``publish_every_windows=1`` and one
    worker), then learned with :func:`prequential_step`. Seeds, row order and batch
    shuffles are those of the Ray job, so its served predictions should agree row for row.

    Args:
        cfg: a ``JobConfig``.
        table: a :class:`ddn_ray.datasets.Table`.

    Returns:
        ``(predictions, window_index)``: both ``(num_valid_rows,)`` int64, in stream order.
    """
    from ddn_ray import models, strategy, stream

    nf, nc = table.features.shape[1], table.num_classes
    model = models.build(cfg.model, nf, nc, seed=cfg.train.seed)
    learner = strategy.build(cfg.strategy, seed=cfg.train.seed)
    optimizer = make_optimizer(cfg.train, model.parameters())
    gen = torch.Generator().manual_seed(cfg.train.seed)
    preds, windows = [], []
    for w in stream.ReplaySource(table, cfg.stream.window_size):
        x, y = torch.from_numpy(w.features), torch.from_numpy(w.labels)
        model.eval()
        with torch.no_grad():
            preds.append(model(x).argmax(1).numpy())
        windows.append(np.full(len(w), w.index))
        prequential_step(model, optimizer, x, y, cfg.train.batch_size, cfg.train.epochs_per_window, gen, learner)
    return np.concatenate(preds), np.concatenate(windows)
