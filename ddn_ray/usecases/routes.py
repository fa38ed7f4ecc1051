"""The Serve routes the built-in use cases add for their raw inputs (:class:`ddn_ray.serve.InputRoutes`).

A use case's input spec names one of these (``inputs["routes"]``); a replica serving such a model
includes its router and no other:

* :data:`IMAGES`: ``POST /predict_images`` ``{"png": ["<base64 PNG>", ...]}`` (:mod:`ddn_ray.usecases.images`),
  answered like ``/predict``; ``png[i]`` not a PNG of the model's size is a 422.
* :data:`TEXTS`: ``POST /predict_text`` ``{"texts": ["raw text", ...]}``: the replica featurizes them as the
  stream did (:mod:`ddn_ray.usecases.text`); ``texts[i]`` empty is a 422.
* :data:`DYNAMICS`: ``POST /predict_next_state`` ``{"states": [[...]], "actions": [[...]]}`` (forward dynamics
  models, :mod:`ddn_ray.usecases.control`) -> ``{"next_states": [[...]], ...}`` in the environment's units: the
  replica standardises the inputs and un-standardises the predicted change.
* :data:`SERIES`: ``POST /score_anomaly`` ``{"series": name, "values": [...]}`` (NAB forecasters): the recent
  values of the named series, oldest first, in its units -> ``{"anomaly_score", "alarm", "forecast", ...}``:
  the replica forecasts each value's change from the inputs before it (lags and seasonal values,
  :func:`ddn_ray.usecases.anomaly.series_rows`) and scores the last value with the job's detector
  (:class:`ddn_ray.usecases.anomaly.Detector`) over the values sent; ``forecast`` is the next value.
"""

# No `from __future__ import annotations` here: FastAPI must see the real request model types.
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from ddn_ray.guard import ModelFloat, Text
from ddn_ray.serve import InputRoutes, PredictResponse, current_replica
from ddn_ray.serve import Replica as _Replica
from ddn_ray.usecases import anomaly, images, text

__all__ = [
    "DYNAMICS",
    "IMAGES",
    "SERIES",
    "TEXTS",
    "AnomalyResponse",
    "DynamicsRequest",
    "ImageRequest",
    "NextStateResponse",
    "SeriesRequest",
    "TextRequest",
]

Replica = Annotated[_Replica, Depends(current_replica)]
DETECTOR = anomaly.Detector()  # /score_anomaly scores as the NAB job's report does


class ImageRequest(BaseModel):
    """Request body of ``/predict_images``: base64-encoded PNG files, one image each."""

    model_config = ConfigDict(extra="forbid")
    png: list[str] = Field(min_length=1)


class TextRequest(BaseModel):
    """Request body of ``/predict_text``: raw texts, one document each."""

    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = Field(min_length=1)


class DynamicsRequest(BaseModel):
    """Request body of ``/predict_next_state``: ``states`` ``(batch, state_dim)`` and ``actions``
    ``(batch, action_dim)``, finite numbers in the environment's units."""

    model_config = ConfigDict(extra="forbid")
    states: list[list[ModelFloat]] = Field(min_length=1)
    actions: list[list[ModelFloat]] = Field(min_length=1)


class SeriesRequest(BaseModel):
    """Request body of ``/score_anomaly``: the series' name and its recent values, oldest first."""

    model_config = ConfigDict(extra="forbid")
    series: Text
    values: list[ModelFloat] = Field(min_length=1)


class AnomalyResponse(BaseModel):
    """``/score_anomaly``'s answer for the last value sent (``alarm``: ``anomaly_score`` reaches the alarm level)."""

    series: str
    anomaly_score: float
    alarm: bool
    forecast: float
    model_version: int
    replica: str


class NextStateResponse(BaseModel):
    """``/predict_next_state``'s answer: the predicted next state of each row."""

    next_states: list[list[float]]
    model_version: int
    replica: str


_images = APIRouter()


@_images.post("/predict_images", response_model=PredictResponse)
async def predict_images(request: ImageRequest, replica: Replica) -> Any:
    replica.check_batch(len(request.png))
    try:
        x = images.decode_png(request.png, replica.inputs["shape"])
    except ValueError as exc:
        raise replica.reject(422, str(exc)) from None
    return replica.answer(torch.from_numpy(x))


_texts = APIRouter()


@_texts.post("/predict_text", response_model=PredictResponse)
async def predict_text(request: TextRequest, replica: Replica) -> Any:
    replica.check_batch(len(request.texts))
    empty = [i for i, t in enumerate(request.texts) if not t.strip()]
    if empty:
        raise replica.reject(422, f"texts[{empty[0]}] is empty")
    return replica.answer(torch.from_numpy(text.featurize(request.texts, replica.inputs)))


def _warm_up_text(inputs: Mapping[str, Any]) -> None:
    text.featurize(["warm-up"], dict(inputs))  # load the encoder (seconds) before taking traffic


_dynamics = APIRouter()


@_dynamics.post("/predict_next_state", response_model=NextStateResponse)
async def predict_next_state(request: DynamicsRequest, replica: Replica) -> NextStateResponse:
    spec = replica.inputs
    replica.check_batch(len(request.states))
    ns, na = len(spec["state_names"]), len(spec["action_names"])
    if len(request.actions) != len(request.states):
        raise replica.reject(422, f"actions has {len(request.actions)} rows; states has {len(request.states)}")
    for field, rows, width in (("states", request.states, ns), ("actions", request.actions, na)):
        for i, row in enumerate(rows):
            if len(row) != width:
                raise replica.reject(422, f"{field}[{i}] has {len(row)} values; expected {width}")
    s = torch.tensor(request.states, dtype=torch.float32)
    raw = torch.cat([s, torch.tensor(request.actions, dtype=torch.float32)], dim=1)
    x = (raw - torch.tensor(spec["x_mean"])) / torch.tensor(spec["x_std"])
    version, model = replica.current()
    replica.check_finite(x, "states")  # a value near float32's limit may overflow when standardised
    with torch.no_grad():
        delta = model(x.float()) * torch.tensor(spec["y_std"]) + torch.tensor(spec["y_mean"])
    replica.check_output(s + delta, version)
    replica.served(len(s))
    return NextStateResponse(next_states=(s + delta).tolist(), model_version=version, replica=replica.replica_id)


_series = APIRouter()


@_series.post("/score_anomaly", response_model=AnomalyResponse)
async def score_anomaly(request: SeriesRequest, replica: Replica) -> AnomalyResponse:
    spec = replica.inputs
    if request.series != spec["series"]:
        raise replica.reject(404, f"this deployment scores series {spec['series']!r}, not {request.series!r}")
    # Checkpoints written before the seasonal inputs have neither key: no seasonal inputs.
    lags, period, width = int(spec["lags"]), int(spec.get("period", 0)), int(spec.get("seasonal_width", 0))
    first = max(lags, period + width - 1 if period else 0)  # the first value whose inputs are all sent
    short = DETECTOR.scales[0][0]
    need = first + short + 1
    if len(request.values) < need:
        raise replica.reject(
            422,
            f"values has {len(request.values)} points; send at least {need} ({first} of inputs + {short + 1} to score)",
        )
    if len(request.values) > replica.max_batch_rows + first:
        raise replica.reject(413, f"values has {len(request.values)} points; at most {replica.max_batch_rows + first}")
    span = spec["hi"] - spec["lo"] if spec["hi"] > spec["lo"] else 1.0
    x = (np.asarray(request.values, dtype=np.float32) - spec["lo"]) / span
    # Rows for every value sent and one more: the last row forecasts the next value.
    feats, target = anomaly.series_rows(np.append(x, x[-1]), lags, period, width)
    feats, target = feats[first - lags :], target[first - lags :, 0]
    replica.check_finite(torch.from_numpy(feats), "values")
    version, model = replica.current()
    with torch.no_grad():
        out_t = model(torch.from_numpy(feats))[:, 0]
    replica.check_output(out_t, version)
    out = out_t.numpy()
    errors = np.zeros(len(x))
    errors[first:] = np.abs(out[:-1] - target[:-1])
    score = float(DETECTOR.scores(errors, x, first, 0)[-1])
    forecast = float((x[-1] + out[-1]) * span + spec["lo"])  # the model forecasts the change
    replica.check_output(torch.tensor([score, forecast]), version)
    replica.served(len(x) - first)
    return AnomalyResponse(
        series=request.series,
        anomaly_score=score,
        alarm=score >= DETECTOR.alarm_level,
        forecast=forecast,
        model_version=version,
        replica=replica.replica_id,
    )


IMAGES = InputRoutes(router=_images)
TEXTS = InputRoutes(router=_texts, warm_up=_warm_up_text)
DYNAMICS = InputRoutes(router=_dynamics)
SERIES = InputRoutes(router=_series)
