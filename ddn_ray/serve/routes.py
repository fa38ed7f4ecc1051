"""What a replica serves now (:class:`Served`), and what a use case's routes may use of it (:class:`InputRoutes`,
:class:`Replica`, :func:`current_replica`)."""

# No `from __future__ import annotations` here: FastAPI must see the real request model
# type on the route methods, or it reads `request` as a query parameter.
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from ray import serve

from ddn_ray.features import Featurizer

__all__ = ["InputRoutes", "Replica", "Served", "current_replica"]


@dataclass(frozen=True)
class Served:
    """What a replica serves now, read once per request (the poller swaps the whole object).

    Attributes:
        version: the model version.
        model: the model in eval mode (a dynamically quantised copy with ``serve.quantize``).
        featurizer: the version's preprocessing (``None``: a model of rows of numbers).
        exit_macs: multiply-accumulates to answer one row at each exit, the head's last
            (:func:`ddn_ray.exits.exit_macs`, counted on the float model once per architecture).
        served_model: ``teacher`` (the learner's model) or ``student`` (its distilled student, chosen by the
            controller: :func:`ddn_ray.distill.serve_student`).
    """

    version: int
    model: torch.nn.Module
    featurizer: Featurizer | None
    exit_macs: tuple[int, ...]
    served_model: str = "teacher"


@dataclass(frozen=True)
class InputRoutes:
    """What a use case adds to every replica that serves its models: routes for its raw inputs.

    A replica includes ``router`` when its input spec names this object (``inputs["routes"]``, a
    ``"package.module:attribute"`` name, :mod:`ddn_ray.registry`), so the engine imports no use case. A
    route handler takes the replica with ``Depends(current_replica)`` and answers through its public
    methods (:meth:`~ddn_ray.serve.Predictor.answer`, :meth:`~ddn_ray.serve.Predictor.current`, :meth:`~ddn_ray.serve.Predictor.reject`, ...).

    Attributes:
        router: the routes (paths relative to the app's route prefix).
        warm_up: called once with the input spec before the replica takes traffic (e.g. load a text
            encoder); ``None``: nothing to load.
    """

    router: APIRouter
    warm_up: Callable[[Mapping[str, Any]], None] | None = None


class Replica(Protocol):
    """What an :class:`InputRoutes` handler may use of the replica serving its request (:class:`~ddn_ray.serve.Predictor`)."""

    @property
    def inputs(self) -> dict[str, Any]: ...
    @property
    def replica_id(self) -> str: ...
    @property
    def max_batch_rows(self) -> int: ...
    def current(self) -> tuple[int, torch.nn.Module]: ...
    def check_batch(self, n: int) -> None: ...
    def served(self, rows: int) -> None: ...
    def answer(
        self,
        x: torch.Tensor | None,
        records: "list[dict[str, Any]] | None" = None,
        split: "tuple[list[str], list[list[Any]]] | None" = None,
        exit_threshold: float | None = None,
    ) -> BaseModel: ...
    def reject(self, status: int, message: str) -> HTTPException: ...
    async def wait_version(self, version: int) -> bool: ...
    async def wait_learned(self, window: int) -> bool: ...
    def check_finite(self, x: torch.Tensor, name: str) -> None: ...
    def check_output(self, out: torch.Tensor, version: int) -> None: ...
    @property
    def service(self) -> Any: ...
    def featurizer(self) -> Featurizer | None: ...


def current_replica() -> Replica:
    """The replica serving this request: a FastAPI dependency for :class:`InputRoutes` handlers."""
    return cast(Replica, serve.get_replica_context().servable_object)
