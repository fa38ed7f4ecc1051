"""The Serve application: the FastAPI app every replica serves (``/predict``, ``/version``, ``/schema``, a use
case's routes, ``?min_version`` on each), the :class:`Predictor` deployment and its builders."""

# No `from __future__ import annotations` here: FastAPI must see the real request model
# type on the route methods, or it reads `request` as a query parameter.
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, cast

import numpy as np
import torch
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from ddn_ray import checkpoint as checkpoint_io
from ddn_ray import devices, exits, guard, models, registry
from ddn_ray.client import HOLD_TIMING
from ddn_ray.config import JobConfig, ModelConfig
from ddn_ray.features import Featurizer
from ddn_ray.metrics import ReplicaMetrics
from ddn_ray.records import RecordError
from ddn_ray.serve.routes import InputRoutes, Served, current_replica
from ddn_ray.serve.schemas import (
    PredictRequest,
    PredictResponse,
    RecordsResponse,
    ValuesResponse,
    check_instances,
    http_error,
)

__all__ = ["AppArgs", "Predictor", "app_builder", "build_app"]

log = logging.getLogger("ray.serve")


async def _hold_request(
    response: Response,
    min_version: int | None = Query(
        None,
        ge=0,
        description="answer with this model version or a newer one: the replica holds the request until it serves "
        "it (read your own update), at most serve.version_wait_s; then it answers with the version it serves, "
        "which model_version names",
    ),
    min_window: int | None = Query(
        None,
        ge=0,
        description="answer once the trainer has finished window w (the stream's windows, from 0), from the version "
        "that made, or a newer one: the replica holds the request until it knows, at most serve.version_wait_s",
    ),
) -> None:
    """Every route's ``?min_version=v``: wait until this replica serves version ``v`` or newer; ``?min_window=w``:
    until it knows that the trainer finished window ``w`` (:meth:`Predictor.wait_learned`). The answer says how
    long it was held, in milliseconds: ``Server-Timing: hold;dur=12.5`` (W3C Server Timing)."""
    if min_version is None and min_window is None:
        return
    t0 = time.perf_counter()
    if min_version is not None:
        await current_replica().wait_version(min_version)
    if min_window is not None:
        await current_replica().wait_learned(min_window)
    response.headers["Server-Timing"] = f"{HOLD_TIMING};dur={1e3 * (time.perf_counter() - t0):.3f}"


app = FastAPI(title="ddn_ray inference", dependencies=[Depends(_hold_request)])
_metrics: "ReplicaMetrics | None" = None  # this replica's (one replica per worker process)
# (auth token, body limit in bytes) of this process's replica, read by the guard at each request
_guard_settings: tuple[str | None, int] = (None, 8 << 20)


def _count_refusal(status: int) -> None:
    if _metrics is not None:
        _metrics.request(status)


app.add_middleware(guard.RequestGuard, settings=lambda: _guard_settings, on_refusal=_count_refusal)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field. The offending input is not echoed: NaN is not valid JSON."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    if _metrics is not None:
        _metrics.request(422)
    return JSONResponse(status_code=422, content={"detail": detail})


def _record_schema(featurizer: Featurizer) -> dict[str, Any]:
    """The record of a replica's table in the OpenAPI (``components.schemas.Record``)."""
    number, text_ = {"type": "number", "nullable": True}, {"type": ["string", "number", "boolean"], "nullable": True}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [*featurizer.numeric, *featurizer.categorical],
        "properties": {**dict.fromkeys(featurizer.numeric, number), **dict.fromkeys(featurizer.categorical, text_)},
    }


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32)
@serve.ingress(app)
class Predictor:
    """A Serve replica that serves a model version from one of two sources.

    * ``controller_name`` (a running job's controller actor): the replica loads the latest
      version before it takes traffic, then long-polls for newer ones.
    * ``checkpoint`` (a Ray Train checkpoint of the main job: a directory or an
      ``s3://`` / ``gs://`` URI): the replica serves that version, fixed.

    The architecture and input width come from the arguments, else from the checkpoint's
    ``meta.json`` or the controller's model spec (:meth:`ControllerActor.model_spec`).

    Args:
        controller_name: the controller actor's name (ignored when ``checkpoint`` is given).
        namespace: its Ray namespace.
        model: ``ModelConfig`` as a dict.
        num_features: expected row width.
        num_classes: output classes.
        max_batch_rows: largest accepted batch.
        poll_timeout_s: long-poll timeout (seconds) towards the controller.
        start_timeout_s: how long the constructor waits for a first version.
        checkpoint: serve this checkpoint instead of following a controller.
        inputs: the raw-input spec (``{"kind": ..., "routes": "package.module:attribute", ...}``, the
            routes an :class:`InputRoutes`); else from the source, else ``{"kind": "table"}``.
        student_model: ``distill.student`` (``ModelConfig`` as a dict): the architecture of a version the controller
            serves as its distilled student (else from the source's model spec).
        quantize: ``dynamic_int8``: serve a dynamically quantised copy of each version
            (:func:`ddn_ray.models.quantized`, built when the version is loaded); ``none``: the float model.
        service_app: the Serve application of a long-running service's learner (:mod:`ddn_ray.service`): each
            answer to named records then carries ``event_ids``, every answered row is handed to that learner's
            prediction log (off the request path, retried until it is taken), and the replica adds the routes
            ``/feedback``, ``/learn`` and ``/stats``.
        auth_token: every request must carry ``Authorization: Bearer <auth_token>`` (a 401 else, on every
            route; :class:`ddn_ray.guard.RequestGuard`); ``None``: ``$DDN_RAY_AUTH_TOKEN`` in the replica's
            environment, and no token when that is unset.
        max_body_bytes: larger request bodies get a 413 before they are parsed; ``None``:
            :func:`ddn_ray.guard.default_max_body_bytes` of ``max_batch_rows`` and the input width.
        version_wait_s: how long a request's ``?min_version=v`` holds it for version ``v``, or ``?min_window=w``
            for window ``w``, at most (``serve.version_wait_s``).

    Raises:
        ValueError: neither source is given, or the source does not describe the model.
        RuntimeError: no version was published within ``start_timeout_s``.
    """

    app: FastAPI  # set by serve.ingress

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        controller_name: str | None = None,
        namespace: str = "ddn_ray",
        model: dict[str, Any] | None = None,
        num_features: int | None = None,
        num_classes: int | None = None,
        max_batch_rows: int = 1024,
        poll_timeout_s: float = 5.0,
        start_timeout_s: float = 120.0,
        checkpoint: str | None = None,
        inputs: dict[str, Any] | None = None,
        service_app: str | None = None,
        quantize: str = "none",
        student_model: dict[str, Any] | None = None,
        auth_token: str | None = None,
        max_body_bytes: int | None = None,
        version_wait_s: float = 10.0,
    ) -> None:
        import ray

        torch.set_num_threads(1)
        self._service = None if service_app is None else serve.get_deployment_handle("LearningService", service_app)
        self._log_tasks: set[asyncio.Task] = set()
        self._controller_name, self._namespace = controller_name, namespace
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._actor = ray.get_runtime_context().current_actor  # handed to the controller with each long-poll
        self._max_batch_rows = max_batch_rows
        self._poll_timeout_s = poll_timeout_s
        self._current: Served | None = None
        self._version_wait_s = version_wait_s
        # the last window the trainer had finished, as of the latest offer (?min_window)
        self._windows_done = -1
        # requests held for a version or a window (?min_version, ?min_window): (whether it is here, their event
        # loop, the event set once it is)
        self._waiters: list[tuple[Callable[[], bool], asyncio.AbstractEventLoop, asyncio.Event]] = []
        if quantize not in ("none", "dynamic_int8"):
            raise ValueError(f"quantize must be 'none' or 'dynamic_int8', got {quantize!r}")
        self._quantize = quantize
        # the GPU Ray assigned this replica (serve.num_gpus) when torch can use it, else the CPU (one warning);
        # a dynamically quantised copy runs on the CPU (torch's int8 kernels)
        self._device = devices.assigned_device()
        self._gpu_ids = [str(i) for i in ray.get_gpu_ids()]
        self._model_device = torch.device("cpu") if quantize != "none" else self._device
        self._exit_macs: dict[tuple[str, int], tuple[int, ...]] = {}
        self._poller: asyncio.Task | None = None
        global _metrics
        _metrics = self._metrics = ReplicaMetrics(self._replica)
        self._refresher = asyncio.get_running_loop().create_task(self._metrics.refresh_forever())
        if checkpoint is not None:
            version, weights, spec = checkpoint_io.read(checkpoint)
            preprocessing = spec.get("preprocessing")
        elif controller_name is not None:
            self._controller = ray.get_actor(controller_name, namespace=namespace)
            spec = await self._controller.model_spec.remote() if model is None else {}
        else:
            raise ValueError("Predictor needs a checkpoint or a controller_name")
        spec = {
            **(spec or {}),
            **{
                k: v
                for k, v in {
                    "model": model,
                    "num_features": num_features,
                    "num_classes": num_classes,
                    "student_model": student_model,
                }.items()
                if v is not None
            },
        }
        missing = [k for k in ("model", "num_features", "num_classes") if k not in spec]
        if missing:
            raise ValueError(f"the model version source does not describe the model: missing {missing}")
        self._model_cfg = ModelConfig(**spec["model"])
        self._student_cfg = ModelConfig(**spec["student_model"]) if spec.get("student_model") else None
        self._num_features, self._num_classes = int(spec["num_features"]), int(spec["num_classes"])
        global _guard_settings
        _guard_settings = (
            auth_token or guard.auth_token_from_env(),
            max_body_bytes or guard.default_max_body_bytes(max_batch_rows, self._num_features),
        )
        self._inputs: dict[str, Any] = inputs or spec.get("inputs") or {"kind": "table"}
        self._routes: InputRoutes | None = None
        if self._inputs.get("routes"):
            self._routes = registry.load(self._inputs["routes"], what="inputs.routes")
            if not isinstance(self._routes, InputRoutes):
                raise TypeError(f"inputs.routes {self._inputs['routes']!r} is not an InputRoutes")
            if self._routes.warm_up is not None:  # e.g. a text encoder: seconds, before taking traffic
                self._routes.warm_up(self._inputs)
        self._openapi_spec: dict[str, Any] | None = None
        if checkpoint is not None:
            self._install(version, weights, preprocessing, spec)
            return
        if not await self._load_next(None, start_timeout_s):
            raise RuntimeError(f"no model version was published within {start_timeout_s} s")
        self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    def _install(
        self,
        version: int,
        weights: Any,
        preprocessing: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        num_classes = int((meta or {}).get("num_classes", self._num_classes))  # the head may have grown
        served_model = (meta or {}).get("served_model", "teacher")
        if served_model == "student" and self._student_cfg is None:
            raise ValueError(f"version {version} serves a distilled student, but the model spec has no student_model")
        arch = self._student_cfg if served_model == "student" and self._student_cfg is not None else self._model_cfg
        model = models.build_for_inference(arch, self._num_features, num_classes, weights)
        key = (served_model, num_classes)  # MACs depend on the architecture, not the weights: counted once
        if key not in self._exit_macs:
            self._exit_macs[key] = exits.exit_macs(model, self._num_features)
        macs = self._exit_macs[key]
        if self._quantize == "dynamic_int8":
            model = models.quantized(model)  # once per version, not per request
        elif self._model_device.type != "cpu":
            model = model.to(self._model_device)  # one host-to-device copy per version
        featurizer = Featurizer.from_state(preprocessing) if preprocessing is not None else None
        # one assignment: requests see the old version or the new one, never half
        self._current = Served(version, model, featurizer, macs, served_model)
        self._metrics.serving(version)

    def _wake(self) -> None:
        """Release the held requests whose version or window is here."""
        for here, loop, event in self._waiters:
            if here():
                loop.call_soon_threadsafe(event.set)

    async def wait_version(self, version: int) -> bool:
        """Wait until this replica serves ``version`` or a newer one (a request's ``?min_version``), at most
        ``version_wait_s`` (a replica serving a fixed checkpoint does not wait).

        Returns:
            Whether it does: else the request is answered by the version served now, which its answer names
            (``model_version``), as a long-poll answers with what it has once its wait is up.
        """
        return await self._hold(lambda: self._served().version >= version, f"min_version {version}")

    async def wait_learned(self, window: int) -> bool:
        """Wait until this replica knows that the trainer finished window ``window`` (a request's ``?min_window``),
        and serves the version that made, if any (a rejected update makes none), at most ``version_wait_s``.

        The controller's offer of a version and the trainer's progress come in one reply, so a replica that
        knows the window done serves every version made up to it. A driver that sends a window's requests before
        the previous window is learned thus gets answers from a model that has learned it, with no call of its
        own to the controller on the way (:mod:`jobs.continuous`).

        Returns:
            Whether it does (as :meth:`wait_version`).
        """
        return await self._hold(lambda: self._windows_done >= window, f"min_window {window}")

    async def _hold(self, here: Callable[[], bool], what: str) -> bool:
        """Hold a request until ``here()`` (checked at each offer the replica takes), ``version_wait_s`` at most."""
        if here():
            return True
        if self._poller is None:  # a fixed checkpoint: no newer version will come
            return False
        waiter = (here, asyncio.get_running_loop(), asyncio.Event())
        self._waiters.append(waiter)
        try:
            if not here():  # an offer may have come before the waiter was in
                await asyncio.wait_for(waiter[2].wait(), self._version_wait_s)
        except asyncio.TimeoutError:
            log.warning(
                "%s not here within %.1f s; answering with version %d",
                what,
                self._version_wait_s,
                self._served().version,
            )
        finally:
            self._waiters.remove(waiter)
        return here()

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after the constructor: the app with this model's input routes and OpenAPI."""
        served: FastAPI = self.app
        if self._routes is not None:
            served.include_router(self._routes.router)
        if self._service is not None:
            served.include_router(registry.load("ddn_ray.service:ROUTES", what="service routes"))
        served.openapi = self._openapi  # type: ignore[method-assign]
        return served

    def _openapi(self) -> dict[str, Any]:
        """The app's OpenAPI, with this replica's ``Record`` when it serves a table (a replica takes requests
        only once a version is in, and a table's columns stay those of its first version)."""
        if self._openapi_spec is None:
            from fastapi.openapi.utils import get_openapi

            served = self.app
            spec = get_openapi(title=served.title, version=served.version, routes=served.routes)
            featurizer = self._current.featurizer if self._current is not None else None
            if featurizer is not None:
                spec.setdefault("components", {}).setdefault("schemas", {})["Record"] = _record_schema(featurizer)
                body = spec["components"]["schemas"].get("PredictRequest", {}).get("properties", {})
                for option in body.get("records", {}).get("anyOf", []):
                    if option.get("type") == "array":
                        option["items"] = {"$ref": "#/components/schemas/Record"}
                names = [
                    *featurizer.numeric,
                    *featurizer.categorical,
                    *([featurizer.id_column] if featurizer.id_column else []),
                ]
                for option in body.get("columns", {}).get("anyOf", []):
                    if option.get("type") == "array":
                        option["items"] = {"type": "string", "enum": names}
            self._openapi_spec = spec
        return self._openapi_spec

    async def _load_next(self, after: int | None, timeout_s: float) -> bool:
        """One long-poll of the controller, which also acknowledges ``after``, the version served: load the
        version offered, or take note of the trainer's progress (``windows_done``). Whether an offer came."""
        # the replica's own actor handle: lets the controller tell it dead from slow
        found = await self._controller.wait_for_version.remote(
            self._replica, after, timeout_s, actor=self._actor, after_window=self._windows_done
        )
        if found is None:
            return False
        if found.new:
            self._install(found.version, await found.fetch_weights(), found.preprocessing, found.meta)
        self._windows_done = max(self._windows_done, found.windows_done)
        self._wake()
        return True

    async def _poll_forever(self) -> None:
        import ray

        while True:
            try:
                await self._load_next(self._current.version if self._current else None, self._poll_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving the current version; retry shortly
                log.exception("model version poll failed; keeping version %s", self._current and self._current.version)
                await asyncio.sleep(0.5)
                # a restarted controller (a service's learner came back) has the same name
                if self._controller_name is not None:
                    with contextlib.suppress(ValueError):
                        self._controller = ray.get_actor(self._controller_name, namespace=self._namespace)

    def _log_answer(
        self,
        event_ids: list[str],
        rows: Any,
        featurizer: Featurizer,
        predictions: np.ndarray,
        probabilities: np.ndarray | None,
        version: int,
    ) -> None:
        """Hand the answered rows to the service's prediction log in the background (off the request path)."""
        import time

        task = asyncio.get_running_loop().create_task(
            self._send_log(event_ids, rows, featurizer, predictions, probabilities, version, time.time())
        )
        self._log_tasks.add(task)
        task.add_done_callback(self._log_tasks.discard)

    async def _send_log(
        self,
        event_ids: list[str],
        rows: Any,
        featurizer: Featurizer,
        predictions: np.ndarray,
        probabilities: np.ndarray | None,
        version: int,
        at_s: float,
    ) -> None:
        from ddn_ray.eventlog import AnsweredRows

        batch = AnsweredRows(
            event_ids=event_ids,
            features=featurizer.record_table(rows),
            predictions=predictions,
            probabilities=probabilities,
            model_version=version,
            predicted_at_s=at_s,
            replica=self._replica,
        )
        assert self._service is not None, "answers are logged only by a service's replica"
        delay = 0.2
        while True:  # until the learner takes it: it may be restarting (its log is rebuilt from the files)
            try:
                await self._service.log_answers.remote(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (any failure of the learner's actor: retried, never dropped)
                log.warning("the service's log did not take %d answered rows; retrying in %.1f s", len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

    async def __del__(self) -> None:
        """Serve's graceful shutdown: the answered rows still on their way reach the prediction log first."""
        if self._log_tasks:
            await asyncio.wait(list(self._log_tasks), timeout=60.0)

    def check_health(self) -> None:
        """Serve health check: unhealthy if the version poller died."""
        if (
            self._poller is not None
            and self._poller.done()
            and not self._poller.cancelled()
            and self._poller.exception() is not None
        ):
            raise RuntimeError(f"version poller died: {self._poller.exception()!r}")

    def answer(
        self,
        x: torch.Tensor | None,
        records: "list[dict[str, Any]] | None" = None,
        split: "tuple[list[str], list[list[Any]]] | None" = None,
        exit_threshold: float | None = None,
    ) -> PredictResponse | ValuesResponse | RecordsResponse:
        """The answer to ``x``: ``(batch, num_features)`` float32 model inputs, or named rows (``records``, or
        ``split``: ``(columns, data)`` in pandas' split orientation) featurized by the served version's
        preprocessing; a classifier's classes and probabilities, a regression's outputs.

        A classifier answers each row from its first exit more confident than ``exit_threshold`` (``None``: the
        model's ``model.exit_threshold``; :func:`ddn_ray.exits.early_exit`); every answer names that exit and
        its MACs."""
        served = self._served()  # one read: this request's version, whatever the poller does
        version, model, featurizer = served.version, served.model, served.featurizer
        ids = None
        rows: Any = None
        if records is not None or split is not None:
            name, n = ("records", len(records)) if records is not None else ("data", len(split[1]) if split else 0)
            if featurizer is None:
                raise self.reject(400, f"this model takes 'instances' (rows of numbers), not '{name}'")
            if n > self._max_batch_rows:
                raise self.reject(413, f"{name} has {n} rows; at most {self._max_batch_rows} per request")
            try:
                rows, ids = (
                    featurizer.read_records(records)
                    if records is not None
                    else featurizer.read_split(*cast(tuple, split))
                )
            except RecordError as exc:
                raise self.reject(422, str(exc)) from None
            good, reasons = featurizer.check(rows, labels=False)
            if not good.all():
                i = int(np.flatnonzero(~good)[0])
                raise self.reject(422, f"{name}[{i}]: {reasons[0]}")
            x = torch.from_numpy(featurizer.transform(rows))
        if x is None:
            raise ValueError("answer needs x, records or split")
        self.check_finite(x, "records" if records is not None else "data" if split is not None else "inputs")
        if self._model_cfg.task == "classification":
            threshold = self._model_cfg.exit_threshold if exit_threshold is None else exit_threshold
            out, exit_of = exits.early_exit(model, x.to(self._model_device), threshold, self._model_cfg.exit_criterion)
            out, exit_of = out.cpu(), exit_of.cpu()
        else:
            with torch.no_grad():
                out = model(x.to(self._model_device)).cpu()
            exit_of = torch.full((len(x),), len(served.exit_macs) - 1, dtype=torch.int64)
        self.check_output(out, version)
        exit_list = exit_of.tolist()
        macs = [served.exit_macs[i] for i in exit_list]
        self._metrics.request(200, rows=len(x))
        event_ids = None
        if self._service is not None and featurizer is not None:
            from ddn_ray.eventlog import new_event_ids

            fresh = iter(new_event_ids(len(x) if ids is None else sum(i is None for i in ids)))
            event_ids = (
                [next(fresh) for _ in range(len(x))]
                if ids is None
                else [str(i) if i is not None else next(fresh) for i in ids]
            )
        if self._model_cfg.task == "regression":
            if event_ids is not None and featurizer is not None:
                self._log_answer(event_ids, rows, featurizer, out.numpy().astype(np.float32), None, version)
            return ValuesResponse(
                outputs=out.tolist(),
                model_version=version,
                replica=self._replica,
                ids=ids,
                event_ids=event_ids,
                macs=macs,
            )
        if featurizer is not None and (records is not None or split is not None):
            probs = torch.softmax(out, dim=1)
            class_ids = probs.argmax(dim=1).tolist()
            if event_ids is not None:
                self._log_answer(event_ids, rows, featurizer, np.asarray(class_ids, np.int64), probs.numpy(), version)
            return RecordsResponse(
                predictions=featurizer.class_names(class_ids),
                class_ids=class_ids,
                probabilities=probs.tolist(),
                model_version=version,
                replica=self._replica,
                ids=ids,
                event_ids=event_ids,
                exits=exit_list,
                macs=macs,
            )
        probs = torch.softmax(out, dim=1)
        return PredictResponse(
            predictions=probs.argmax(dim=1).tolist(),
            probabilities=probs.tolist(),
            model_version=version,
            replica=self._replica,
            exits=exit_list,
            macs=macs,
        )

    def reject(self, status: int, message: str) -> HTTPException:
        """The error to raise for a refused request, counted in the replica's metrics."""
        self._metrics.request(status)
        return http_error(status, message)

    def check_finite(self, x: torch.Tensor, name: str) -> None:
        """Raises the 422 :class:`HTTPException` naming the first row of ``x`` (``(batch, width)`` model inputs
        after preprocessing) with a value that is not finite, e.g. a number past float32's range."""
        bad = ~torch.isfinite(x)
        if bad.any():
            i, j = (int(v) for v in bad.nonzero()[0])
            raise self.reject(422, f"{name}[{i}]: input {j} is not finite in float32 after preprocessing")

    def check_output(self, out: torch.Tensor, version: int) -> None:
        """Raises a 500 :class:`HTTPException` (counted; the replica stays healthy) when the model's output
        ``out`` holds a value that is not finite: an answer is never a 200 with NaN or infinity."""
        bad = ~torch.isfinite(out)
        if bad.any():
            rows = sorted({int(i) for i in bad.nonzero()[:, 0]})
            log.warning("model version %d gave a non-finite output for rows %s", version, rows[:10])
            raise self.reject(500, f"model version {version} gave a non-finite output for rows {rows[:10]}")

    # The surface an InputRoutes handler uses (with Depends(current_replica)).

    @property
    def inputs(self) -> dict[str, Any]:
        """The raw-input spec of the model this replica serves."""
        return self._inputs

    @property
    def replica_id(self) -> str:
        return self._replica

    @property
    def service(self) -> Any:
        """The service learner's ``DeploymentHandle`` (``None``: this replica only serves)."""
        return self._service

    def featurizer(self) -> Featurizer | None:
        """The preprocessing of the version served now (``None``: a model of rows of numbers)."""
        return self._current.featurizer if self._current is not None else None

    @property
    def max_batch_rows(self) -> int:
        return self._max_batch_rows

    def _served(self) -> Served:
        """What is served now, read once (a replica takes requests only once a version is in)."""
        if self._current is None:
            raise RuntimeError("no model version loaded yet")
        return self._current

    def current(self) -> tuple[int, torch.nn.Module]:
        """``(version, model)`` read once: use both for one request, whatever the poller swaps in meanwhile."""
        served = self._served()
        return served.version, served.model

    def check_batch(self, n: int) -> None:
        """Raises the 413 :class:`HTTPException` when ``n`` items exceed ``max_batch_rows``."""
        if n > self._max_batch_rows:
            raise self.reject(413, f"{n} items; at most {self._max_batch_rows} per request")

    def served(self, rows: int) -> None:
        """Count an answered request of ``rows`` rows (a handler that answers without :meth:`answer`)."""
        self._metrics.request(200, rows=rows)

    @app.post("/predict", response_model=PredictResponse | RecordsResponse | ValuesResponse)
    async def predict(self, request: PredictRequest) -> PredictResponse | RecordsResponse | ValuesResponse:
        threshold = request.exit_threshold
        if request.records is not None:
            return self.answer(None, request.records, exit_threshold=threshold)
        if request.columns is not None:
            return self.answer(None, split=(request.columns, request.data or []), exit_threshold=threshold)
        if self._served().featurizer is not None:
            raise self.reject(
                400,
                "this model featurizes named columns: send 'records' or 'columns' + 'data' (GET /schema lists them)",
            )
        try:
            check_instances(request.instances or [], self._num_features, self._max_batch_rows)
        except HTTPException as exc:
            self._metrics.request(exc.status_code)
            raise
        return self.answer(torch.tensor(request.instances, dtype=torch.float32), exit_threshold=threshold)

    @app.get("/version")
    async def version(self) -> dict[str, Any]:
        served = self._served()
        version, featurizer = served.version, served.featurizer
        return {
            "model_version": version,
            "replica": self._replica,
            "inputs": self._inputs,
            "exit_macs": list(served.exit_macs),
            "served_model": served.served_model,
            "quantize": self._quantize,
            "device": str(self._model_device),
            "gpu_ids": self._gpu_ids,
            **({"schema": featurizer.schema()} if featurizer is not None else {}),
        }

    @app.get("/schema")
    async def schema(self) -> dict[str, Any]:
        """The record a request sends (columns by kind, the missing-value rule) and the classes of this version."""
        served = self._served()
        version, featurizer = served.version, served.featurizer
        if featurizer is None:
            raise self.reject(404, f"this model takes rows of {self._num_features} numbers ('instances'), no records")
        return {"model_version": version, **featurizer.schema()}


def build_app(
    cfg: JobConfig,
    num_features: int,
    num_classes: int,
    inputs: dict[str, Any] | None = None,
    service_app: str | None = None,
) -> serve.Application:
    """The Serve application for a job config (replicas and CPUs from ``cfg.serve``; ``inputs`` and
    ``service_app`` as in :class:`Predictor`)."""
    return (
        cast(serve.Deployment, Predictor)
        .options(
            num_replicas=cfg.serve.num_replicas,
            ray_actor_options={"num_cpus": cfg.serve.cpus_per_replica, "num_gpus": cfg.serve.num_gpus},
            max_ongoing_requests=32,
        )
        .bind(
            cfg.controller.name,
            cfg.ray.namespace,
            cfg.model.model_dump(),
            num_features,
            num_classes,
            cfg.serve.max_batch_rows,
            cfg.controller.poll_timeout_s,
            inputs=inputs,
            service_app=service_app,
            quantize=cfg.serve.quantize,
            student_model=cfg.distill.student.model_dump() if cfg.distill.student is not None else None,
            auth_token=cfg.serve.token(),
            max_body_bytes=cfg.serve.max_body_bytes,
            version_wait_s=cfg.serve.version_wait_s,
        )
    )


class AppArgs(BaseModel):
    """The ``args`` of the application in a Serve config file (``import_path: ddn_ray.serve:app_builder``).

    Exactly one model-version source: ``checkpoint`` (a fixed version) or ``controller``
    (follow a running job). Replicas, CPUs and autoscaling come from the config file's
    ``deployments`` section. The bearer token is never an argument: set ``DDN_RAY_AUTH_TOKEN`` in the
    application's ``runtime_env.env_vars`` (a secret in a config file is one in every copy of it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    checkpoint: str | None = Field(None, description="a main-job checkpoint directory or s3:// / gs:// URI")
    controller: str | None = Field(None, description="name of a running job's controller actor")
    namespace: str = "ddn_ray"
    max_batch_rows: int = Field(1024, gt=0)
    poll_timeout_s: float = Field(5.0, gt=0)
    quantize: Literal["none", "dynamic_int8"] = Field("none", description="serve an int8 dynamically quantised copy")
    max_body_bytes: int | None = Field(None, gt=0, description="larger request bodies get a 413 (None: derived)")

    def model_post_init(self, _context: Any) -> None:
        if (self.checkpoint is None) == (self.controller is None):
            raise ValueError("give exactly one model-version source: args.checkpoint or args.controller")


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Serve application builder for ``serve run`` / ``serve deploy`` config files.

    Example (a Serve config file)::

        applications:
          - name: ddn_ray
            route_prefix: /
            import_path: ddn_ray.serve:app_builder
            args: {checkpoint: runs/storage/elec2-.../checkpoint_2026-11-22_08-17-42.123456}

    Raises:
        pydantic.ValidationError: bad ``args`` (both or neither source, unknown keys).
    """
    a = AppArgs(**args)
    return cast(serve.Deployment, Predictor).bind(
        a.controller,
        a.namespace,
        None,
        None,
        None,
        a.max_batch_rows,
        a.poll_timeout_s,
        checkpoint=a.checkpoint,
        quantize=a.quantize,
        max_body_bytes=a.max_body_bytes,
    )
