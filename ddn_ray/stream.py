"""Stream sources, windows and offsets.

A source yields :class:`Window` objects in stream order. An *offset* is a row's
position in the source (0-based, counting bad rows too), so a window is the
half-open range ``[start, end)`` of offsets. Rows whose features are not finite,
or whose label is not a class id, are *quarantined*: counted, kept with their
offsets and reasons, and never trained on.

Two sources behave the same way:

* :class:`ReplaySource` replays a recorded table (e.g. Elec2) in time order;
* :class:`LandingDirSource` follows a directory where a producer writes parquet
  files (``features`` fixed-size list of float32, ``label`` int64), read in name order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ddn_ray.errors import DataError

__all__ = [
    "LandingDirSource",
    "Quarantine",
    "ReplaySource",
    "Table",
    "Window",
    "input_names",
    "iter_windows",
    "to_arrow",
    "with_last_label",
    "write_landing_file",
]


@dataclass(frozen=True)
class Table:
    """A labelled table in stream order.

    Attributes:
        features: ``(num_rows, num_features)`` float32.
        labels: ``(num_rows,)`` int64 class ids in ``[0, num_classes)``; for a ``regression``
            table, ``(num_rows, num_classes)`` float32 targets.
        feature_names: one name per feature column.
        num_classes: number of classes (regression: number of target columns, the model's outputs).
        task: ``"classification"`` or ``"regression"``.
    """

    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]
    num_classes: int
    task: str = "classification"

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Quarantine:
    """Rows refused by validation: their offsets and why; and files a landing dir could not read: their paths
    and why (``files``, :class:`ddn_ray.sources.LandingDirSource`)."""

    offsets: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class Window:
    """A bounded slice of the stream.

    Attributes:
        index: window number, from 0.
        start: first offset (inclusive).
        end: one past the last offset (exclusive).
        offsets: ``(n,)`` int64 offsets of the valid rows.
        features: ``(n, num_features)`` float32.
        labels: ``(n,)`` int64 (or ``(n, k)`` float32 regression targets); revealed only after the window was served.
    """

    index: int
    start: int
    end: int
    offsets: np.ndarray
    features: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _validate(
    offsets: np.ndarray, x: np.ndarray, y: np.ndarray, num_classes: int, quarantine: Quarantine
) -> np.ndarray:
    """Boolean mask of good rows; bad rows go to ``quarantine``. ``y`` of 2 dimensions holds
    regression targets, which must be finite; else class ids, which must lie in ``[0, num_classes)``."""
    finite = np.isfinite(x).all(axis=1)
    label_ok = np.isfinite(y).all(axis=1) if y.ndim == 2 else (y >= 0) & (y < num_classes)
    good: np.ndarray = finite & label_ok
    for i in np.flatnonzero(~good):
        quarantine.offsets.append(int(offsets[i]))
        reason = (
            "non-finite feature"
            if not finite[i]
            else "non-finite target"
            if y.ndim == 2
            else f"label {int(y[i])} not in [0, {num_classes})"
        )
        quarantine.reasons.append(reason)
    return good


LAST_LABEL = "last_label"


def input_names(feature_names: Iterable[str], last_label: bool) -> list[str]:
    """The model's input columns: the source's features, then ``last_label`` when :func:`with_last_label` adds it."""
    return [*feature_names, *([LAST_LABEL] if last_label else [])]


def with_last_label(windows: Iterable[Window], initial: int = 0) -> Iterator[Window]:
    """Append the last revealed label as an input feature (a temporally augmented classifier).

    Every row of window ``w`` gets, as an extra last column, the label of the last row
    of window ``w - 1``: the newest label known when ``w`` is served (with one-row
    windows, the previous row's label). Source: Žliobaitė, Bifet, Read, Pfahringer &
    Holmes (2015), "Evaluation methods and decision theory for classification of
    streaming data with temporal dependence", section 6.

    Args:
        windows: the source's windows, in order.
        initial: the value for the first window (the label before the stream's start, if known).

    Yields:
        The same windows with ``features`` ``(n, num_features + 1)`` float32.

    Examples:
        >>> w = [Window(i, i, i + 1, np.array([i]), np.zeros((1, 1), np.float32), np.array([i % 2])) for i in range(3)]
        >>> [float(v.features[0, 1]) for v in with_last_label(w)]
        [0.0, 0.0, 1.0]
    """
    last = initial
    for w in windows:
        column = np.full((len(w), 1), float(last), dtype=np.float32)
        yield replace(w, features=np.hstack([w.features, column]))
        if len(w):
            last = int(w.labels[-1])


class ReplaySource:
    """Replay a recorded table in windows of ``window_size`` rows.

    Args:
        table: rows in stream order.
        window_size: rows per window (the last window may be shorter).
        start_offset: resume here (must be a window boundary of a previous run).

    Examples:
        >>> import numpy as np
        >>> t = Table(np.zeros((5, 2), np.float32), np.array([0, 1, 0, 1, 1]), ("a", "b"), 2)
        >>> [(w.start, w.end) for w in ReplaySource(t, window_size=2)]
        [(0, 2), (2, 4), (4, 5)]
    """

    def __init__(self, table: Table, window_size: int, start_offset: int = 0) -> None:
        if window_size <= 0:
            raise ValueError(f"window_size must be > 0, got {window_size}")
        self.table = table
        self.window_size = window_size
        self.start_offset = start_offset
        self.quarantine = Quarantine()

    def __iter__(self) -> Iterator[Window]:
        n = len(self.table)
        for index, start in enumerate(
            range(self.start_offset, n, self.window_size), start=self.start_offset // self.window_size
        ):
            end = min(start + self.window_size, n)
            offsets = np.arange(start, end, dtype=np.int64)
            x, y = self.table.features[start:end], self.table.labels[start:end]
            good = _validate(offsets, x, y, self.table.num_classes, self.quarantine)
            yield Window(index, start, end, offsets[good], x[good], y[good])


def iter_windows(source: Iterable[Window], last_label: bool) -> Iterator[Window]:
    """The source's windows, with the last revealed label appended as a column when ``last_label``.

    A :class:`ReplaySource` resumed at offset ``o > 0`` starts from the label of row ``o - 1``
    (known before the resume); any other source starts from 0 (see :func:`with_last_label`).
    """
    if not last_label:
        return iter(source)
    before = 0
    if isinstance(source, ReplaySource) and source.start_offset:
        before = int(source.table.labels[source.start_offset - 1])
    return with_last_label(source, before)


def to_arrow(features: np.ndarray, labels: np.ndarray) -> pa.Table:
    """Rows as an Arrow table: ``features`` fixed-size list<float32>; ``label`` int64, or for
    ``(n, k)`` regression targets a fixed-size list<float32>."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    feats = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
    if np.ndim(labels) == 2:
        y = np.ascontiguousarray(labels, dtype=np.float32)
        return pa.table(
            {"features": feats, "label": pa.FixedSizeListArray.from_arrays(pa.array(y.ravel()), y.shape[1])}
        )
    return pa.table({"features": feats, "label": pa.array(np.asarray(labels, dtype=np.int64))})


def from_arrow(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`to_arrow`: ``(features (n, d) float32, labels (n,) int64 or (n, k) float32)``.

    Zero-copy where the columns are single chunks without nulls (a window's shard is).

    Raises:
        KeyError: ``table`` has no ``features`` or ``label`` column.
    """

    def matrix(col: pa.ChunkedArray, dtype: type) -> np.ndarray:
        arr = col.combine_chunks()
        if pa.types.is_fixed_size_list(arr.type):
            return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(len(arr), -1)
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype)

    labels = table.column("label")
    regression = pa.types.is_fixed_size_list(labels.type)
    return matrix(table.column("features"), np.float32), matrix(labels, np.float32 if regression else np.int64)


def write_landing_file(directory: str | Path, seq: int, features: np.ndarray, labels: np.ndarray) -> Path:
    """Write one producer file atomically (``part-<seq>.parquet``), as a real producer would."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"part-{seq:08d}.parquet"
    tmp = d / f".{final.name}.tmp"
    pq.write_table(to_arrow(features, labels), tmp)
    tmp.replace(final)
    return final


class LandingDirSource:
    """Follow a landing directory of parquet files and cut the rows into windows.

    Files are read once each, in name order (``part-00000000.parquet``, ...); names
    starting with ``.`` are in-progress writes and skipped. The stream ends after
    ``idle_timeout_s`` seconds without a new file; the partial last window is then
    flushed.

    Args:
        directory: the landing directory.
        num_classes: labels must lie in ``[0, num_classes)``.
        window_size: rows per window.
        start_offset: skip rows before this offset (resume).
        poll_interval_s: how often to list the directory.
        idle_timeout_s: end of stream after this long with no new file.

    Raises:
        DataError: (while iterating) a file lacks the ``features``/``label`` columns.
    """

    def __init__(
        self,
        directory: str | Path,
        num_classes: int,
        window_size: int,
        start_offset: int = 0,
        poll_interval_s: float = 0.5,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.directory = Path(directory)
        self.num_classes = num_classes
        self.window_size = window_size
        self.start_offset = start_offset
        self.poll_interval_s = poll_interval_s
        self.idle_timeout_s = idle_timeout_s
        self.quarantine = Quarantine()

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        tab = pq.read_table(path)
        if "features" not in tab.column_names or "label" not in tab.column_names:
            raise DataError(f"{path} needs columns 'features' and 'label', has {tab.column_names}")
        col = tab["features"].combine_chunks()
        width = col.type.list_size
        x = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
        return x, tab["label"].to_numpy().astype(np.int64)

    def __iter__(self) -> Iterator[Window]:
        seen: set[str] = set()
        buf_x: list[np.ndarray] = []
        buf_y: list[np.ndarray] = []
        offset = 0  # offset of the first buffered row
        buffered = 0
        index = self.start_offset // self.window_size
        last_new = time.monotonic()
        while True:
            new = sorted(
                p for p in self.directory.glob("*.parquet") if not p.name.startswith(".") and p.name not in seen
            )
            for path in new:
                seen.add(path.name)
                x, y = self._read(path)
                buf_x.append(x)
                buf_y.append(y)
                buffered += len(y)
            if new:
                last_new = time.monotonic()
            done = not new and time.monotonic() - last_new > self.idle_timeout_s
            while buffered and (buffered >= self.window_size or done):
                x, y = np.concatenate(buf_x), np.concatenate(buf_y)
                take = min(self.window_size, buffered)
                start, end = offset, offset + take
                buf_x, buf_y, buffered, offset = [x[take:]], [y[take:]], buffered - take, end
                if end <= self.start_offset:
                    continue
                offsets = np.arange(start, end, dtype=np.int64)
                good = _validate(offsets, x[:take], y[:take], self.num_classes, self.quarantine)
                yield Window(index, start, end, offsets[good], x[:take][good], y[:take][good])
                index += 1
            if done:
                return
            if not new:
                time.sleep(self.poll_interval_s)
