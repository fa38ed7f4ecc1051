"""The controller's state, a plain synchronous class (tested in-process, wrapped by
:class:`~ddn_ray.controller.ControllerActor`): versions and their journal, the replicas' acknowledgements, the
trainer's progress."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddn_ray.controller.gate import Gate, QualityGate, check_quality, check_update
from ddn_ray.controller.publish import ADOPT_AFTER_S, _copy_store
from ddn_ray.versions import VersionStore

log = logging.getLogger(__name__)

__all__ = ["Controller", "VersionRecord"]


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
            handle: where replicas can read ``weights`` already (the publisher's object, :func:`~ddn_ray.controller.publish_args`):
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

    def polled(self, replica_id: str, serving: int | None) -> bool:
        """A replica's long-poll, which says it serves ``serving``: an :meth:`ack` when this controller has seen
        the replica and ``serving`` is newer than what it knew (the replica loaded the version it was offered and
        polled again); else :meth:`replica_seen` (a new replica, or any replica after a :meth:`restore`: when it
        loaded ``serving`` is not known, so no freshness is recorded for it).

        Returns:
            Whether it was an ack.
        """
        if serving is not None and replica_id in self._replicas and self._replica_version.get(replica_id, -1) < serving:
            self.ack(replica_id, serving)
            return True
        self.replica_seen(replica_id, serving=serving)
        return False

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
