"""The Serve application: an HTTP endpoint answering with the latest model version.

Each replica loads the controller's latest version *before* it takes traffic (in its
async constructor), then long-polls the controller and swaps in each new version
between requests: a request reads ``(version, model)`` once, so it never sees a
half-loaded model, and every answer carries the version that produced it.

Endpoints (under the app's route prefix):

* ``POST /predict`` ``{"instances": [[f1, ..., fN], ...]}`` ->
  ``{"predictions": [...], "probabilities": [[...]], "model_version": v, "replica": id}``
* ``GET /version`` -> ``{"model_version": v, "replica": id}``

Malformed requests get 422 naming the field (bad JSON, non-numeric, NaN/Inf,
wrong width, empty) or 413 (more than ``max_batch_rows`` rows).
"""

# No `from __future__ import annotations` here: FastAPI must see the real request model
# type on the route methods, or it reads `request` as a query parameter.
import asyncio
import logging
from typing import Annotated, Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from ddn_ray import models
from ddn_ray.config import JobConfig, ModelConfig

__all__ = ["PredictRequest", "PredictResponse", "Predictor", "build_app", "check_instances"]

log = logging.getLogger("ray.serve")

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class PredictRequest(BaseModel):
    """Request body. ``instances``: ``(batch, num_features)`` finite numbers."""

    model_config = ConfigDict(extra="forbid")
    instances: list[list[FiniteFloat]] = Field(min_length=1)


class PredictResponse(BaseModel):
    """Response body: one prediction and probability row per instance."""

    predictions: list[int]
    probabilities: list[list[float]]
    model_version: int
    replica: str


def check_instances(instances: "list[list[float]]", num_features: int, max_batch_rows: int) -> None:
    """Check the batch's shape.

    Raises:
        HTTPException: 413 when there are more than ``max_batch_rows`` rows, 422 when a
            row does not have ``num_features`` values (the message names the row).
    """
    if len(instances) > max_batch_rows:
        raise HTTPException(413, f"instances has {len(instances)} rows; at most {max_batch_rows} per request")
    for i, row in enumerate(instances):
        if len(row) != num_features:
            raise HTTPException(422, f"instances[{i}] has {len(row)} features; expected {num_features}")


app = FastAPI(title="ddn_ray inference")


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field. The offending input is not echoed: NaN is not valid JSON."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": detail})


@serve.deployment
@serve.ingress(app)
class Predictor:
    """A Serve replica that serves the controller's latest model version.

    Args:
        controller_name: the controller actor's name.
        namespace: its Ray namespace.
        model: ``ModelConfig`` as a dict.
        num_features: expected row width.
        num_classes: output classes.
        max_batch_rows: largest accepted batch.
        poll_timeout_s: long-poll timeout (seconds) towards the controller.
        start_timeout_s: how long the constructor waits for a first version.
    """

    async def __init__(
        self,
        controller_name: str,
        namespace: str,
        model: dict[str, Any],
        num_features: int,
        num_classes: int,
        max_batch_rows: int = 1024,
        poll_timeout_s: float = 5.0,
        start_timeout_s: float = 120.0,
    ) -> None:
        import ray

        torch.set_num_threads(1)
        self._controller = ray.get_actor(controller_name, namespace=namespace)
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._model_cfg = ModelConfig(**model)
        self._num_features, self._num_classes = num_features, num_classes
        self._max_batch_rows = max_batch_rows
        self._poll_timeout_s = poll_timeout_s
        self._current: tuple[int, torch.nn.Module] | None = None
        if not await self._load_next(None, start_timeout_s):
            raise RuntimeError(f"no model version was published within {start_timeout_s} s")
        self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def _load_next(self, after: int | None, timeout_s: float) -> bool:
        found = await self._controller.wait_for_version.remote(self._replica, after, timeout_s)
        if found is None:
            return False
        version, (ref,), _meta = found
        weights = await ref
        model = models.build_for_inference(self._model_cfg, self._num_features, self._num_classes, weights)
        self._current = (version, model)  # one assignment: requests see old or new, never half
        await self._controller.ack.remote(self._replica, version)
        return True

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self._load_next(self._current[0] if self._current else None, self._poll_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving the current version; retry shortly
                log.exception("model version poll failed; keeping version %s", self._current and self._current[0])
                await asyncio.sleep(0.5)

    def check_health(self) -> None:
        """Serve health check: unhealthy if the version poller died."""
        if self._poller.done() and not self._poller.cancelled() and self._poller.exception() is not None:
            raise RuntimeError(f"version poller died: {self._poller.exception()!r}")

    @app.post("/predict", response_model=PredictResponse)
    async def predict(self, request: PredictRequest) -> PredictResponse:
        check_instances(request.instances, self._num_features, self._max_batch_rows)
        version, model = self._current
        with torch.no_grad():
            probs = torch.softmax(model(torch.tensor(request.instances, dtype=torch.float32)), dim=1)
        return PredictResponse(
            predictions=probs.argmax(dim=1).tolist(),
            probabilities=probs.tolist(),
            model_version=version,
            replica=self._replica,
        )

    @app.get("/version")
    async def version(self) -> dict[str, Any]:
        return {"model_version": self._current[0], "replica": self._replica}


def build_app(cfg: JobConfig, num_features: int, num_classes: int) -> serve.Application:
    """The Serve application for a job config (replicas and CPUs from ``cfg.serve``)."""
    return Predictor.options(
        num_replicas=cfg.serve.num_replicas,
        ray_actor_options={"num_cpus": cfg.serve.cpus_per_replica},
        max_ongoing_requests=32,
    ).bind(
        cfg.controller.name,
        cfg.ray.namespace,
        cfg.model.model_dump(),
        num_features,
        num_classes,
        cfg.serve.max_batch_rows,
        cfg.controller.poll_timeout_s,
    )
