"""How a version's weights travel: by value when small, as an object-store reference when large
(:func:`publish_args`), and what a replica's long-poll is answered with (:class:`VersionOffer`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ADOPT_AFTER_S", "INLINE_WEIGHTS_BYTES", "VersionOffer", "fits_inline", "publish_args"]


#: Weights up to this size travel by value in a replica's long-poll reply (Ray's ``max_direct_call_object_size``,
#: under which it inlines an object in the RPC): no second round trip to the controller to fetch them.
INLINE_WEIGHTS_BYTES = 100 * 1024


#: A version published as the trainer's object (:func:`publish_args`) is copied into the controller's own, and its
#: weights file written, once every replica serves it, or after this many seconds: neither competes with the
#: replicas' loads for the CPU.
ADOPT_AFTER_S = 1.0


@dataclass(frozen=True)
class VersionOffer:
    """What :meth:`~ddn_ray.controller.ControllerActor.wait_for_version` answers a replica: the version to serve next.

    Attributes:
        version: its id.
        weights: the ``state_dict`` the replica serves (numpy arrays) when it is small
            (:data:`INLINE_WEIGHTS_BYTES`), else ``None``.
        ref: else ``[ObjectRef]`` of those weights, owned by the controller (in a list, so that Ray does not resolve
            it on the way: the replica fetches it from the object store, zero-copy on the controller's node).
        meta: the version's meta (``num_classes``, ``served_model``, ...).
        preprocessing: the featurizer state it was trained with, or ``None``.
        windows_done: the last window the trainer had finished when the offer was made (``-1``: none), for the
            requests that ask for it (``?min_window``). An offer of the version the replica serves already (the
            trainer finished a window without a new version: a rejected update, ``publish_every_windows``)
            carries no weights and no ``ref``: :attr:`new` is ``False``.
    """

    version: int
    weights: Mapping[str, np.ndarray] | None
    ref: list[Any] | None
    meta: dict[str, Any]
    preprocessing: dict[str, Any] | None
    windows_done: int = -1

    @property
    def new(self) -> bool:
        """Whether it offers a version to load (weights or ``ref``), not only the trainer's progress."""
        return self.weights is not None or self.ref is not None

    async def fetch_weights(self) -> Mapping[str, np.ndarray]:
        """The weights: those in the reply, else fetched from the object store (in a replica's event loop).

        Raises:
            ValueError: the offer has neither (not made by :meth:`~ddn_ray.controller.ControllerActor.wait_for_version`).
        """
        if self.weights is not None:
            return self.weights
        if not self.ref:
            raise ValueError(f"the offer of version {self.version} has no weights and no reference to them")
        weights: Mapping[str, np.ndarray] = await self.ref[0]
        return weights


def fits_inline(weights: Mapping[str, np.ndarray]) -> bool:
    """Whether ``weights`` travel by value in a call or a reply (at most :data:`INLINE_WEIGHTS_BYTES`)."""
    return sum(a.nbytes for a in weights.values()) <= INLINE_WEIGHTS_BYTES


def publish_args(weights: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray] | list[Any]:
    """What a trainer passes as ``weights`` to :meth:`~ddn_ray.controller.ControllerActor.publish`: weights up to
    :data:`INLINE_WEIGHTS_BYTES` by value (inlined in the call), larger ones as ``[ray.put(weights)]``.

    The replicas then read the trainer's own object at once, while the controller makes its copy (which it owns:
    it outlives the trainer) off their path; the call returns once that copy exists. Passed by value instead,
    Ray would put the same object, but the controller could not hand it on.
    """
    if fits_inline(weights):
        return weights
    import ray

    return [ray.put(dict(weights))]


def _copy_store(weights: Mapping[str, np.ndarray]) -> tuple[Any, Mapping[str, np.ndarray]]:
    copy = {k: np.array(v, copy=True) for k, v in weights.items()}
    return copy, copy


def _ray_store(weights: Mapping[str, np.ndarray]) -> tuple[Any, Mapping[str, np.ndarray]]:
    """The controller actor's own copy of a version's weights, as ``(handle, view)``: weights that travel by value
    in every offer (:func:`fits_inline`) are copied in the actor's memory, since no replica reads them from the
    object store (a ``ray.put`` and ``ray.get`` of a 20 KB MLP took 2.2 ms of the controller's publish, on a W=50
    window's path); larger ones are put in the object store, owned by the controller, and read back zero-copy."""
    if fits_inline(weights):
        return _copy_store(weights)
    import ray

    ref = ray.put(dict(weights))  # owned by the controller: outlives the publishing worker
    return ref, ray.get(ref)
