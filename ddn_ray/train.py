"""The streaming train loop: per window, test then train (prequential), publish, checkpoint.

The learning itself is plain PyTorch in :mod:`ddn_ray.learner` (unit-tested without Ray);
:func:`train_loop_per_worker` is the Ray Train v2 loop that runs it on every worker,
taking each window as an Arrow block (object store) from a per-rank queue, publishing weights
to the controller every ``publish_every_windows`` windows, logging drift decisions
with it, and reporting a checkpoint every ``checkpoint_every_windows`` windows.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ddn_ray import checkpoint as checkpoint_io
from ddn_ray import devices
from ddn_ray.config import JobConfig
from ddn_ray.handoff import WindowItem  # what the queues carry, defined where importing it costs no torch
from ddn_ray.learner import OnlineLearner, WindowMetrics, gather, make_optimizer, prequential_step

__all__ = [
    "InProcessRun",
    "WindowMetrics",
    "WindowSender",
    "WorkerArgs",
    "build_learner",
    "in_process_learner",
    "make_optimizer",
    "prequential_step",
    "replay_in_process",
    "train_loop_per_worker",
]

log = logging.getLogger(__name__)


class WindowSender:
    """The driver's side of the queues to the Train workers: sends each window's shards, and after a restart of the
    worker group (Train's ``FailureConfig``) sends again every window since the checkpoint it resumed from.

    A watcher thread long-polls the controller for a new trainer generation
    (:meth:`ddn_ray.controller.ControllerActor.wait_trainer_restart`). On one, under the same lock as
    :meth:`send`, it empties the queues (what the dead group left unread), then queues the kept windows from the
    checkpoint's ``next_window`` on, stamped with the new generation; the new group skips anything older. The
    order of windows and their offsets stay those of the stream.

    Args:
        queues: one ``ray.util.queue.Queue`` per rank.
        controller: the controller actor's handle.
        keep_windows: at least this many windows are kept to send again (the checkpoint interval and the
            training lag, with a margin).
        keep_s: and every window sent in the last ``keep_s`` seconds: Train registers a reported checkpoint at
            its next poll of the workers (``train.health_check_interval_s``), and uploads it in the background,
            so a restart may resume from the one before the newest.
        poll_s: the watcher's long-poll timeout, in seconds.

    Attributes:
        restarts: one entry per restart: ``{"generation", "next_window", "resent": [window indices sent again]}``.
    """

    def __init__(
        self, *, queues: list[Any], controller: Any, keep_windows: int, keep_s: float = 30.0, poll_s: float = 2.0
    ) -> None:
        self.queues, self.controller, self.poll_s = queues, controller, poll_s
        self.keep_windows, self.keep_s = keep_windows, keep_s
        self.kept: collections.deque[list[WindowItem]] = collections.deque()
        self._sent_s: collections.deque[float] = collections.deque()
        self.generation = 0
        self.restarts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._puts: list[Any] = []  # queue puts not yet known to have landed
        self._ended = False
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="window-sender", daemon=True)
        self._watcher.start()

    def send(self, shards: list[WindowItem]) -> None:
        """Queue one window: ``shards[r]`` to rank ``r``."""
        with self._lock:
            stamped = [replace(s, generation=self.generation) for s in shards]
            now = time.monotonic()
            self.kept.append(stamped)
            self._sent_s.append(now)
            while len(self.kept) > self.keep_windows and now - self._sent_s[0] > self.keep_s:
                self.kept.popleft()
                self._sent_s.popleft()
            self._put(stamped)

    def _put(self, items: Sequence[WindowItem | None]) -> None:
        """``items[r]`` to rank ``r``'s queue without waiting for the queue actor's reply (one round trip less on
        the stream's path; calls from one thread reach an actor in order). A put that failed raises here at the
        next call, or in :meth:`end`. Call under the lock."""
        import ray

        done, self._puts = ray.wait(self._puts, num_returns=len(self._puts), timeout=0) if self._puts else ([], [])
        ray.get(done)
        # the queues are unbounded: a put never waits for room
        self._puts.extend(queue.actor.put.remote(item, None) for queue, item in zip(self.queues, items))

    def _landed(self) -> None:
        """Wait for every put so far (raises what one raised). Call under the lock."""
        import ray

        ray.get(self._puts)
        self._puts = []

    def end(self) -> None:
        """Queue the end-of-stream marker (again after a restart that comes later, with the windows it needs)."""
        with self._lock:
            self._ended = True
            self._put([None] * len(self.queues))
            self._landed()

    def close(self) -> None:
        """Stop watching for restarts (once the trainer's ``fit`` returned)."""
        self._stop.set()
        self._watcher.join(timeout=2 * self.poll_s)

    def _watch(self) -> None:
        import ray

        while not self._stop.is_set():
            try:
                ready = ray.get(self.controller.wait_trainer_restart.remote(self.generation, self.poll_s))
            except Exception:  # noqa: BLE001 (the controller is gone: the stream loop reports it)
                return
            if ready is not None:
                self._resend(int(ready["generation"]), int(ready["next_window"]))

    def _resend(self, generation: int, next_window: int) -> None:
        with self._lock:
            from ray.util.queue import Empty

            self._landed()
            for queue in self.queues:  # what the dead group left unread (its successor may be reading too)
                with contextlib.suppress(Empty):
                    while queue.qsize():
                        queue.get_nowait()
            self.generation = generation
            again = [w for w in self.kept if w[0].index >= next_window]
            if self.kept and self.kept[0][0].index > next_window:
                log.error("windows from %d to %d are no longer kept to send again", next_window, self.kept[0][0].index)
            for shards in again:
                for queue, item in zip(self.queues, shards):
                    queue.put(replace(item, generation=generation))
            if self._ended:  # the stream ended before the restart: the new group needs the marker too
                for queue in self.queues:
                    queue.put(None)
            self.restarts.append(
                {"generation": generation, "next_window": next_window, "resent": [w[0].index for w in again]}
            )
            log.warning(
                "the Train worker group restarted from window %d; %d windows sent again", next_window, len(again)
            )


@dataclass(frozen=True)
class WorkerArgs:
    """What every Train worker gets (``train_loop_config={"args": WorkerArgs(...)}``).

    Attributes:
        job: the validated job config.
        feature_names: the model's input columns.
        num_classes: the output width at the start (a checkpoint's own width wins on resume).
        queues: one ``ray.util.queue.Queue`` per rank, yielding :class:`WindowItem` and finally ``None``.
        controller: the controller actor's handle.
        inputs: the raw-input spec Serve featurizes requests with (``checkpoint.model_spec``).
        checkpoint_at_end: at the end-of-stream marker, report a checkpoint of the windows learned since the
            last one (the service's stop: a restart then learns no window twice).
    """

    job: JobConfig
    feature_names: list[str]
    num_classes: int
    queues: list[Any]
    controller: Any
    inputs: dict[str, Any] | None = None
    checkpoint_at_end: bool = False

    @property
    def num_features(self) -> int:
        return len(self.feature_names)


def make_trainer(*, args: WorkerArgs, run_name: str, max_failures: int | None = None) -> Any:
    """The ``TorchTrainer`` that runs :func:`train_loop_per_worker` with ``args`` for ``args.job``.

    Its workers (``train.num_workers``, ``train.cpus_per_worker`` CPUs each, a GPU each with ``train.use_gpu``) use
    NCCL where torch has CUDA and Gloo otherwise (:func:`ddn_ray.devices.torch_backend`); checkpoints go to
    ``storage_uri/run_name``, the newest ``train.checkpoints_to_keep`` kept. Sets ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``
    to ``train.health_check_interval_s`` unless it is exported already: Train propagates it from the driver to its
    controller when ``fit`` starts, and the controller takes one reported checkpoint per poll of the workers.

    Args:
        args: what every worker gets.
        run_name: the run's name under ``job.storage_uri`` (the same name resumes from its latest checkpoint).
        max_failures: restarts of the worker group after a worker dies (``FailureConfig``); ``None``: Train's default.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    job = args.job
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(job.train.health_check_interval_s))
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"args": args},
        scaling_config=ScalingConfig(
            num_workers=job.train.num_workers,
            use_gpu=job.train.use_gpu,
            resources_per_worker={"CPU": job.train.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend=devices.torch_backend(job.train.use_gpu)),
        run_config=RunConfig(
            storage_path=job.storage_uri,
            name=run_name,
            checkpoint_config=CheckpointConfig(num_to_keep=job.train.checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=max_failures) if max_failures is not None else None,
        ),
    )


def _window_tensors(item: WindowItem, label_dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
    """The window's rows as ``(x (n, d) float32, y (n,) label_dtype or (n, k) float32)``, on the CPU."""
    from ddn_ray import stream

    rows = item.rows()
    if not rows.num_rows:
        return torch.zeros((0, 0)), torch.zeros((0,), dtype=torch.int64)
    x, y = stream.from_arrow(rows)
    return torch.from_numpy(x), torch.from_numpy(y).to(label_dtype)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop (Train v2). Runs on every worker until it reads the end-of-stream marker.

    ``config["args"]`` is a :class:`WorkerArgs`.

    Resumes from ``ray.train.get_checkpoint()`` when there is one: weights, and every
    rank's learner state (optimizer, schedule, strategy, detector, policy), stream offset, window index,
    model version and featurizer state; otherwise starts from the controller's latest version. Rank 0
    tells the controller where it resumes (``trainer_ready``, with the checkpoint's featurizer state)
    so the stream starts there. Each version is published with the featurizer state of the last
    window it learned, and a window that needs more outputs widens the head first.
    """
    import ray
    import ray.train
    import ray.train.torch
    from ray.data import DataContext
    from ray.train import CheckpointUploadMode

    from ddn_ray import models
    from ddn_ray.controller import publish_args

    torch.set_num_threads(1)
    ctx_data = DataContext.get_current()
    ctx_data.enable_progress_bars = False
    ctx_data.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    args: WorkerArgs = config["args"]
    job, controller = args.job, args.controller
    cfg, mcfg, nf, nc = job.train, job.model, args.num_features, args.num_classes
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    queue = args.queues[rank]

    next_offset, next_index, version, state, preprocessing, generation = 0, 0, None, None, None, 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / checkpoint_io.STATE, weights_only=False)
            meta = checkpoint_io.read_meta(d)
        nc = int(meta.get("num_classes", nc))  # the head may have grown before the checkpoint
        model = models.build(mcfg, nf, nc, seed=cfg.seed)
        model.load_state_dict(state["model"])
        next_offset, next_index, version = meta["next_offset"], meta["next_window"], meta["model_version"]
        preprocessing = meta.get("preprocessing")
    else:
        model = models.build(mcfg, nf, nc, seed=cfg.seed)
        version, weights = ray.get(controller.latest_weights.remote())
        models.load_numpy_state(model, weights)
    # the GPU Ray assigned this worker (train.use_gpu) when torch can use it, else the CPU (one warning)
    device = devices.assigned_device(train=True)
    model = ray.train.torch.prepare_model(model, move_to_device=device)
    learner = build_learner(job, model, args.feature_names, nc, rank=rank, world=world)
    if learner.distiller is not None:
        learner.distiller.student.to(device)
    if state is not None:
        saved = state["learner"]  # one state per rank; more ranks than saved reuse the last one
        learner.load_state_dict(saved[min(rank, len(saved) - 1)])
    if rank == 0:
        latest = ray.get(controller.latest_version.remote()) if ckpt is not None else None
        # a resumed run: serve the restored weights, not the job's fresh initial version; a restarted worker group
        # (FailureConfig) finds newer versions in the controller, which replicas keep serving while it catches up
        if ckpt is not None and (latest is None or version is None or latest < version):
            meta = {
                "window": next_index - 1,
                "trained_end_offset": next_offset,
                "parent": version,
                "resumed": True,
                "num_classes": learner.num_classes,
            }
            version = ray.get(controller.publish.remote(models.state_to_numpy(learner.raw), meta, preprocessing))[
                "version"
            ]
        generation = ray.get(
            controller.trainer_ready.remote(
                next_offset,
                next_index,
                version,
                preprocessing,
                pid=os.getpid(),
                device={"device": str(device), "gpu_ids": [str(i) for i in ray.get_gpu_ids()]},
            )
        )
    generation = gather(generation if rank == 0 else None, world)[0]  # every rank skips the same stale windows

    upload = CheckpointUploadMode.ASYNC if cfg.checkpoint_upload == "async" else CheckpointUploadMode.SYNC

    def report_checkpoint(metrics: dict[str, Any]) -> None:
        """Every rank: gather the learner states; rank 0 writes the checkpoint; all report it. With
        ``train.checkpoint_upload: async`` Train uploads it on its own thread (``CheckpointUploadMode.ASYNC``): the
        next window is learned meanwhile, and the checkpoints land in order. Train deletes the local copy."""
        learner_states = gather(learner.state_dict(), world)  # each rank's memory / Fisher / detector
        checkpoint = None
        if rank == 0:
            tmp = tempfile.mkdtemp(prefix="ddn-ray-ckpt-")
            meta = {
                "next_offset": next_offset,
                "next_window": next_index,
                "model_version": version,
                **checkpoint_io.model_spec(
                    mcfg, nf, learner.num_classes, args.feature_names, args.inputs, job.distill.student
                ),
                "preprocessing": preprocessing,
            }
            checkpoint_io.write(tmp, learner.raw.state_dict(), learner_states, meta)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(
            metrics, checkpoint=checkpoint, checkpoint_upload_mode=upload, delete_local_checkpoint_after_upload=True
        )

    checkpointed_index = next_index
    while True:
        item: WindowItem | None = queue.get()
        if item is not None and item.generation < generation:
            continue  # queued for the worker group before a restart: sent again from the checkpoint on
        if item is None:
            if args.checkpoint_at_end and next_index != checkpointed_index:
                report_checkpoint({"next_offset": next_offset, "pre_accuracy": float("nan")})
            break
        if item.num_classes is not None:
            learner.grow_outputs(item.num_classes)
        preprocessing = item.preprocessing if item.preprocessing is not None else preprocessing
        x, y = _window_tensors(item, torch.float32 if mcfg.task == "regression" else torch.int64)
        metrics, event = learner.step(item.index, item.start, item.end, x, y)
        events = [event] if event is not None else []
        next_offset, next_index = item.end, item.index + 1
        # the window's metrics go to the controller before the checkpoint (which takes 0.3-0.7 s through Train's
        # storage): the driver serves the next window meanwhile, and it waits in the queue (benchmarks/job_vs_learner)
        reported = rank != 0
        if next_index % cfg.publish_every_windows == 0:
            rejected = None
            if rank == 0:
                meta = {
                    "window": item.index,
                    "trained_end_offset": item.end,
                    "pre_accuracy": metrics.pre_accuracy,
                    "pre_loss": metrics.pre_loss,  # the served version's, and the update's after the window
                    "post_loss": metrics.post_loss,  # learned: the controller's quality gate reads them
                    "post_accuracy": metrics.post_accuracy,
                    "parent": version,
                    "generation": generation,  # with window and parent: a retried publish is known as one
                    "decision": event["decision"] if event else None,
                    "num_classes": learner.num_classes,
                }
                student = None
                if learner.distiller is not None:  # the controller serves it while it is close enough
                    meta |= {"teacher_accuracy": metrics.pre_accuracy, "student_accuracy": metrics.student_pre_accuracy}
                    student = models.state_to_numpy(learner.distiller.student)
                # with an accepted version, the window's progress is recorded in the same call
                progress = {**asdict(metrics), "generation": generation, "events": events}
                weights = publish_args(models.state_to_numpy(learner.raw))  # large: the object replicas read
                result = ray.get(controller.publish.remote(weights, meta, preprocessing, student, progress))
                reported = result["accepted"]
                version = result["version"] if result["accepted"] else version
                rejected = None if result["accepted"] else result["decision"]
            rejected = gather(rejected, world)[0]
            # superseded: an operator rolled back (ddn-ray rollback); learning goes on from the rolled-back weights
            if rejected is not None and (learner.policy_cfg.rollback_on_reject or rejected == "reject_superseded"):
                version, weights = ray.get(controller.latest_weights.remote())
                events.append(
                    learner.rollback(
                        weights, item.index, f"gate rejected the update ({rejected}); reloaded version {version}"
                    )
                )
        if not reported:
            ray.get(controller.trainer_progress.remote({**asdict(metrics), "generation": generation, "events": events}))
        if next_index % cfg.checkpoint_every_windows == 0:
            report_checkpoint({"next_offset": next_offset, "pre_accuracy": metrics.pre_accuracy})
            checkpointed_index = next_index


class InProcessRun(NamedTuple):
    """What :func:`replay_in_process` returns.

    Attributes:
        predictions: ``(num_rows,)`` int64 (regression: ``(num_rows, k)`` float32), each row predicted before its window was learned.
        windows: ``(num_rows,)`` int64 window index of each row.
        metrics: one :class:`~ddn_ray.learner.WindowMetrics` per learned window.
        events: drift events (signal, decision, reason), as the job's report lists them.
    """

    predictions: np.ndarray
    windows: np.ndarray
    metrics: list[WindowMetrics]
    events: list[dict[str, Any]]


def build_learner(
    job: JobConfig, model: torch.nn.Module, feature_names: list[str], num_classes: int, rank: int = 0, world: int = 1
) -> OnlineLearner:
    """The :class:`~ddn_ray.learner.OnlineLearner` of ``job`` for ``model`` (DDP-wrapped or not) on one rank, with
    its fresh-model factory, Reptile meta-initialisation and distilled student (``job.meta``, ``job.distill``)."""
    from ddn_ray import models

    nf, seed = len(feature_names), job.train.seed
    student = job.distill.student
    return OnlineLearner(
        model,
        models.fresh(job.model, nf, num_classes, seed),
        job.train,
        job.strategy,
        job.drift,
        job.policy,
        seed,
        rank,
        world,
        feature_names,
        job.model.task,
        meta_cfg=job.meta,
        distill_cfg=job.distill,
        student=models.build(student, nf, num_classes, seed=seed + 1) if student is not None else None,
    )


def in_process_learner(cfg: Any, feature_names: list[str], num_classes: int) -> OnlineLearner:
    """A one-process (no DDP) learner for a ``JobConfig``, seeded as the job's rank 0:
    what :func:`replay_in_process` and the Tune trials of :mod:`ddn_ray.sweep` learn with."""
    from ddn_ray import models

    model = models.build(cfg.model, len(feature_names), num_classes, seed=cfg.train.seed)
    return build_learner(cfg, model, feature_names, num_classes)


def replay_in_process(cfg: Any, table: Any, freeze_after: int | None = None) -> InProcessRun:
    """The main job's learning protocol in one process, without Ray or HTTP.

    Window ``w`` is predicted by the model trained on windows ``0..w-1`` (what the
    served model is with ``max_lag_windows=0``, ``publish_every_windows=1`` and one
    worker), then learned by the same :class:`~ddn_ray.learner.OnlineLearner` as the
    job's workers, drift monitor and policy included. Seeds, row order and batch
    shuffles are those of the Ray job, so its served predictions should agree row for row.

    Args:
        cfg: a ``JobConfig``.
        table: a :class:`ddn_ray.stream.Table`.
        freeze_after: learn only the first this many windows, then predict with the
            frozen model (the static baseline); ``None`` learns them all.

    Returns:
        An :class:`InProcessRun`, rows in stream order.
    """
    from ddn_ray import exits, stream

    lag = cfg.stream.last_label_feature
    learner = in_process_learner(cfg, stream.input_names(table.feature_names, lag), table.num_classes)
    model = learner.model
    preds, windows, metrics, events = [], [], [], []
    for w in stream.iter_windows(stream.ReplaySource(table, cfg.stream.window_size), lag):
        x, y = torch.from_numpy(w.features), torch.from_numpy(w.labels)
        model.eval()
        if cfg.model.task == "regression":
            with torch.no_grad():
                preds.append(model(x).numpy())
        else:  # as a replica answers: each row from its early exit (the head, for a model with one exit)
            out, _ = exits.early_exit(model, x, cfg.model.exit_threshold, cfg.model.exit_criterion)
            preds.append(out.argmax(1).numpy())
        windows.append(np.full(len(w), w.index))
        if freeze_after is None or w.index < freeze_after:
            m, event = learner.step(w.index, w.start, w.end, x, y)
            metrics.append(m)
            events += [event] if event is not None else []
    return InProcessRun(np.concatenate(preds), np.concatenate(windows), metrics, events)
