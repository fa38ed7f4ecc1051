"""The long-running service: answer outside clients, learn from the labels they send later.

Two Serve applications, so that ``serve deploy`` or a KubeRay RayService can start the service
with no driver (``clusters/service_config.yaml``):

* ``<serve.app_name>-learner``: one :class:`LearningService` replica. It owns the model versions (the
  controller actor, :mod:`ddn_ray.controller`), the prediction log and the feedback join
  (:class:`~ddn_ray.eventlog.EventLog` under ``<storage_path>/<run_name>/service``) and the Train
  workers (:func:`ddn_ray.train.train_loop_per_worker`, the main job's learner, strategies, drift
  detection and policy). Each window is ``stream.window_size`` joined rows, or what has joined after
  ``service.window_timeout_s``, handed to the workers as object-store blocks; every window is checkpointed
  when ``train.checkpoint_every_windows`` is 1 (the service's configs set it).
* ``<serve.app_name>``: the :class:`~ddn_ray.serve.Predictor` replicas, the HTTP ingress. ``POST /predict``
  with named records answers each row with an ``event_id`` (the id column's value when the request has
  one, else generated) and the model version, and hands the answered rows to the learner's log off the
  request path. The routes here (:data:`ROUTES`) add:

  * ``POST /feedback`` ``[{"event_id": "...", "label": ...}, ...]`` -> ``{"joined": n, "unknown": [...],
    "duplicate": [...], "late": [{"event_id", "reason"}]}`` (404 when no id was known; a label of a class
    the model does not know, or not a finite number for a regression, is a 422 naming ``body[i].label``
    and nothing of the request is joined);
  * ``POST /learn`` ``{"records": [{<features>, <label column>: ..., "event_id": optional}, ...]}``: rows
    whose label comes with them, joined at once;
  * ``GET /stats``: counts, the online accuracy (regression: MSE) of the served answers as their labels
    arrive, the label delay, rows awaiting labels, windows learned.

A restart with the same ``run_name`` and ``storage_path`` (after a stop, or after the learner's replica
died and Serve started another) resumes: the log is rebuilt from its files, the trainer resumes at its
checkpointed offset, the joined rows after it are learned (those a lost window had learned before are
counted in ``trained_again_rows``), and versions continue from the last one recorded.
"""

# No `from __future__ import annotations`: FastAPI must see the real request models on the routes.
import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator
from ray import serve

from ddn_ray import checkpoint as checkpoint_io
from ddn_ray import config, feeds, guard, models, stream, tables, versions
from ddn_ray.eventlog import EventLog, JoinResult
from ddn_ray.guard import ModelFloat, normalise_text
from ddn_ray.records import RecordError
from ddn_ray.serve import Replica, build_app, current_replica, error_detail

__all__ = [
    "ROUTES",
    "Feedback",
    "LearnRequest",
    "LearningService",
    "ServiceAnswer",
    "build_apps",
    "ingress_builder",
    "learner_app_name",
    "learner_builder",
    "service_config",
]

log = logging.getLogger("ray.serve")

Label = Annotated[StrictStr, AfterValidator(normalise_text)] | StrictInt | ModelFloat | StrictBool


class Feedback(BaseModel):
    """One label for one answered row."""

    model_config = ConfigDict(extra="forbid")
    event_id: Annotated[StrictStr, AfterValidator(normalise_text)] = Field(
        min_length=1, max_length=256, description="the event_id of the answer"
    )
    label: Label = Field(description="a class (as data.classes names them), or the target of a regression")


class LearnRequest(BaseModel):
    """Rows with their labels: each record holds the feature columns, the label column (``data.label``) and,
    optionally, an ``event_id`` (a record sent twice with the same id is learned once)."""

    model_config = ConfigDict(extra="forbid")
    records: list[dict[str, Any]] = Field(min_length=1)

    @field_validator("records")
    @classmethod
    def _text_rule(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return guard.check_strings(value, "records")


@dataclass(frozen=True)
class ServiceAnswer:
    """What the learner answers a route with (crosses the handle call): an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


def _join_body(result: JoinResult, retention_s: float) -> dict[str, Any]:
    return {
        "joined": len(result.joined),
        "first_offset": result.first_offset,
        "unknown": result.unknown,
        "duplicate": result.duplicate,
        "late": [
            {"event_id": e, "reason": f"the prediction is older than the retention window ({retention_s:g} s)"}
            for e in result.late
        ],
    }


ROUTES = APIRouter()


@ROUTES.post("/feedback")
async def feedback(
    items: list[Feedback] = Body(...),
    replica: Replica = Depends(current_replica),
) -> JSONResponse:
    """Labels for answered rows, by ``event_id``."""
    if not items:
        raise replica.reject(422, "body: send at least one {event_id, label}")
    replica.check_batch(len(items))
    answer: ServiceAnswer = await replica.service.feedback.remote([i.event_id for i in items], [i.label for i in items])
    return JSONResponse(answer.body, status_code=answer.status)


@ROUTES.post("/learn")
async def learn(request: LearnRequest, replica: Replica = Depends(current_replica)) -> JSONResponse:
    """Rows that come with their labels: joined at once, learned in the next windows."""
    featurizer = replica.featurizer()
    if featurizer is None or featurizer.label is None:
        raise replica.reject(400, "this model takes rows of numbers; /learn takes named records with their label")
    replica.check_batch(len(request.records))
    label, labels, ids, rows = featurizer.label, [], [], []
    for i, rec in enumerate(request.records):
        if label not in rec:
            raise replica.reject(422, f"records[{i}].{label}: the label column is missing")
        eid = rec.get("event_id")
        if eid is not None and (not isinstance(eid, str) or not eid):
            raise replica.reject(422, f"records[{i}].event_id: must be a non-empty string")
        labels.append(rec[label])
        ids.append(eid)
        rows.append({k: v for k, v in rec.items() if k not in (label, "event_id")})
    try:
        parsed, _ = featurizer.read_records(rows)
    except RecordError as exc:
        raise replica.reject(422, str(exc)) from None
    good, reasons = featurizer.check(parsed, labels=False)
    if not good.all():
        raise replica.reject(422, f"records[{int(np.flatnonzero(~good)[0])}]: {reasons[0]}")
    given = None if all(e is None for e in ids) else ids
    if given is not None and any(e is None for e in given):
        raise replica.reject(422, f"records[{given.index(None)}].event_id: give every record an event_id, or none")
    answer: ServiceAnswer = await replica.service.learn.remote(featurizer.record_table(parsed), labels, given)
    return JSONResponse(answer.body, status_code=answer.status)


@ROUTES.get("/stats")
async def stats(replica: Replica = Depends(current_replica)) -> dict[str, Any]:
    """The service's counts and online figures (:meth:`LearningService.stats`)."""
    return await replica.service.stats.remote()


@serve.deployment(
    num_replicas=1, max_ongoing_requests=1000, health_check_period_s=5.0, graceful_shutdown_timeout_s=120.0
)
class LearningService:
    """The service's learner: versions, prediction log, feedback join and the Train workers (module doc).

    Args:
        job: a ``JobConfig`` as a dict (:func:`service_config` checked it): ``data.source`` describes the
            records (its first file gives the column types), ``run_name`` and ``storage_path`` where the
            service keeps its log and checkpoints.

    Raises:
        ValueError: the config is not a service's (no ``data.source`` or no ``run_name``).
    """

    async def __init__(self, job: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits an async constructor
        import ray
        from ray.util.queue import Queue

        from ddn_ray.controller import create_actor
        from ddn_ray.metrics import ServiceMetrics
        from ddn_ray.train import WorkerArgs, make_trainer

        cfg = self.cfg = config.JobConfig.model_validate(job)
        if cfg.data.source is None or not cfg.run_name:
            raise ValueError("the service needs data.source (the records' columns) and a run_name")
        self.featurizer = tables.featurizer_for(cfg.data, cfg.model.task)
        self.run_dir = f"{cfg.storage_uri}/{cfg.run_name}"
        self.events = EventLog(uri=f"{self.run_dir}/service", task=cfg.model.task, retention_s=cfg.service.retention_s)
        self.events.restore()
        self._local = "://" not in self.run_dir
        state = self._read_json("state.json") or {}
        self.learned: list[dict[str, Any]] = self._read_learned()
        self.windows_learned, self.rows_learned, self.rows_quarantined, self.trained_again_rows = 0, 0, 0, 0
        self.quarantine = stream.Quarantine()
        self.metrics = ServiceMetrics()

        restored = None
        if self._local:
            try:
                restored = checkpoint_io.read(str(checkpoint_io.latest(self.run_dir)))
            except FileNotFoundError:
                restored = None
        names, nc = self.featurizer.input_names, self.featurizer.num_classes
        if restored is not None and restored[2].get("preprocessing"):
            self.featurizer.load_state_dict(restored[2]["preprocessing"])
            nc = int(restored[2].get("num_classes", nc))
        last = max(int(state.get("last_version", -1)), restored[0] if restored else -1)
        # a controller left by a learner replica that died: its versions are in the files
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(cfg.controller.name, namespace=cfg.ray.namespace))
        self.controller: Any = create_actor(
            job=cfg, store_uri=f"{self.run_dir}/controller/{versions.attempt_name()}", first_version=last + 1
        )
        spec = checkpoint_io.model_spec(cfg.model, len(names), nc, names, {"kind": "records"}, cfg.distill.student)
        await self.controller.set_model_spec.remote(spec)
        if restored is not None:  # replicas keep answering with the learned weights, not a fresh model
            weights, meta = (
                restored[1],
                {
                    "window": restored[2]["next_window"] - 1,
                    "resumed": True,
                    "trained_end_offset": restored[2]["next_offset"],
                    "num_classes": nc,
                },
            )
        else:
            weights = models.state_to_numpy(models.build(cfg.model, len(names), nc, seed=cfg.train.seed))
            meta = {"window": -1, "trained_end_offset": 0, "num_classes": nc}
        await self.controller.publish.remote(weights, meta, self.featurizer.state_dict())

        workers = cfg.train.num_workers if cfg.service.learn else 0
        self.queues = [Queue(actor_options={"num_cpus": 0}) for _ in range(workers)]
        self._fit_error: BaseException | None = None
        self._fit_thread = threading.Thread(target=lambda: None, daemon=True)
        if cfg.service.learn:
            args = WorkerArgs(
                job=cfg,
                feature_names=names,
                num_classes=nc,
                queues=self.queues,
                controller=self.controller,
                inputs={"kind": "records"},
                checkpoint_at_end=True,
            )
            trainer = make_trainer(args=args, run_name=cfg.run_name)
            self._fit_thread = threading.Thread(target=self._fit, args=(trainer,), daemon=True)
            self._fit_thread.start()
        self.ready: dict[str, Any] | None = None
        self.next_window = 0
        self._stopping = False
        self._drained: dict[str, Any] | None = None
        self._error: str | None = None
        loop = asyncio.get_running_loop()
        self._log_waiters: list[asyncio.Future[None]] = []  # log_answers calls waiting for their rows on disk
        self._learner = loop.create_task(self._learn_forever() if cfg.service.learn else asyncio.sleep(0))
        self._flusher = loop.create_task(self._flush_forever())

    def _fit(self, trainer: Any) -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 (reported by check_health and /stats)
            self._fit_error = exc

    # files ----------------------------------------------------------------
    def _read_json(self, name: str) -> Any:
        try:
            with self.events.fs.open_input_stream(f"{self.events.root}/{name}") as f:
                return json.loads(f.read().decode())
        except (FileNotFoundError, OSError):
            return None

    def _write_json(self, name: str, value: Any) -> None:
        path = f"{self.events.root}/{name}"
        with self.events.fs.open_output_stream(path + ".tmp") as f:
            f.write(json.dumps(value).encode())
        self.events.fs.move(path + ".tmp", path)

    def _read_learned(self) -> list[dict[str, Any]]:
        return list(self._read_json("learned.json") or [])

    # the learning loop ----------------------------------------------------
    async def _learn_forever(self) -> None:
        try:
            while self.ready is None:
                if self._stopping:  # stopped before the trainer started: nothing was taken from the log
                    return
                self.ready = await self.controller.wait_trainer_ready.remote(1.0)
                self._check_trainer()
            self.events.resume_at(self.ready["next_offset"])
            if self.ready.get("preprocessing"):
                self.featurizer.load_state_dict(self.ready["preprocessing"])
            self.next_window = self.ready["next_window"]
            again = [w for w in self.learned if w["end"] > self.ready["next_offset"]]
            self.trained_again_rows = sum(
                w["learned_rows"] for w in again
            )  # learned before the restart, not checkpointed
            self.learned = [w for w in self.learned if w["end"] <= self.ready["next_offset"]]
            size, wait_s = self.cfg.stream.window_size, self.cfg.service.window_timeout_s
            while not self._stopping:
                oldest = self.events.oldest_pending_s()
                if self.events.pending_rows >= size or (oldest is not None and time.time() - oldest >= wait_s):
                    await self._learn_window(size)
                else:
                    await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the service's learning loop stopped")
            self._error = repr(exc)

    def _check_trainer(self) -> None:
        if not self._fit_thread.is_alive():
            raise RuntimeError(f"the trainer stopped: {self._fit_error!r}")

    async def _learn_window(self, size: int) -> None:
        from ddn_ray.handoff import WindowItem, shard_tables

        start, end, rows = self.events.take(size)
        index, f = self.next_window, self.featurizer
        labels = [json.loads(v) for v in rows["label"].to_pylist()]
        table = rows.select([*f.numeric, *f.categorical]).append_column(f.label, pa.array(labels))
        frows = f.rows(table)
        good, reasons = f.check(frows)
        offsets = rows["offset"].to_numpy()
        if not good.all():  # e.g. a class that /feedback took before the classes grew back (a restart)
            self.quarantine.offsets += offsets[~good].tolist()
            self.quarantine.reasons += reasons
            self.rows_quarantined += int((~good).sum())
            frows = frows.filter(good)
        learned_rows = 0
        if len(frows):
            f.update(frows)
            w = stream.Window(index, start, end, offsets[good], f.transform(frows), f.label_ids(frows))
            workers = len(self.queues)
            learned_rows = (len(w) // workers) * workers
            for rank, shard in enumerate(shard_tables(w, workers)):
                await self.queues[rank].put_async(
                    WindowItem.put(
                        index=index,
                        start=start,
                        end=end,
                        rows=shard,
                        preprocessing=f.state_dict(),
                        num_classes=f.num_classes,
                    )
                )
            while (await self.controller.wait_progress.remote(index, 5.0)) < index:
                self._check_trainer()
            self.next_window = index + 1
        version = await self.controller.latest_version.remote()
        self.learned.append(
            {
                "index": index,
                "start": start,
                "end": end,
                "rows": end - start,
                "learned_rows": learned_rows,
                "quarantined": end - start - int(good.sum()),
                "version": version,
                "at_s": time.time(),
            }
        )
        self._write_json("learned.json", self.learned)
        self._write_json("state.json", {"last_version": version})
        self.windows_learned += 1
        self.rows_learned += learned_rows
        self.metrics.window(learned_rows)

    def _flush_log(self) -> None:
        """Write the prediction log (group commit): every :meth:`log_answers` call waiting returns once its rows
        are in a written file; on a failed write they keep waiting for the next one.

        Raises:
            Exception: the write failed (from :meth:`ddn_ray.eventlog.EventLog.flush`).
        """
        waiters, self._log_waiters = self._log_waiters, []
        try:
            self.events.flush()
        except BaseException:
            self._log_waiters = waiters + self._log_waiters
            raise
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.service.log_flush_interval_s)
            try:
                self._flush_log()
            except Exception:
                log.exception("the prediction log could not be written; retrying")
            self.metrics.log_figures(self.events.stats())

    # what the routes call ------------------------------------------------
    async def log_answers(self, rows: Any) -> None:
        """A replica's answered rows (:class:`~ddn_ray.eventlog.AnsweredRows`); returns once they are written to
        the prediction log (the next flush, within ``service.log_flush_interval_s``). A replica hands its rows
        on until this returns, so a row is never acknowledged and then lost with this replica."""
        self.events.add(rows)
        if self._stopping:  # the periodic flush may have ended: write now
            self._flush_log()
            return
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._log_waiters.append(written)
        await written

    def _targets(self, labels: list[Any], where: str) -> tuple[np.ndarray | None, str | None]:
        f = self.featurizer
        if f.task == "regression":
            for i, v in enumerate(labels):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    return None, f"{where}[{i}].label: a regression's target must be a finite number, got {v!r}"
            return np.asarray(labels, np.float64), None
        ids = np.full(len(labels), -1, np.int64)
        lookup = {(type(c) is bool, c): k for k, c in enumerate(f.classes)}
        for i, v in enumerate(labels):
            k = lookup.get((type(v) is bool, v))
            if k is None and not f.allow_new_classes:
                return None, (
                    f"{where}[{i}].label: {v!r} is not one of the classes {f.classes} "
                    "(data.classes; or set data.allow_new_classes)"
                )
            ids[i] = -1 if k is None else k
        return ids, None

    async def feedback(self, event_ids: list[str], labels: list[Any]) -> ServiceAnswer:
        """Join labels to logged answers (``POST /feedback``); nothing is joined when one label is refused."""
        if self._stopping:
            return ServiceAnswer(503, {"detail": "the service is stopping; send the labels again after its restart"})
        targets, error = self._targets(labels, "body")
        if targets is None:
            return ServiceAnswer(422, {"detail": error_detail(str(error))})
        result = self.events.join(event_ids, labels, targets)
        body = _join_body(result, self.cfg.service.retention_s)
        self.metrics.joined(len(result.joined), len(result.late))
        return ServiceAnswer(404 if len(result.unknown) == len(event_ids) else 200, body)

    async def learn(self, features: pa.Table, labels: list[Any], event_ids: list[str] | None) -> ServiceAnswer:
        """Labelled rows sent with their features (``POST /learn``)."""
        if self._stopping:
            return ServiceAnswer(503, {"detail": "the service is stopping; send the rows again after its restart"})
        targets, error = self._targets(labels, "records")
        if targets is None:
            return ServiceAnswer(
                422, {"detail": error_detail(str(error).replace("].label", f"].{self.featurizer.label}"))}
            )
        result = self.events.add_labeled(features, labels, targets, event_ids)
        return ServiceAnswer(200, _join_body(result, self.cfg.service.retention_s))

    async def stats(self) -> dict[str, Any]:
        """Counts and online figures: the log's (:meth:`~ddn_ray.eventlog.EventLog.stats`), the windows learned
        in this run of the learner, the rows learned again after a restart, the served version."""
        return {
            "run_name": self.cfg.run_name,
            "model_version": await self.controller.latest_version.remote(),
            "trainer_ready": self.ready is not None,
            "next_window": self.next_window,
            "windows_learned": self.windows_learned,
            "rows_learned": self.rows_learned,
            "rows_quarantined": self.rows_quarantined,
            "trained_again_rows": self.trained_again_rows,
            "error": self._error or (repr(self._fit_error) if self._fit_error else None),
            **self.events.stats(),
        }

    async def drain(self) -> dict[str, Any]:
        """Stop: finish the window being learned, write the log, end the trainer with a checkpoint of every
        window learned; return the final :meth:`stats` (also written to ``final_stats.json`` beside the log).
        Joined rows not yet learned stay in the joined log for the next start. Idempotent."""
        if self._drained is not None:
            return self._drained
        self._stopping = True
        await asyncio.wait([self._learner], timeout=120.0)
        self._flush_log()
        if self.ready is not None:  # the trainer learned this run's windows: it checkpoints them, then ends
            for q in self.queues:
                await q.put_async(None)
            await asyncio.get_running_loop().run_in_executor(None, self._fit_thread.join, 300.0)
        # else it is still starting and has learned nothing here: Serve's teardown of this replica ends it
        self._flusher.cancel()
        self._drained = await self.stats()
        version = self._drained["model_version"]
        if version is not None:
            self._write_json("state.json", {"last_version": version})
        self._write_json("final_stats.json", self._drained)
        return self._drained

    async def pid(self) -> int:
        """This replica's process id (the tests kill it)."""
        import os

        return os.getpid()

    def check_health(self) -> None:
        """Unhealthy (Serve starts another learner, which resumes from the files) when learning stopped."""
        if self._stopping or not self.cfg.service.learn:
            return
        if self._error is not None:
            raise RuntimeError(f"the learning loop stopped: {self._error}")
        if not self._fit_thread.is_alive():
            raise RuntimeError(f"the trainer stopped: {self._fit_error!r}")

    async def __del__(self) -> None:
        """Serve's graceful shutdown (``serve.delete``, ``serve shutdown``): :meth:`drain` first."""
        try:
            await self.drain()
        except Exception:
            log.exception("the service's drain failed")


def learner_app_name(cfg: config.JobConfig) -> str:
    """The learner's Serve application name: ``<serve.app_name>-learner``."""
    return f"{cfg.serve.app_name}-learner"


def service_config(path: str | None, overrides: dict[str, Any] | None = None) -> config.JobConfig:
    """Load a service config: a job config with ``data.source`` (the records' columns; its first file gives the
    column types) and a ``run_name`` (default ``<table>-service``: a restart with the same name resumes).

    Raises:
        ddn_ray.errors.ConfigError: invalid fields, or no ``data.source``.
    """
    from ddn_ray.errors import ConfigError

    cfg = config.load(path, overrides)
    if cfg.data.source is None:
        raise ConfigError(
            "the service serves a user's records: set data.source (a table with the columns; its "
            "first file gives their types), data.features and data.label"
        )
    if not cfg.run_name:
        cfg = cfg.model_copy(update={"run_name": f"{feeds.source_stem(cfg.data.source)}-service"})
    return cfg


def build_apps(cfg: config.JobConfig) -> tuple[serve.Application, serve.Application]:
    """``(learner, ingress)``: run the learner's application first (its controller is what replicas follow)."""
    f = tables.featurizer_for(cfg.data, cfg.model.task)
    learner = (
        cast(Any, LearningService)
        .options(ray_actor_options={"num_cpus": cfg.service.cpus})
        .bind(cfg.model_dump(mode="json"))
    )
    ingress = build_app(cfg, f.width, f.num_classes, inputs={"kind": "records"}, service_app=learner_app_name(cfg))
    return learner, ingress


class ServiceArgs(BaseModel):
    """The ``args`` of both applications in a Serve config file: the service YAML and overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    config: str = Field(description="the service's YAML, e.g. jobs/configs/service.yaml")
    overrides: dict[str, Any] = Field(default_factory=dict, description="nested fields set on top of it")


def learner_builder(args: dict[str, Any]) -> serve.Application:
    """``import_path: ddn_ray.service:learner_builder`` (application ``<serve.app_name>-learner``)."""
    a = ServiceArgs(**args)
    return build_apps(service_config(a.config, a.overrides))[0]


def ingress_builder(args: dict[str, Any]) -> serve.Application:
    """``import_path: ddn_ray.service:ingress_builder`` (application ``<serve.app_name>``, after the learner)."""
    a = ServiceArgs(**args)
    return build_apps(service_config(a.config, a.overrides))[1]
