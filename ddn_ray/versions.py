"""Durable version records: what a restarted controller restores its versions and weights from.

A :class:`VersionStore` is a directory on any pyarrow filesystem (a local path, NFS, ``s3://``, ``gs://``):

- ``v00000012.npz``: one version's ``state_dict`` (``np.savez``), written to a temporary name and moved into
  place, so a reader sees the whole file or none of it;
- ``journal.jsonl``: one JSON line per change of the controller's state (a version published, a replica's
  acknowledgement, a rejection, a trainer start or window, a rollback, a dead replica), appended in order.
  A line torn by a crash in the middle of a write is the last one; :meth:`VersionStore.events` drops it.
  A filesystem that cannot append (an object store) gets one object per line under ``journal/`` instead.

Writes run in order on one writer thread (:meth:`VersionStore.submit`): a version's weights file, then its
journal line, then whatever was appended after it. The controller tells the replicas of a version while its
file is being written, and answers the trainer's publish only once the file and the line are down: a
controller killed in between restores without that version, and the trainer's retried call (Ray's
``max_task_retries``) publishes the same weights under the same version id again
(:meth:`ddn_ray.controller.Controller.restore`). A 40 MB ``state_dict`` takes ~35-60 ms to write here, which
replicas no longer wait for (benchmarks/freshness.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow.fs as pafs

log = logging.getLogger(__name__)

__all__ = ["JOURNAL", "VersionStore", "attempt_name", "open_uri", "read_npz", "write_npz"]

JOURNAL = "journal.jsonl"
SEGMENTS = "journal"  # where a filesystem that cannot append (S3, GCS) keeps the journal: one object per line


def attempt_name() -> str:
    """This attempt of a run (one driver's life): ``<time>-<pid>``, sorting in the order attempts ran. Its
    controller journals under ``<run>/controller/<attempt>``: a new attempt (a resumed run, a restarted
    service) starts its own journal; a controller actor that Ray restarts gets the same constructor arguments
    and so finds its attempt's."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _log_failure(future: Future, what: str) -> None:
    """Log the error of a queued write nobody waits for, once it is done."""

    def check(done: Future) -> None:
        if done.exception() is not None:
            log.error("%s failed: %r", what, done.exception())

    future.add_done_callback(check)


def open_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path on it)`` of a local path or a pyarrow filesystem URI (``s3://``, ``gs://``, ...)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), uri


def write_npz(fs: pafs.FileSystem, path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays (``np.savez``) atomically: to a temporary name, then moved into place."""
    tmp = f"{path}.tmp"
    with fs.open_output_stream(tmp) as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]  # names, arrays
    fs.move(tmp, path)


def read_npz(fs: pafs.FileSystem, path: str) -> dict[str, np.ndarray]:
    """Named arrays written by :func:`write_npz`.

    Raises:
        FileNotFoundError: no such file.
    """
    with fs.open_input_file(path) as f, np.load(f) as z:
        return {k: z[k] for k in z.files}


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars as Python numbers, sets as sorted lists, non-finite floats as strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [_plain(v) for v in items]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if value.keys() == {"__float__"}:
            return float(value["__float__"])
        return {k: _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


class VersionStore:
    """Weights files and an append-only journal in one directory.

    Args:
        uri: a local path or a pyarrow filesystem URI of the directory (created if missing).
        filesystem: the filesystem ``uri`` is a path on, instead of the one the URI names.
        read_only: only read (:meth:`events`, :meth:`read_weights`): nothing is created or appended.
    """

    def __init__(self, *, uri: str, filesystem: pafs.FileSystem | None = None, read_only: bool = False) -> None:
        self.fs, self.root = (filesystem, uri) if filesystem is not None else open_uri(uri)
        self.uri, self._read_only = uri, read_only
        self._journal: Any = None
        self._writer: ThreadPoolExecutor | None = None  # one thread: writes land in the order they were asked for
        self._segments = len(self._segment_paths())
        if read_only:
            return
        self.fs.create_dir(self.root, recursive=True)
        if self._segments:  # a store that could not append: it goes on in segments
            return
        torn = self._torn_tail()
        try:
            self._journal = self.fs.open_append_stream(f"{self.root}/{JOURNAL}")
        except NotImplementedError:  # an object store: one object per line
            log.info("%s cannot append: the journal is written as one object per line", uri)
            self.fs.create_dir(f"{self.root}/{SEGMENTS}", recursive=True)
            return
        if torn:  # a crash tore the last line: end it, so the next line starts on its own
            self._journal.write(b"\n")
            self._journal.flush()

    def _torn_tail(self) -> bool:
        info = self.fs.get_file_info(f"{self.root}/{JOURNAL}")
        if info.type != pafs.FileType.File or not info.size:
            return False
        with self.fs.open_input_file(info.path) as f:
            f.seek(info.size - 1)
            return f.read(1) != b"\n"

    def _segment_paths(self) -> list[str]:
        sel = pafs.FileSelector(f"{self.root}/{SEGMENTS}", allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(sel) if i.path.endswith(".json"))

    def weights_name(self, version: int, kind: str = "v") -> str:
        """The file name of ``version``'s weights (``kind`` ``"v"``: the model, ``"s"``: its student)."""
        return f"{kind}{version:08d}.npz"

    def write_weights(self, name: str, weights: Mapping[str, np.ndarray]) -> None:
        """Write a ``state_dict`` of numpy arrays atomically (a temporary file moved into place)."""
        write_npz(self.fs, f"{self.root}/{name}", weights)

    def read_weights(self, name: str) -> dict[str, np.ndarray]:
        """A weights file as ``{tensor name: array}``.

        Raises:
            FileNotFoundError: no such file.
        """
        return read_npz(self.fs, f"{self.root}/{name}")

    def delete_weights(self, name: str) -> None:
        """Remove a weights file no kept version needs (missing is fine), after the writes queued before.

        Queued without a wait once a writer thread runs: a publish that drops an old version must not wait for
        its own weights file (a failure is logged; :meth:`flush` waits for it)."""

        def delete() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(f"{self.root}/{name}")

        if self._writer is None:
            delete()
        else:
            _log_failure(self._writer.submit(delete), f"deleting {self.uri}/{name}")

    def append(self, op: str, *, wait: bool = True, **fields: Any) -> None:
        """Append one journal line ``{"op": op, **fields}`` and flush it to the filesystem, after every write
        asked for before it.

        Args:
            wait: return once the line is written; ``False``: once it is queued (a line whose loss in a crash
                costs nothing, e.g. a replica's acknowledgement).

        Raises:
            ValueError: the store was opened ``read_only``.
        """
        future = self.submit(op, **fields)
        if wait:
            future.result()
        else:
            _log_failure(future, f"appending {op!r} to {self.uri}/{JOURNAL}")

    def submit(self, op: str, weights: Sequence[tuple[str, Mapping[str, np.ndarray]]] = (), **fields: Any) -> Future:
        """Queue ``weights`` files (``(name, state_dict)`` pairs, :meth:`write_weights`) and then the journal line
        ``{"op": op, **fields}`` on the writer thread, behind every write queued before.

        The line is made now (``fields`` may change after); the arrays are read when written: do not modify them.

        Returns:
            A future done once the files and the line are written (its ``result()`` raises what a write raised).

        Raises:
            ValueError: the store was opened ``read_only``.
        """
        if self._journal is None and self._read_only:
            raise ValueError(f"{self.uri} was opened read-only")
        line = json.dumps({"op": op, **_plain(fields)}, separators=(",", ":")) + "\n"
        files = list(weights)

        def write() -> None:
            for name, state in files:
                self.write_weights(name, state)
            self._append_line(line)

        return self._executor().submit(write)

    def hold(self, until: threading.Event, timeout_s: float) -> None:
        """Queue a pause: the writes queued after this one start once ``until`` is set, or ``timeout_s`` seconds
        after the writer reaches it (the controller holds a large version's file until the replicas have loaded
        it, so the two do not compete for the CPU). A line appended with ``wait=True`` meanwhile waits too.

        Raises:
            ValueError: the store was opened ``read_only``.
        """
        if self._read_only:
            raise ValueError(f"{self.uri} was opened read-only")
        self._executor().submit(until.wait, timeout_s)

    def _executor(self) -> ThreadPoolExecutor:
        """The one writer thread, started at the first write: the order writes are queued in is the order they
        land in."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="version-store")
        return self._writer

    def flush(self) -> None:
        """Wait until every queued write is done."""
        if self._writer is not None:
            self._writer.submit(lambda: None).result()

    def _append_line(self, line: str) -> None:
        if self._journal is not None:
            self._journal.write(line.encode())
            self._journal.flush()
            return
        # an object is written whole or not at all: no temporary name needed
        with self.fs.open_output_stream(f"{self.root}/{SEGMENTS}/{self._segments:012d}.json") as f:
            f.write(line.encode())
        self._segments += 1

    def events(self) -> Iterator[dict[str, Any]]:
        """The journal's lines in order. A line that is not JSON can only be one a crash tore mid-write (every
        line is appended whole): it is dropped with a warning."""
        self.flush()  # what this process queued is read too
        segments = self._segment_paths()
        if segments:
            parts = []
            for path in segments:
                with self.fs.open_input_stream(path) as f:
                    parts.append(f.read().decode())
            text = "".join(parts)
        else:
            try:
                with self.fs.open_input_stream(f"{self.root}/{JOURNAL}") as f:
                    text = f.read().decode()
            except FileNotFoundError:
                return
        for i, line in enumerate(text.split("\n")):
            if not line:
                continue
            try:
                yield _revive(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s/%s: dropped line %d, torn by a crash (%d bytes)", self.uri, JOURNAL, i + 1, len(line))

    def close(self) -> None:
        """Finish the queued writes and close the journal."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._journal is not None:
            self._journal.close()
