"""The controller on Ray: an async actor around :class:`~ddn_ray.controller.Controller` that adds the long-polls
(replicas wait in :meth:`ControllerActor.wait_for_version` and wake within milliseconds of a publish) and the
stream's backpressure (:meth:`ControllerActor.wait_learned`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddn_ray.config import JobConfig
from ddn_ray.controller.gate import QualityGate
from ddn_ray.controller.publish import ADOPT_AFTER_S, VersionOffer, _ray_store, fits_inline
from ddn_ray.controller.state import Controller
from ddn_ray.versions import VersionStore

log = logging.getLogger(__name__)

__all__ = ["ControllerActor", "ServeReady", "create_actor"]


@dataclass(frozen=True)
class ServeReady:
    """What :meth:`ControllerActor.wait_learned` returns: may the next window be served, and from which version?

    Attributes:
        windows_done: index of the last window the trainer finished (-1: none yet).
        version: the latest version (``None``: none yet): the next window's answers must come from it or a newer
            one (``?min_version``: a request waits in its replica until that replica serves it).
    """

    windows_done: int
    version: int | None


class ControllerActor:
    """Async Ray actor around :class:`Controller` (create with ``ray.remote(ControllerActor)``).

    Long-poll methods sleep on a condition that every publish, replica ack (a replica's next long-poll) and
    progress report notifies, so waiters wake without polling.

    With ``store_uri``, every version and change of state is journaled there first (:mod:`ddn_ray.versions`).
    Created with Ray's ``max_restarts`` and ``max_task_retries=-1``, a killed controller comes back under the same
    handle, :meth:`Controller.restore` rebuilds it from the journal, and the calls that were in flight run again
    (publish, progress and trainer starts recognise a repeat). Replicas keep serving the version they hold
    meanwhile and re-attach with their next long-poll.

    Args:
        store_uri: a local path or pyarrow URI for the journal and weights files; ``None``: memory only (a
            restart then starts empty: do not combine it with ``max_restarts``).
        memory_versions: with ``store_uri``, the newest this many versions' weights stay in the object store, older
            kept ones on file (:class:`Controller`).
    """

    def __init__(
        self,
        replica_ttl_s: float = 30.0,
        keep_versions: int = 64,
        first_version: int = 0,
        student_margin: float = 0.02,
        quality: QualityGate | None = None,
        store_uri: str | None = None,
        memory_versions: int = 4,
    ) -> None:
        from ddn_ray.metrics import ControllerMetrics

        self.c = Controller(
            store=_ray_store,
            replica_ttl_s=replica_ttl_s,
            keep_versions=keep_versions,
            first_version=first_version,
            student_margin=student_margin,
            quality=quality,
            journal=VersionStore(uri=store_uri) if store_uri is not None else None,
            memory_versions=memory_versions,
        )
        if self.c.restore():
            log.warning(
                "controller restored from %s: %d versions, latest %s",
                store_uri,
                len(self.c.records),
                self.c.latest_version,
            )
        self._cond = asyncio.Condition()
        self.metrics = ControllerMetrics()
        self._refresher: asyncio.Task[None] | None = None  # started on the actor's event loop by the first publish
        self._fresh_upto = -1  # versions up to this one have had their freshness exported
        self._actors: dict[str, Any] = {}  # replica id -> its actor handle, to tell a dead replica from a slow one

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def _wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(predicate), timeout_s)
            except asyncio.TimeoutError:
                return predicate()
        return True

    async def publish(
        self,
        weights: Mapping[str, np.ndarray] | list[Any],
        meta: Mapping[str, Any] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        student: Mapping[str, np.ndarray] | None = None,
        progress: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """:meth:`Controller.publish`: the replicas hear of an accepted version while its weights file is written
        (weights published as the trainer's object: before it is written);
        the trainer's call returns once the file and the journal lines are down (a controller killed before then
        restores without the version, and the retried call publishes it again under the same id). ``progress``:
        the learned window's metrics, recorded with an accepted version (:meth:`trainer_progress` in the same
        call).

        ``weights`` as ``[ObjectRef]`` (large weights, :func:`~ddn_ray.controller.publish_args`): the replicas are offered the
        trainer's object while the controller copies it into its own (``ray.put`` on a thread); the call returns
        once that copy exists too, so the trainer's object is needed no longer than the call. A replica that
        could not read it (its trainer died in between) keeps its version and polls again."""
        handle, loaded = None, threading.Event()
        if isinstance(weights, list):  # [the publisher's own object] (publish_args): replicas may read it at once
            (handle,) = weights
            state: Mapping[str, np.ndarray] = await handle
        else:
            state = weights
        # an accepted version's file is written once the replicas have loaded it (or after ADOPT_AFTER_S)
        result = self.c.publish(
            state,
            meta,
            preprocessing,
            student,
            durable=False,
            progress=progress,
            handle=handle,
            write_after=loaded if handle is not None else None,
        )
        self.metrics.published(result)
        if progress is not None and result["accepted"]:
            self.metrics.progress(dict(progress))
        self._refresh()
        await self._notify()
        if handle is not None and result["accepted"]:  # the controller's own copy, once the replicas have it
            version = result["version"]
            await self._wait(lambda: self.c.all_serving(version), ADOPT_AFTER_S)
            loaded.set()
            self.c.adopt(handle, await asyncio.to_thread(_ray_store, state))
        pending = self.c.pending
        if result["accepted"] and pending is not None:
            await asyncio.wrap_future(pending)
        return result

    def _refresh(self) -> None:
        if self._refresher is None:  # on the actor's event loop
            self._refresher = asyncio.get_running_loop().create_task(self.metrics.refresh_forever())

    async def rollback(self, to: int) -> dict[str, Any]:
        """:meth:`Controller.rollback`; replicas load it like any new version (``ddn-ray rollback --to``)."""
        result = self.c.rollback(to)
        await self._notify()
        return result

    async def latest_weights(self) -> tuple[int, Mapping[str, np.ndarray]]:
        """By value: for a trainer starting up or the report's static baseline."""
        return self.c.weights()

    async def preprocessing(self, version: int) -> dict[str, Any] | None:
        """The featurizer state ``version`` was trained with (the report's static baseline freezes it)."""
        return self.c.preprocessing(version)

    async def wait_for_version(
        self,
        replica_id: str,
        after: int | None,
        timeout_s: float,
        actor: Any = None,
        after_window: int | None = None,
    ) -> VersionOffer | None:
        """Long-poll: a :class:`VersionOffer` once a version newer than ``after`` exists, or once the trainer
        finished a window after ``after_window`` (an offer with ``new=False``); ``None`` on timeout.

        Small weights come by value in the reply, larger ones as a reference the replica fetches from the object
        store. ``actor``: the replica's own actor handle, so that :meth:`wait_all_serving` can tell a dead replica
        from a slow one.

        ``after`` is also the replica's word that it serves that version: a replica that loaded an offer polls
        again at once with its version, which acknowledges it (:meth:`Controller.ack`: freshness, and what
        :meth:`wait_all_serving` waits for) without a call of its own. A replica this controller has not seen
        (a new one, or every one after a restore) is only recorded as serving it.
        """
        back = replica_id not in self.c.replica_versions()
        acked = self.c.polled(replica_id, after)
        if acked:
            self._export_freshness()
        if back or acked:  # an ack, or a restored controller's first sight of a replica, may complete a wait
            await self._notify()
        if actor is not None:
            self._actors[replica_id] = actor

        def newer() -> bool:
            return self.c.latest_version is not None and (after is None or self.c.latest_version > after)

        def moved() -> bool:  # only for a replica serving a version already
            return after is not None and after_window is not None and self.c.windows_done > after_window

        if not await self._wait(lambda: newer() or moved(), timeout_s):
            return None
        if after is not None and not newer():  # only the trainer's window moved
            return VersionOffer(after, None, None, {}, None, windows_done=self.c.windows_done)  # new: False
        version, ref = self.c.served_handle()
        weights = self.c.served_weights(version)
        inline = fits_inline(weights)
        return VersionOffer(
            version=version,
            weights=dict(weights) if inline else None,
            ref=None if inline else [ref],
            meta=self.c.record(version).meta,
            preprocessing=self.c.preprocessing(version),
            windows_done=self.c.windows_done,
        )

    def _export_freshness(self) -> None:
        """Export the freshness of the versions every live replica serves now (once each)."""
        self._refresh()
        fresh = []
        for rec in reversed(self.c.records):  # newest first, down to the last version exported
            if rec.version <= self._fresh_upto:
                break
            if rec.all_served_s is not None:
                fresh.append(rec)
        for rec in reversed(fresh):
            if rec.all_served_s is not None:
                self.metrics.served(rec.all_served_s)
        if fresh:
            self._fresh_upto = fresh[0].version

    async def wait_all_serving(self, version: int, timeout_s: float, check_after_s: float = 0.25) -> bool:
        """Wait until every live replica serves ``version`` or newer. A replica still behind after
        ``check_after_s`` is asked whether its actor lives (``__ray_ready__``); a dead one (SIGKILL, a lost node)
        is dropped from the expected set at once (:meth:`Controller.replica_gone`) instead of after
        ``replica_ttl_s``, so the stream does not wait for it or for its replacement."""
        deadline = time.monotonic() + timeout_s
        done = lambda: self.c.all_serving(version)
        while not await self._wait(done, max(0.0, min(check_after_s, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return False
            await self._drop_dead(self.c.lagging(version), timeout_s=max(0.05, min(1.0, deadline - time.monotonic())))
        return True

    async def _drop_dead(self, replicas: list[str], timeout_s: float) -> None:
        import ray

        async def dead(replica: str) -> bool:
            actor = self._actors.get(replica)
            if actor is None:
                return False
            try:
                await asyncio.wait_for(actor.__ray_ready__.remote(), timeout_s)
            except ray.exceptions.ActorDiedError:
                return True
            except Exception:  # noqa: BLE001 (slow or unreachable for now: not known dead)
                return False
            return False

        for replica, is_dead in zip(replicas, await asyncio.gather(*(dead(r) for r in replicas))):
            if is_dead:
                log.warning("replica %s died; it is no longer expected to serve new versions", replica)
                self.c.replica_gone(replica)
                self._actors.pop(replica, None)
        await self._notify()

    async def num_live_replicas(self) -> int:
        return len(self.c.live_replicas())

    async def trainer_ready(
        self,
        next_offset: int,
        next_window: int,
        version: int | None,
        preprocessing: Mapping[str, Any] | None = None,
        pid: int | None = None,
        device: Mapping[str, Any] | None = None,
    ) -> int:
        generation = self.c.trainer_ready(next_offset, next_window, version, preprocessing, pid, device)
        await self._notify()
        return generation

    async def wait_trainer_restart(self, after_generation: int, timeout_s: float) -> dict[str, Any] | None:
        """Long-poll: the trainer's start record once its generation passes ``after_generation`` (a restart of
        its worker group), else ``None`` after ``timeout_s``."""
        newer = lambda: self.c.trainer is not None and int(self.c.trainer["generation"]) > after_generation
        return self.c.trainer if await self._wait(newer, timeout_s) else None

    async def wait_trainer_ready(self, timeout_s: float) -> dict[str, Any] | None:
        await self._wait(lambda: self.c.trainer is not None, timeout_s)
        return self.c.trainer

    async def trainer_progress(self, metrics: Mapping[str, Any]) -> None:
        self.c.trainer_progress(metrics)
        self.metrics.progress(dict(metrics))
        await self._notify()

    async def wait_progress(self, window: int, timeout_s: float) -> int:
        """Wait until the trainer finished ``window``; return the last finished window index."""
        await self._wait(lambda: self.c.windows_done >= window, timeout_s)
        return self.c.windows_done

    async def wait_learned(self, window: int, timeout_s: float) -> ServeReady:
        """The stream's backpressure, one call a window: wait until the trainer finished ``window`` (up to
        ``timeout_s``; ``window < 0``: no wait), and say which version that made.

        The replicas are not waited for: the window's requests ask for the window (``?min_window``) or the
        version (``?min_version``), and each replica holds them until it is there
        (:meth:`ddn_ray.serve.Predictor.wait_learned`), so the driver's requests travel while the trainer learns
        and the replicas load; the main job calls this meanwhile, to check the answers' versions.

        Returns:
            A :class:`ServeReady`; ``windows_done < window`` when the trainer is not there yet (call again).
        """
        if window >= 0:
            await self._wait(lambda: self.c.windows_done >= window, timeout_s)
        return ServeReady(self.c.windows_done, self.c.latest_version)

    async def latest_version(self) -> int | None:
        return self.c.latest_version

    async def set_model_spec(self, spec: dict[str, Any]) -> None:
        """What replicas need to build the model: ``model`` (ModelConfig dict), ``num_features``, ``num_classes``."""
        self.c.set_spec(spec)

    async def model_spec(self) -> dict[str, Any] | None:
        return self.c.spec

    async def pid(self) -> int:
        """The actor's process id (fault-injection tests and benchmarks kill it)."""
        import os

        return os.getpid()

    async def summary(self) -> dict[str, Any]:
        return self.c.summary()


def create_actor(*, job: JobConfig, store_uri: str, first_version: int = 0) -> Any:
    """Create the job's named controller actor (``controller.name`` in ``ray.namespace``) on the Ray cluster this
    process is connected to, journaling under ``store_uri`` (:mod:`ddn_ray.versions`).

    It takes no CPU, runs up to 1,000 calls at once (replicas' long-polls), and when killed Ray restarts it up
    to ``controller.max_restarts`` times; it then restores itself from the journal and the calls in flight run
    again (``max_task_retries=-1``).

    Args:
        job: the job's config (``controller``, ``distill.margin``, ``ray.namespace``).
        store_uri: this attempt's journal: ``<storage_path>/<run_name>/controller/<attempt>``.
        first_version: the lowest version id to give (a restarted service continues its versions).

    Returns:
        The actor handle.
    """
    import ray

    cfg = job.controller
    return (
        ray.remote(ControllerActor)
        .options(
            name=cfg.name,
            namespace=job.ray.namespace,
            num_cpus=0,
            max_concurrency=1000,
            max_restarts=cfg.max_restarts,
            max_task_retries=-1,
        )
        .remote(
            replica_ttl_s=max(30.0, 3 * cfg.poll_timeout_s),
            first_version=first_version,
            student_margin=job.distill.margin,
            quality=QualityGate.of(cfg),
            store_uri=store_uri,
            memory_versions=cfg.memory_versions,
        )
    )
