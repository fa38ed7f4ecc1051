"""The controller: owns model versions, gates updates and tracks replica freshness.

:class:`Controller` is a plain, synchronous class (tested in-process). It is wrapped
for Ray by :class:`ControllerActor`, an async actor that adds long-polls: replicas
wait in :meth:`ControllerActor.wait_for_version` and wake within milliseconds of
a publish. Weights are stored with ``ray.put`` *inside* the controller, so the
controller owns them: they outlive the Train worker that produced them.

Modules: :mod:`~ddn_ray.controller.gate` (may an update become a version),
:mod:`~ddn_ray.controller.state` (:class:`Controller`), :mod:`~ddn_ray.controller.actor`
(:class:`ControllerActor`, :func:`create_actor`) and :mod:`~ddn_ray.controller.publish` (how weights travel).
"""

from __future__ import annotations

from ddn_ray.controller.actor import ControllerActor, ServeReady, create_actor
from ddn_ray.controller.gate import Gate, QualityGate, check_quality, check_update
from ddn_ray.controller.publish import ADOPT_AFTER_S, INLINE_WEIGHTS_BYTES, VersionOffer, fits_inline, publish_args
from ddn_ray.controller.state import Controller, VersionRecord

__all__ = [
    "ADOPT_AFTER_S",
    "INLINE_WEIGHTS_BYTES",
    "Controller",
    "ControllerActor",
    "Gate",
    "QualityGate",
    "ServeReady",
    "VersionOffer",
    "VersionRecord",
    "check_quality",
    "check_update",
    "create_actor",
    "fits_inline",
    "publish_args",
]
