"""The bodies of ``POST /predict`` (request and answers) and the HTTP errors a replica answers with."""

# No `from __future__ import annotations` here: FastAPI must see the real request model
# type on the route methods, or it reads `request` as a query parameter.
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ddn_ray import guard
from ddn_ray.guard import ModelFloat

__all__ = [
    "PredictRequest",
    "PredictResponse",
    "RecordsResponse",
    "ValuesResponse",
    "check_instances",
    "error_detail",
    "http_error",
]


Value = str | int | float | bool | None


class PredictRequest(BaseModel):
    """Request body: exactly one of ``instances`` (``(batch, num_features)`` finite numbers) or ``records``
    (one object of named columns per row, for a model of a user's table; ``GET /schema`` lists the columns)."""

    model_config = ConfigDict(extra="forbid")
    instances: list[list[ModelFloat]] | None = Field(None, min_length=1)
    # Any, not Value: each value is checked against the served schema by the featurizer (a 422 naming
    # records[i].column), and pydantic's union check would double the cost of a request.
    records: list[dict[str, Any]] | None = Field(None, min_length=1)
    # The same rows in pandas' split orientation (df.to_json(orient="split", index=False)): names sent once.
    columns: list[str] | None = Field(None, min_length=1)
    data: list[list[Any]] | None = Field(None, min_length=1)
    exit_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="early exit: a row is answered by the first exit whose confidence exceeds this "
        "(1: the last exit); None: the model's model.exit_threshold",
    )

    @field_validator("records", "columns", "data")
    @classmethod
    def _text_rule(cls, value: Any, info: ValidationInfo) -> Any:
        return None if value is None else guard.check_strings(value, str(info.field_name))

    @model_validator(mode="before")
    @classmethod
    def _one_of(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        if (raw.get("columns") is None) != (raw.get("data") is None):
            missing = "data" if raw.get("data") is None else "columns"
            raise ValueError(f"'columns' and 'data' go together (pandas' split orientation); '{missing}' is missing")
        if sum(raw.get(k) is not None for k in ("instances", "records", "columns")) != 1:
            raise ValueError(
                "send exactly one of 'instances' (rows of numbers), 'records' (objects of named "
                f"columns) or 'columns' + 'data' (named columns, rows of values); got {sorted(raw)}"[:300]
            )
        return raw


class ValuesResponse(BaseModel):
    """A regression model's answer on ``/predict``: one row of outputs per instance (``ids`` for records)."""

    outputs: list[list[float]]
    model_version: int
    replica: str
    ids: list[str | None] | None = None
    event_ids: list[str] | None = None
    macs: list[int] | None = None


class RecordsResponse(BaseModel):
    """The answer to ``records``: the class of each row by name (``None``: an output not yet given a class),
    its id, the class probabilities in ``class_ids`` order (``GET /schema`` lists the classes)."""

    predictions: list[Value]
    class_ids: list[int]
    probabilities: list[list[float]]
    model_version: int
    replica: str
    ids: list[str | None] | None = None
    event_ids: list[str] | None = None
    exits: list[int] | None = None
    macs: list[int] | None = None


class PredictResponse(BaseModel):
    """Response body: one prediction and probability row per instance, the exit that answered it (0 for a model
    with one exit) and the multiply-accumulates that answer cost (``FlopCounterMode``, :mod:`ddn_ray.exits`)."""

    predictions: list[int]
    probabilities: list[list[float]]
    model_version: int
    replica: str
    exits: list[int] | None = None
    macs: list[int] | None = None


def error_detail(message: str) -> list[dict[str, Any]]:
    """A 422's ``detail`` as the published OpenAPI says (FastAPI's ``HTTPValidationError``): a list of
    ``{loc, msg, type}``, the message naming the field."""
    return [{"loc": ["body"], "msg": message, "type": "value_error"}]


def http_error(status: int, message: str) -> HTTPException:
    """The error to raise: a 422's ``detail`` is :func:`error_detail`; other statuses carry the message."""
    if status == 422:
        return HTTPException(422, error_detail(message))
    return HTTPException(status, message)


def check_instances(instances: "list[list[float]]", num_features: int, max_batch_rows: int) -> None:
    """Check the batch's shape.

    Raises:
        HTTPException: 413 when there are more than ``max_batch_rows`` rows, 422 when a
            row does not have ``num_features`` values (the message names the row).
    """
    if len(instances) > max_batch_rows:
        raise http_error(413, f"instances has {len(instances)} rows; at most {max_batch_rows} per request")
    for i, row in enumerate(instances):
        if len(row) != num_features:
            raise http_error(422, f"instances[{i}] has {len(row)} features; expected {num_features}")
