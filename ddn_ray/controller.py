"""The controller: owns model versions, gates updates and tracks replica freshness.

:class:`Controller` is a plain, synchronous class (tested in-process). It is wrapped
for Ray by :class:`ControllerActor`, an async actor that adds long-polls: replicas
wait in :meth:`ControllerActor.wait_for_version` and wake within milliseconds of
a publish. Weights are stored with ``ray.put`` *inside* the controller, so the
controller owns them: they outlive the Train worker that produced them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddn_ray.config import ControllerConfig, JobConfig
from ddn_ray.versions import VersionStore

log = logging.getLogger(__name__)

__all__ = [
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


class Gate(enum.Enum):
    """The gate's decision on a published update."""

    ACCEPT = "accept"
    REJECT_NON_FINITE = "reject_non_finite"
    REJECT_SHAPE = "reject_shape"
    REJECT_LOSS_EXPLODED = "reject_loss_exploded"
    REJECT_ACCURACY_COLLAPSED = "reject_accuracy_collapsed"
    REJECT_SUPERSEDED = "reject_superseded"


@dataclass(frozen=True)
class QualityGate:
    """Bounds on what an update did to the latest revealed window (``controller.max_loss_ratio`` and
    ``controller.max_accuracy_drop``); ``None`` turns a check off.

    Attributes:
        max_loss_ratio: reject an update whose loss on the window it learned, after learning it, is not
            finite or exceeds this times the served version's loss on the same window before (the prequential
            ``pre_loss``; at least ``loss_floor``).
        max_accuracy_drop: reject an update whose accuracy on that window, after learning it, is this much
            below the served version's before (a fraction, 0.25 = 25 points).
        loss_floor: the smallest ``pre_loss`` the ratio is taken against (a near-perfect window would make any
            noise an "explosion").
    """

    max_loss_ratio: float | None = 10.0
    max_accuracy_drop: float | None = 0.25
    loss_floor: float = 0.01

    @classmethod
    def of(cls, cfg: ControllerConfig) -> QualityGate:
        """The bounds of a job's ``controller`` section."""
        return cls(max_loss_ratio=cfg.max_loss_ratio, max_accuracy_drop=cfg.max_accuracy_drop)


def check_quality(meta: Mapping[str, Any], gate: QualityGate) -> Gate:
    """Gate an update on its scores of the latest revealed window, from its ``meta``: ``pre_loss`` /
    ``pre_accuracy`` (the served version, before the window was learned) and ``post_loss`` / ``post_accuracy``
    (the update, after). An update without them (a resume, a rollback) passes."""
    pre_loss, post_loss = meta.get("pre_loss"), meta.get("post_loss")
    ratio, drop = gate.max_loss_ratio, gate.max_accuracy_drop
    if ratio is not None and pre_loss is not None and post_loss is not None:
        exploded = math.isfinite(pre_loss) and post_loss > ratio * max(pre_loss, gate.loss_floor)
        if exploded or not math.isfinite(post_loss):
            return Gate.REJECT_LOSS_EXPLODED
    pre_acc, post_acc = meta.get("pre_accuracy"), meta.get("post_accuracy")
    known = drop is not None and pre_acc is not None and post_acc is not None and math.isfinite(pre_acc)
    if known and not post_acc >= pre_acc - drop:  # type: ignore[operator]  # a NaN accuracy fails too
        return Gate.REJECT_ACCURACY_COLLAPSED
    return Gate.ACCEPT


def _same_or_grown(new: tuple[int, ...], old: tuple[int, ...], grow: bool) -> bool:
    return new == old or (grow and len(new) == len(old) >= 1 and new[1:] == old[1:] and new[0] > old[0])


def check_update(
    weights: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray] | None, grow: bool = False
) -> Gate:
    """Gate an update: every tensor finite, and keys/shapes equal to the reference version's.

    Args:
        weights: the candidate ``state_dict`` as numpy arrays.
        reference: the current version's arrays, or ``None`` for the first version.
        grow: the update declares more classes than the reference: a tensor may then have a larger
            first dimension (the head's new rows, :func:`ddn_ray.models.grow_head`), all else equal.
    """
    if reference is not None and (
        weights.keys() != reference.keys()
        or any(not _same_or_grown(weights[k].shape, reference[k].shape, grow) for k in weights)
    ):
        return Gate.REJECT_SHAPE
    for v in weights.values():
        # Measured at 40 MB: isfinite().all() 3.2 ms, a float64 sum 5.1 ms; exact and faster.
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            return Gate.REJECT_NON_FINITE
    return Gate.ACCEPT


@dataclass
class VersionRecord:
    """One model version and how fast it reached the replicas.

    Attributes:
        version: the id, strictly increasing.
        parent: the version it was trained from (``None`` for the first).
        published_s: controller clock (seconds) when accepted.
        meta: what the trainer said about it (window, trained_end_offset, ...).
        expected: replicas live at publish time, which must serve it.
        served_s: replica id -> seconds from publish until it served this version or a newer one.
    """

    version: int
    parent: int | None
    published_s: float
    meta: dict[str, Any]
    expected: set[str]
    served_s: dict[str, float] = field(default_factory=dict)

    @property
    def all_served_s(self) -> float | None:
        """Publish -> every expected replica serving it (freshness), or ``None`` if not yet."""
        if not self.expected or not self.expected <= self.served_s.keys():
            return None
        return max(self.served_s[r] for r in self.expected)


@dataclass(frozen=True)
class ServeReady:
    """What :meth:`ControllerActor.wait_ready_to_serve` returns: may the next window be served?

    Attributes:
        windows_done: index of the last window the trainer finished (-1: none yet).
        version: the latest version (``None``: none yet).
        synced: every live replica serves ``version`` or newer (``False`` after the sync timeout, or when
            ``windows_done`` fell short of the window asked for).
    """

    windows_done: int
    version: int | None
    synced: bool


#: Weights up to this size travel by value in a replica's long-poll reply (Ray's ``max_direct_call_object_size``,
#: under which it inlines an object in the RPC): no second round trip to the controller to fetch them.
INLINE_WEIGHTS_BYTES = 100 * 1024


#: A version published as the trainer's object (:func:`publish_args`) is copied into the controller's own, and its
#: weights file written, once every replica serves it, or after this many seconds: neither competes with the
#: replicas' loads for the CPU.
ADOPT_AFTER_S = 1.0


@dataclass(frozen=True)
class VersionOffer:
    """What :meth:`ControllerActor.wait_for_version` answers a replica: the version to serve next.

    Attributes:
        version: its id.
        weights: the ``state_dict`` the replica serves (numpy arrays) when it is small
            (:data:`INLINE_WEIGHTS_BYTES`), else ``None``.
        ref: else ``[ObjectRef]`` of those weights, owned by the controller (in a list, so that Ray does not resolve
            it on the way: the replica fetches it from the object store, zero-copy on the controller's node).
        meta: the version's meta (``num_classes``, ``served_model``, ...).
        preprocessing: the featurizer state it was trained with, or ``None``.
    """

    version: int
    weights: Mapping[str, np.ndarray] | None
    ref: list[Any] | None
    meta: dict[str, Any]
    preprocessing: dict[str, Any] | None

    async def fetch_weights(self) -> Mapping[str, np.ndarray]:
        """The weights: those in the reply, else fetched from the object store (in a replica's event loop).

        Raises:
            ValueError: the offer has neither (not made by :meth:`ControllerActor.wait_for_version`).
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
    """What a trainer passes as ``weights`` to :meth:`ControllerActor.publish`: weights up to
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
    import ray

    ref = ray.put(dict(weights))  # owned by the controller: outlives the publishing worker
    return ref, ray.get(ref)


class Controller:
    """Versions, gating, replica acknowledgements and trainer progress.

    Args:
        store: keeps a published ``state_dict`` and returns ``(handle, local view)``; the
            actor uses ``ray.put`` (one copy into a controller-owned object) and reads it
            back zero-copy. The default copies the arrays (in-process use and tests).
        clock: monotonic seconds.
        replica_ttl_s: a replica not heard from for this long is no longer expected.
        keep_versions: weights of at most this many recent versions are kept.
        memory_versions: with a journal, the weights of only this many recent versions stay in ``store``; older
            kept ones are read back from their files when asked for (:meth:`handle`).
        first_version: the lowest id to give (a restarted service continues its versions).
        student_margin: a version published with a distilled student serves the student while the teacher's
            accuracy on the latest revealed window exceeds the student's by at most this
            (:func:`ddn_ray.distill.serve_student`), the teacher otherwise.
        quality: the bounds an update's scores on the window it learned must meet (:func:`check_quality`).
        journal: where every version's weights and every change of state are written before anyone hears of them
            (:mod:`ddn_ray.versions`); :meth:`restore` rebuilds a controller from it. ``None``: memory only.
    """

    def __init__(
        self,
        store: Callable[[Mapping[str, np.ndarray]], tuple[Any, Mapping[str, np.ndarray]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        replica_ttl_s: float = 30.0,
        keep_versions: int = 64,
        first_version: int = 0,
        student_margin: float = 0.02,
        quality: QualityGate | None = None,
        journal: VersionStore | None = None,
        memory_versions: int = 4,
    ) -> None:
        self._store = store or _copy_store
        self.journal = journal
        self._pending: Future[None] | None = None  # the latest publish's journal write
        self._replaying = False
        self._files: dict[int, tuple[str, str | None]] = {}  # version -> its weights file, its student's
        self.quality = quality or QualityGate()
        self.student_margin = student_margin
        self._students: dict[int, tuple[Any, Mapping[str, np.ndarray]]] = {}  # versions that serve their student
        self._last_student: Mapping[str, np.ndarray] | None = None
        self.first_version = first_version
        self._clock = clock
        self.replica_ttl_s = replica_ttl_s
        self.keep_versions = keep_versions
        self.memory_versions = memory_versions
        self.records: list[VersionRecord] = []
        self.rejected: list[dict[str, Any]] = []
        self._weights: dict[int, tuple[Any, Mapping[str, np.ndarray]]] = {}
        self._preprocessing: dict[int, dict[str, Any] | None] = {}  # the featurizer state each version learned with
        self._replicas: dict[str, float] = {}  # replica id -> last seen
        self._replica_version: dict[str, int] = {}
        self.replicas_gone: list[str] = []  # replicas found dead (their actor), in order
        self.rollbacks: list[dict[str, Any]] = []  # operator rollbacks: the new version and the one it serves again
        self.trainer_restarts: list[dict[str, Any]] = []  # worker-group restarts: where each resumed
        self.trainer: dict[str, Any] | None = None
        self.progress: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []  # drift signals with the decision each led to, in order
        self.spec: dict[str, Any] | None = None  # what replicas need to build the model
        self.restarts: list[dict[str, Any]] = []  # restores from the journal: when, and when each replica came back

    def _log(self, op: str, wait: bool = True, **fields: Any) -> None:
        if self.journal is not None and not self._replaying:
            self.journal.append(op, wait=wait, t=self._clock(), **fields)

    # versions -------------------------------------------------------------
    @property
    def latest_version(self) -> int | None:
        return self.records[-1].version if self.records else None

    def publish(
        self,
        weights: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        student: Mapping[str, np.ndarray] | None = None,
        *,
        durable: bool = True,
        progress: Mapping[str, Any] | None = None,
        handle: Any = None,
        write_after: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Gate and store an update, and choose what its replicas serve: the teacher (``weights``) or the student.

        With a journal, the version's weights file and journal line are queued on its writer thread before the
        weights are stored for the replicas (the two overlap).

        Args:
            weights: the ``state_dict`` as numpy arrays.
            meta: what the trainer says of it (``window``, ``trained_end_offset``, ``parent``, ``num_classes``, ...).
                A ``num_classes`` above the current version's lets the head grow (see :func:`check_update`).
            preprocessing: the featurizer state the weights were trained with
                (:meth:`ddn_ray.features.Featurizer.state_dict`), served with them; ``None`` for built-in tables.
            student: a distilled student's ``state_dict`` (``distill.student``); it is served instead of the
                teacher while ``meta``'s ``student_accuracy`` is within ``student_margin`` of its
                ``teacher_accuracy`` and its weights pass the gate. The version's meta gets ``served_model``
                (``teacher`` or ``student``) and ``student_gate``.
            durable: return once the file and the line are written; ``False``: once queued, :attr:`pending`
                is then done when they are (the actor tells the replicas meanwhile).
            progress: the metrics of the window the update learned, recorded as :meth:`trainer_progress` right
                after the version if it is accepted (one call a window for the trainer, and the stream's
                backpressure sees the window done and its version at once). A rejected update records nothing:
                the trainer reports the window itself, after its reaction to the rejection.
            handle: where replicas can read ``weights`` already (the publisher's object, :func:`publish_args`):
                kept as the version's handle instead of a copy of the controller's own until :meth:`adopt`
                replaces it. ``None``: the weights are stored at once (``store``).
            write_after: an accepted version's weights file and journal line are written once this is set, or
                :data:`ADOPT_AFTER_S` after the writer reaches them (:meth:`VersionStore.hold`); ``durable`` then
                waits for it.

        Returns:
            ``{"accepted": bool, "version": int | None, "decision": Gate.value}``;
            a rejected update leaves the served version unchanged.
        """
        now = self._clock()  # freshness counts the gate and the store too
        meta = dict(meta or {})
        latest = self.latest_version
        if self._retried(meta):  # the call was retried after a restart (Ray's max_task_retries): it is this one
            if progress is not None:
                self.trainer_progress(progress, durable=durable)  # a repeat is recorded once
            return {"accepted": True, "version": latest, "decision": Gate.ACCEPT.value}
        reference = self.weights(latest)[1] if latest is not None else None  # a restored one loads from its file
        before = self.records[-1].meta.get("num_classes") if self.records else None
        grow = before is not None and int(meta.get("num_classes", before)) > int(before)
        decision = check_update(weights, reference, grow)
        if decision is Gate.ACCEPT:
            decision = check_quality(meta, self.quality)
        # an operator rolled back: an update trained from before the rollback is refused, and the trainer
        # reloads the rolled-back weights (:meth:`rollback`)
        rolled_back = bool(self.records) and self.records[-1].meta.get("rollback_to") is not None
        trained_from = meta.get("parent", latest)
        if (
            decision is Gate.ACCEPT
            and rolled_back
            and trained_from is not None
            and trained_from < self.records[-1].version
        ):
            decision = Gate.REJECT_SUPERSEDED
        if decision is not Gate.ACCEPT:
            self.rejected.append({"decision": decision.value, "at_version": latest, "meta": meta})
            self._log("reject", entry=self.rejected[-1])
            return {"accepted": False, "version": latest, "decision": decision.value}
        parent = meta.get("parent", latest)
        version = max(v for v in (latest, parent, self.first_version - 1) if v is not None) + 1
        meta["served_model"] = "teacher"
        if student is not None:
            from ddn_ray.distill import serve_student

            gate = check_update(student, self._last_student)
            meta["student_gate"] = gate.value
            close = serve_student(
                float(meta.get("teacher_accuracy", math.nan)),
                float(meta.get("student_accuracy", math.nan)),
                self.student_margin,
            )
            if gate is Gate.ACCEPT:
                self._last_student = student
                if close:
                    meta["served_model"] = "student"
        served_student = student if meta["served_model"] == "student" else None
        record = VersionRecord(version, parent, now, meta, self.live_replicas())
        if write_after is not None and self.journal is not None:
            self.journal.hold(write_after, ADOPT_AFTER_S)
        files = self._write(record, preprocessing, weights, served_student)  # on the writer thread
        self._weights[version] = (handle, weights) if handle is not None else self._store(weights)  # meanwhile
        if served_student is not None:
            self._students[version] = self._store(served_student)
        self._add(record, preprocessing, files, journaled=True)
        if progress is not None:
            self.trainer_progress(progress, durable=False)  # its line after the version's: pending covers both
        if durable:
            self.wait_durable()
        return {"accepted": True, "version": version, "decision": Gate.ACCEPT.value}

    def adopt(self, handle: Any, stored: tuple[Any, Mapping[str, np.ndarray]]) -> None:
        """The controller's own copy ``stored`` (``store``'s ``(handle, view)``) of the weights published at the
        publisher's ``handle`` replaces it, for every version that holds it (a rollback may share it)."""
        for version, (held, _) in list(self._weights.items()):
            if held is handle:
                self._weights[version] = stored

    @property
    def pending(self) -> Future[None] | None:
        """The journal write of the latest publish (done once its weights file and line are written)."""
        return self._pending

    def wait_durable(self) -> None:
        """Wait for the latest publish's weights file and journal line (raises what writing them raised), and
        for the journal's other queued writes (the files of versions it dropped)."""
        if self._pending is not None:
            self._pending.result()
        if self.journal is not None:
            self.journal.flush()

    def _retried(self, meta: Mapping[str, Any]) -> bool:
        """The latest version came from this very update (same trainer generation, window and parent)."""
        if not self.records or meta.get("generation") is None:
            return False
        last = self.records[-1].meta
        return all(last.get(k) == meta.get(k) for k in ("generation", "window", "parent", "trained_end_offset"))

    def _write(
        self,
        record: VersionRecord,
        preprocessing: Mapping[str, Any] | None,
        weights: Mapping[str, np.ndarray],
        student: Mapping[str, np.ndarray] | None,
    ) -> tuple[str, str | None] | None:
        """Queue a new version's weights file(s), then its journal line (:attr:`pending` until written)."""
        if self.journal is None:
            return None
        name = self.journal.weights_name(record.version)
        student_name = self.journal.weights_name(record.version, "s") if student is not None else None
        files: list[tuple[str, Mapping[str, np.ndarray]]] = [(name, weights)]
        if student_name is not None and student is not None:
            files.append((student_name, student))
        line = self._publish_line(record, preprocessing, (name, student_name))
        self._pending = self.journal.submit("publish", weights=files, t=self._clock(), **line)
        return name, student_name

    @staticmethod
    def _publish_line(
        record: VersionRecord,
        preprocessing: Mapping[str, Any] | None,
        files: tuple[str, str | None],
        rollback_to: int | None = None,
    ) -> dict[str, Any]:
        return {
            "version": record.version,
            "parent": record.parent,
            "published_s": record.published_s,
            "meta": record.meta,
            "expected": record.expected,
            "preprocessing": dict(preprocessing) if preprocessing is not None else None,
            "files": files,
            "rollback_to": rollback_to,
        }

    def _add(
        self,
        record: VersionRecord,
        preprocessing: Mapping[str, Any] | None,
        files: tuple[str, str | None] | None,
        rollback_to: int | None = None,
        journaled: bool = False,
    ) -> None:
        """Keep a new version (its weights are stored already), journal it (unless ``journaled``: queued by
        :meth:`_write`), and drop what fell out of ``keep_versions``."""
        version = record.version
        self._preprocessing[version] = dict(preprocessing) if preprocessing is not None else None
        if files is not None:
            self._files[version] = files
            if not journaled:
                self._log("publish", **self._publish_line(record, preprocessing, files, rollback_to))
        self.records.append(record)
        if rollback_to is not None:
            self.rollbacks.append({"version": version, "rollback_to": rollback_to})
        for old in [v for v in {*self._weights, *self._files} if v <= version - self.keep_versions]:
            self._weights.pop(old, None)
            self._preprocessing.pop(old, None)
            self._students.pop(old, None)
            gone = self._files.pop(old, None)
            if gone is not None and self.journal is not None and not self._replaying:
                needed = {f for fs in self._files.values() for f in fs}
                for name in gone:
                    if name is not None and name not in needed:
                        self.journal.delete_weights(name)
        # kept on file: out of the object store (handle() reads a version back when it is asked for)
        for old in [v for v in self._weights if v <= version - self.memory_versions and v in self._files]:
            del self._weights[old]
            self._students.pop(old, None)

    def rollback(self, to: int) -> dict[str, Any]:
        """Serve version ``to`` again, as a new version (ids never decrease on a replica) with ``to``'s
        weights, preprocessing and student, and ``meta["rollback_to"] = to``. The trainer's next update, trained
        from before it, is rejected (``reject_superseded``) and the trainer reloads these weights.

        Returns:
            ``{"accepted": True, "version": the new id, "decision": "rollback", "rollback_to": to}``.

        Raises:
            KeyError: ``to`` is not held (more than ``keep_versions`` versions ago, or never published).
        """
        self.served_handle(to)  # raises KeyError when it is not held; loads it from the journal's files
        now, version = self._clock(), self.latest_version + 1  # type: ignore[operator]  # handle() found one
        self._weights[version] = self._weights[to]  # the same stored object: no copy
        if to in self._students:
            self._students[version] = self._students[to]
        meta = {**self.record(to).meta, "rollback_to": to, "parent": to}
        record = VersionRecord(version, to, now, meta, self.live_replicas())
        self._add(record, self._preprocessing.get(to), self._files.get(to), rollback_to=to)
        return {"accepted": True, "version": version, "decision": "rollback", "rollback_to": to}

    def handle(self, version: int | None = None) -> tuple[int, Any]:
        """``(version, stored handle)`` of ``version`` (default latest).

        Raises:
            KeyError: no such version is kept.
        """
        v = self.latest_version if version is None else version
        if v is not None and v not in self._weights and v in self._files:  # restored, or older: on file
            self.journal.flush()  # type: ignore[union-attr]  # its file may still be queued
            name, student = self._files[v]
            self._weights[v] = self._store(self.journal.read_weights(name))  # type: ignore[union-attr]
            if student is not None:
                self._students[v] = self._store(self.journal.read_weights(student))  # type: ignore[union-attr]
        if v is None or v not in self._weights:
            raise KeyError(f"model version {v} is not held by the controller")
        return v, self._weights[v][0]

    def weights(self, version: int | None = None) -> tuple[int, Mapping[str, np.ndarray]]:
        """``(version, the teacher's weights)``: what a trainer resumes or rolls back to."""
        v, _ = self.handle(version)
        return v, self._weights[v][1]

    def served_handle(self, version: int | None = None) -> tuple[int, Any]:
        """``(version, stored handle)`` of what replicas serve for ``version``: its student's weights when the
        version serves its student (``meta["served_model"]``), else the teacher's.

        Raises:
            KeyError: no such version is kept.
        """
        v, ref = self.handle(version)
        return v, self._students[v][0] if v in self._students else ref

    def served_weights(self, version: int) -> Mapping[str, np.ndarray]:
        """The weights replicas serve for ``version`` (kept: call :meth:`served_handle` first), as the controller's
        local, read-only view."""
        return self._students[version][1] if version in self._students else self._weights[version][1]

    def preprocessing(self, version: int) -> dict[str, Any] | None:
        """The featurizer state ``version`` was trained with (``None``: rows need no featurizing)."""
        return self._preprocessing.get(version)

    def record(self, version: int) -> VersionRecord:
        for r in reversed(self.records):
            if r.version == version:
                return r
        raise KeyError(f"model version {version} was never published")

    # replicas -------------------------------------------------------------
    def replica_seen(self, replica_id: str, serving: int | None = None) -> None:
        """A replica polled; ``serving``: the version it serves (what a restored controller learns it from)."""
        now = self._clock()
        self._replicas[replica_id] = now
        if serving is not None and replica_id not in self._replica_version:
            self._replica_version[replica_id] = serving
        if self.restarts and not self._replaying:
            back = self.restarts[-1]["reattached_s"]
            if replica_id not in back:
                back[replica_id] = now - self.restarts[-1]["restored_s"]
                self._log("reattached", replica=replica_id, after_s=back[replica_id])

    def live_replicas(self) -> set[str]:
        now = self._clock()
        return {r for r, t in self._replicas.items() if now - t <= self.replica_ttl_s}

    def replica_gone(self, replica_id: str) -> None:
        """The replica's process died: it is no longer expected to serve any version (freshness and
        :meth:`all_serving` count the live replicas). A replacement registers under its own id."""
        self._replicas.pop(replica_id, None)
        self._replica_version.pop(replica_id, None)
        for rec in self.records:
            if replica_id not in rec.served_s:
                rec.expected.discard(replica_id)
        self.replicas_gone.append(replica_id)
        self._log("gone", replica=replica_id)

    def lagging(self, version: int) -> list[str]:
        """The live replicas not yet serving ``version`` or newer."""
        return sorted(r for r in self.live_replicas() if self._replica_version.get(r, -1) < version)

    def ack(self, replica_id: str, version: int) -> None:
        """A replica now serves ``version``: it also serves every older version's successor."""
        self.replica_seen(replica_id)
        self._replica_version[replica_id] = version
        now = self._clock()
        self._log("ack", wait=False, replica=replica_id, version=version)  # stats: not worth a wait
        for rec in reversed(self.records):
            if rec.version > version:
                continue
            if replica_id in rec.served_s:
                break
            rec.served_s[replica_id] = now - rec.published_s

    def all_serving(self, version: int) -> bool:
        """Whether every live replica serves ``version`` or newer."""
        live = self.live_replicas()
        return bool(live) and all(self._replica_version.get(r, -1) >= version for r in live)

    def replica_versions(self) -> dict[str, int]:
        live = self.live_replicas()
        return {r: v for r, v in self._replica_version.items() if r in live}

    # trainer --------------------------------------------------------------
    def trainer_ready(
        self,
        next_offset: int,
        next_window: int,
        version: int | None,
        preprocessing: Mapping[str, Any] | None = None,
        pid: int | None = None,
        device: Mapping[str, Any] | None = None,
    ) -> int:
        """The trainer starts at ``next_offset`` (a resume: the checkpoint's, with its featurizer state).

        ``device``: where rank 0 learns, ``{"device": "cuda:0" | "cpu", "gpu_ids": [ids Ray assigned]}``.

        Returns:
            Its generation: 0 for the first start, ``k`` for the ``k``-th restart of its worker group (Train's
            ``FailureConfig``); windows sent to an earlier generation are skipped by this one.
        """
        retried = self.trainer is not None and (self.trainer["pid"], self.trainer["next_offset"]) == (pid, next_offset)
        if retried and pid is not None:  # the same call again (a restarted controller's retry): same generation
            return int(self.trainer["generation"])  # type: ignore[index]
        self._log(
            "trainer_ready",
            next_offset=next_offset,
            next_window=next_window,
            version=version,
            preprocessing=preprocessing,
            pid=pid,
            device=device,
        )
        generation = 0 if self.trainer is None else int(self.trainer["generation"]) + 1
        if generation:
            self.trainer_restarts.append(
                {"generation": generation, "next_window": next_window, "windows_done": self.windows_done}
            )
        self.trainer = {
            "next_offset": next_offset,
            "next_window": next_window,
            "version": version,
            "preprocessing": dict(preprocessing) if preprocessing is not None else None,
            "generation": generation,
            "pid": pid,
            "device": dict(device) if device is not None else None,
        }
        return generation

    def trainer_progress(self, metrics: Mapping[str, Any], *, durable: bool = True) -> None:
        """Record a window's metrics; its drift events (signal + decision) go to the decision log. The same
        window of the same trainer generation again (a retried call) is recorded once.

        Args:
            metrics: a :class:`~ddn_ray.learner.WindowMetrics` as a dict, with ``generation`` and ``events``.
            durable: return once its journal line is written; ``False``: once queued (:attr:`pending` is then
                done when it is written).
        """
        last = self.progress[-1] if self.progress else {}
        if "generation" in metrics and (last.get("index"), last.get("generation")) == (
            metrics.get("index"),
            metrics["generation"],
        ):
            return
        if durable or self.journal is None or self._replaying:
            self._log("progress", metrics=metrics)
        else:
            self._pending = self.journal.submit("progress", t=self._clock(), metrics=metrics)
        self.progress.append({k: v for k, v in metrics.items() if k != "events"})
        self.decisions.extend(dict(e) for e in metrics.get("events", ()))

    @property
    def windows_done(self) -> int:
        """Index of the last window the trainer finished, or -1."""
        return self.progress[-1]["index"] if self.progress else -1

    # restart -------------------------------------------------------------
    def set_spec(self, spec: Mapping[str, Any]) -> None:
        """What replicas need to build the model (:func:`ddn_ray.checkpoint.model_spec`)."""
        self.spec = dict(spec)
        self._log("spec", spec=self.spec)

    def restore(self) -> int:
        """Rebuild the state from the journal (a restarted controller actor): every version with its meta,
        preprocessing and freshness, rejections, rollbacks, dead replicas, the trainer's starts and windows, the
        decision log. Weights load from their files when first asked for. No replica counts as live until it
        polls again (:meth:`replica_seen`), so freshness waits only for the replicas that came back.

        Returns:
            How many journal lines were replayed (0: nothing to restore, a first start).
        """
        if self.journal is None:
            return 0
        clock, n = self._clock, 0
        self._replaying = True
        try:
            for e in self.journal.events():
                at = float(e.get("t", 0.0))
                self._clock = lambda at=at: at  # type: ignore[misc]  # each change at its own time
                self._replay(e)
                n += 1
        finally:
            self._clock, self._replaying = clock, False
        self._replicas.clear()
        self._replica_version.clear()
        if n:
            self.restarts.append(
                {"restored_s": self._clock(), "versions": len(self.records), "journal_lines": n, "reattached_s": {}}
            )
            self._log("restored", versions=len(self.records), journal_lines=n)
        return n

    def _replay(self, e: dict[str, Any]) -> None:
        op = e["op"]
        if op == "publish":
            record = VersionRecord(e["version"], e["parent"], e["published_s"], e["meta"], set(e["expected"]))
            name, student = e["files"]
            self._add(record, e["preprocessing"], (name, student), rollback_to=e.get("rollback_to"))
        elif op == "ack":
            self.ack(e["replica"], e["version"])
        elif op == "gone":
            self.replica_gone(e["replica"])
        elif op == "reject":
            self.rejected.append(e["entry"])
        elif op == "trainer_ready":
            self.trainer_ready(
                e["next_offset"], e["next_window"], e["version"], e["preprocessing"], e["pid"], e.get("device")
            )
        elif op == "progress":
            self.trainer_progress(e["metrics"])
        elif op == "spec":
            self.spec = e["spec"]
        elif op == "restored":
            self.restarts.append(
                {
                    "restored_s": e["t"],
                    "versions": e["versions"],
                    "journal_lines": e["journal_lines"],
                    "reattached_s": {},
                }
            )
        elif op == "reattached":
            self.restarts[-1]["reattached_s"][e["replica"]] = e["after_s"]
        else:
            raise ValueError(f"unknown journal line {op!r}")

    def summary(self) -> dict[str, Any]:
        """Versions (with freshness), rejections, trainer progress and the decision log, as plain data."""
        return {
            "versions": [
                {
                    "version": r.version,
                    "published_s": r.published_s,
                    "parent": r.parent,
                    "meta": r.meta,
                    "expected_replicas": sorted(r.expected),
                    "served_s": r.served_s,
                    "all_served_s": r.all_served_s,
                }
                for r in self.records
            ],
            "rejected": self.rejected,
            "replicas_gone": list(self.replicas_gone),
            "rollbacks": list(self.rollbacks),
            "trainer_restarts": list(self.trainer_restarts),
            "controller_restarts": list(self.restarts),
            "progress": self.progress,
            "decisions": self.decisions,
            "trainer": self.trainer,
            "replica_versions": self.replica_versions(),
        }


class ControllerActor:
    """Async Ray actor around :class:`Controller` (create with ``ray.remote(ControllerActor)``).

    Long-poll methods sleep on a condition that every publish, ack and progress
    report notifies, so waiters wake without polling.

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

        ``weights`` as ``[ObjectRef]`` (large weights, :func:`publish_args`): the replicas are offered the
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
        self, replica_id: str, after: int | None, timeout_s: float, actor: Any = None
    ) -> VersionOffer | None:
        """Long-poll: a :class:`VersionOffer` once a version newer than ``after`` exists, ``None`` on timeout.

        Small weights come by value in the reply, larger ones as a reference the replica fetches from the object
        store. ``actor``: the replica's own actor handle, so that :meth:`wait_all_serving` can tell a dead replica
        from a slow one.
        """
        back = replica_id not in self.c.replica_versions()
        self.c.replica_seen(replica_id, serving=after)
        if back:  # a restored controller's first sight of a replica may complete a wait_all_serving
            await self._notify()
        if actor is not None:
            self._actors[replica_id] = actor
        newer = lambda: self.c.latest_version is not None and (after is None or self.c.latest_version > after)
        if not await self._wait(newer, timeout_s):
            return None
        version, ref = self.c.served_handle()
        weights = self.c.served_weights(version)
        inline = fits_inline(weights)
        return VersionOffer(
            version=version,
            weights=dict(weights) if inline else None,
            ref=None if inline else [ref],
            meta=self.c.record(version).meta,
            preprocessing=self.c.preprocessing(version),
        )

    async def ack(self, replica_id: str, version: int) -> None:
        self.c.ack(replica_id, version)
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
        await self._notify()

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

    async def wait_ready_to_serve(self, window: int, progress_timeout_s: float, sync_timeout_s: float) -> ServeReady:
        """The stream's backpressure in one call (one round trip a window instead of three): wait until the
        trainer finished ``window`` (up to ``progress_timeout_s``; ``window < 0``: no wait), then until every live
        replica serves the latest version (up to ``sync_timeout_s``, as :meth:`wait_all_serving`).

        Returns:
            A :class:`ServeReady`; ``windows_done < window`` when the trainer is not there yet (nothing was
            waited for the replicas then: call again).
        """
        if window >= 0:
            await self._wait(lambda: self.c.windows_done >= window, progress_timeout_s)
            if self.c.windows_done < window:
                return ServeReady(self.c.windows_done, self.c.latest_version, False)
        latest = self.c.latest_version
        synced = latest is None or await self.wait_all_serving(latest, sync_timeout_s)
        return ServeReady(self.c.windows_done, latest, synced)

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
