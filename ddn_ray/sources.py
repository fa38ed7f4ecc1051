"""A user's table read through pyarrow and cut into windows of raw rows (:class:`RecordWindow`).

Two sources yield windows (offsets count every row, bad ones too):

* :class:`FileSource`: one file, a directory, or a glob, on any filesystem pyarrow reads
  (local paths, ``file://``, ``s3://``, ``gs://``, ``hdfs://``, ...), as Parquet, CSV or JSON lines.
  Without ``order_by`` it streams record batches (``pyarrow.dataset.Dataset.to_batches``): only
  the current batch and one window are in memory. With ``order_by`` the needed columns are read
  once, whole, and sorted (``Table.sort_by``) before the first window.
* :class:`LandingDirSource`: a directory that a producer fills with such files while the job
  runs; each new file is read once, whole, in name order (names starting with ``.`` are
  in-progress writes). The stream ends after ``idle_timeout_s`` without a new file.

Both check every file's columns before reading its rows. A :class:`FileSource` stops with a
:class:`DataError` naming the file and the column (the user's table is wrong); a
:class:`LandingDirSource` quarantines a file it cannot read (unknown format, not parseable,
truncated, a missing or mistyped column): listed with its reason in ``quarantined_files``, counted,
logged, and the stream goes on. :class:`ddn_ray.tables.TabularStream` does the streaming part.
"""

from __future__ import annotations

import bisect
import fnmatch
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from ddn_ray.errors import DataError
from ddn_ray.features import Rows

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "FileSource", "LandingDirSource", "RecordWindow", "infer_format", "open_dataset", "resolve"]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json"}
_GLOB = set("*?[")


@dataclass(frozen=True)
class RecordWindow:
    """A window of raw rows.

    Attributes:
        index: window number, from 0.
        start: the first offset it covers.
        end: the offset after the last one it covers (``[start, end)``).
        offsets: ``(n,)`` int64 offsets of its rows (all of them, or the valid ones after :meth:`ddn_ray.tables.TabularStream.windows`).
        table: the rows, with the source's columns.
        rows: the featurizer's view of ``table`` (each column converted once): sliced from the batch read when the
            source has ``prepare``, else set by :meth:`ddn_ray.tables.TabularStream.windows`.
    """

    index: int
    start: int
    end: int
    offsets: np.ndarray
    table: pa.Table
    rows: Rows | None = None

    def __len__(self) -> int:
        return self.table.num_rows


def _suffix_format(path: str) -> str | None:
    """The format ``path``'s suffix names (:data:`FORMATS`), or ``None``."""
    return FORMATS.get(os.path.splitext(path)[1].lower())


def infer_format(path: str, given: str | None = None) -> str:
    """``given``, or the format a file suffix names (``.parquet``/``.pq``, ``.csv``, ``.json``/``.jsonl``/``.ndjson``).

    Raises:
        DataError: no format given and the suffix names none.
    """
    if given:
        return given
    fmt = _suffix_format(path)
    if fmt is None:
        raise DataError(f"cannot tell the format of {path} from its suffix; set data.format (parquet, csv or json)")
    return fmt


def resolve(uri: str, fmt: str | None = None) -> tuple[pafs.FileSystem, list[str], str]:
    """The filesystem, the files (sorted) and the format of a file, directory or glob.

    ``${VAR}`` and ``~`` are expanded. A path without a scheme is local. A directory's files are those
    whose suffix names a format (any file but a dot or underscore name when ``fmt`` is given); with
    ``fmt``, a file whose suffix names another format is left out.

    Raises:
        DataError: a ``${VAR}`` is not set, nothing is there, no file matches, the format cannot be told,
            or the files' suffixes name several formats and ``fmt`` is not given.
    """
    given, uri = uri, os.path.expanduser(os.path.expandvars(uri))
    unset = re.search(r"\$\{?(\w+)", uri)  # expandvars leaves a variable that is not set as it is
    if unset:
        raise DataError(f"data.source.uri {given!r}: environment variable {unset[1]} is not set")
    try:
        fs, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), os.path.abspath(uri))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"data.source.uri {given!r}: {exc}") from exc
    parts = path.split("/")
    glob_at = next((i for i, p in enumerate(parts) if _GLOB & set(p)), None)
    if glob_at is not None:
        base = "/".join(parts[:glob_at]) or "/"
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        files = sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path))
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"data.source.uri {uri!r}: no such file or directory")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            files = sorted(
                i.path
                for i in infos
                if i.type == pafs.FileType.File
                and not i.base_name.startswith((".", "_"))
                and (fmt is not None or _suffix_format(i.path) is not None)
            )
        else:
            files = [path]
    if fmt is not None:  # a file whose suffix names another format is not part of this table
        files = [f for f in files if _suffix_format(f) in (None, fmt)]
    if not files:
        raise DataError(f"data.source.uri {uri!r} matches no file")
    if fmt is None:  # one table is read with one format: a mix would fail on its first file of another kind
        kinds = {_suffix_format(f): f for f in reversed(files)}
        if len(kinds) > 1:
            raise DataError(
                f"data.source.uri {uri!r} holds files of several formats ("
                + ", ".join(f"{k}: {f}" for k, f in sorted(kinds.items(), key=lambda kv: str(kv[0])))
                + "); keep one format there, or set data.format to read only files of that format"
            )
    return fs, files, infer_format(files[0], fmt)


def _file_format(fmt: str) -> pads.FileFormat:
    if fmt == "csv":  # an empty CSV cell is a missing value in a string column too (Arrow's default reads "")
        return pads.CsvFileFormat(convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    return {"parquet": pads.ParquetFileFormat(), "json": pads.JsonFileFormat()}[fmt]


def _check_columns(path: str, schema: pa.Schema, columns: Sequence[str], numeric: Sequence[str]) -> None:
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (the file has {schema.names})")
    for c in numeric:
        t = schema.field(c).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t)):
            raise DataError(
                f"{path}: column {c!r} is {t}, expected numbers (list it in data.categorical, or fix the file)"
            )


def open_dataset(
    fs: pafs.FileSystem,
    files: list[str],
    fmt: str,
    columns: Sequence[str],
    numeric: Sequence[str],
    schema: pa.Schema | None = None,
) -> pads.Dataset:
    """A pyarrow dataset over ``files`` whose every file was checked for ``columns``.

    ``schema``: the first file's, already read (:func:`ddn_ray.tables.read_schema`); ``None`` reads it
    (for a CSV or JSON file, pyarrow infers it from the first block).

    Raises:
        DataError: a file does not parse as ``fmt``, lacks one of ``columns``, or holds something else than
            numbers in one of ``numeric``; the message names the file and the column.
    """
    try:
        ds = pads.dataset(files, format=_file_format(fmt), filesystem=fs, schema=schema)
        if len(files) == 1:  # the dataset's schema is the file's: no second read
            _check_columns(files[0], ds.schema, columns, numeric)
        else:
            for frag in ds.get_fragments():
                _check_columns(frag.path, frag.physical_schema, columns, numeric)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            f"{files[0] if len(files) == 1 else 'a file of ' + repr(files[:3])} does not parse as {fmt}: {exc}"
        ) from exc
    return ds


class _Windows:
    """Cut a sequence of Arrow tables into windows of ``window_size`` rows, skipping rows before ``start_offset``.

    With ``prepare`` (a featurizer's :meth:`~ddn_ray.features.Featurizer.rows`), each table read is
    converted once, whole, and every window carries its slice of it (``RecordWindow.rows``).
    """

    def __init__(
        self,
        window_size: int,
        start_offset: int,
        max_rows: int | None,
        prepare: Callable[[pa.Table], Rows] | None = None,
    ) -> None:
        if window_size <= 0:
            raise ValueError(f"window_size must be > 0, got {window_size}")
        self.window_size, self.start_offset, self.max_rows, self.prepare = window_size, start_offset, max_rows, prepare

    def cut(self, tables: Iterator[pa.Table]) -> Iterator[RecordWindow]:
        # Pieces not yet cut: (table, its prepared rows, position of the first row not cut). A window inside
        # one table is a slice of it; one that spans tables is the concatenation of their slices.
        pieces: list[tuple[pa.Table, Rows | None, int]] = []
        buffered, offset = 0, 0  # offset of the first row not cut
        index = self.start_offset // self.window_size
        limit = self.max_rows if self.max_rows is not None else math.inf

        def take(n: int) -> RecordWindow | None:
            nonlocal pieces, buffered, offset, index
            parts: list[tuple[pa.Table, Rows | None]] = []
            need = n
            while need:
                t, r, pos = pieces[0]
                k = min(need, t.num_rows - pos)
                parts.append((t.slice(pos, k), None if r is None else r.slice(pos, pos + k)))
                need -= k
                if pos + k == t.num_rows:
                    pieces.pop(0)
                else:
                    pieces[0] = (t, r, pos + k)
            if len(parts) == 1:
                table, rows = parts[0]
            else:
                table = pa.concat_tables([t for t, _ in parts], promote_options="permissive")
                rows = None if self.prepare is None else Rows.concat([r for _, r in parts if r is not None])
            start, offset = offset, offset + n
            buffered -= n
            if offset <= self.start_offset:
                return None
            w = RecordWindow(index, start, offset, np.arange(start, offset, dtype=np.int64), table, rows)
            index += 1
            return w

        for t in tables:
            t = t.slice(0, int(min(t.num_rows, limit - offset - buffered)))
            if t.num_rows:
                pieces.append((t, None if self.prepare is None else self.prepare(t), 0))
                buffered += t.num_rows
            while buffered >= self.window_size:
                if (w := take(self.window_size)) is not None:
                    yield w
            if offset + buffered >= limit:
                break
        if buffered and (w := take(buffered)) is not None:
            yield w


class FileSource:
    """Replay a file, directory or glob as windows (see the module doc for what is read when).

    Args:
        uri: local path or pyarrow filesystem URI; a directory or a glob takes every matching file, in name order.
        columns: the columns to read (features, label, id, order_by); every file must have them.
        numeric: of those, the ones that must hold numbers.
        window_size: rows per window (the last may be shorter).
        format: ``parquet``, ``csv`` or ``json``; ``None`` infers it from the first file's suffix.
        order_by: sort the rows by this column first (reads the columns whole); ``None`` keeps file order.
        start_offset: resume here (a window boundary of an earlier run).
        max_rows: stop after this many rows.
        batch_rows: rows per record batch read.
        prepare: converts each batch read once (a featurizer's ``prepare``); windows carry their slice.
        schema: the first file's schema, when already read (:func:`ddn_ray.tables.read_schema`).

    Raises:
        DataError: (at construction) nothing matches, a file does not parse, or lacks a column, or a
            numeric column holds something else; the message names the file and the column.
    """

    def __init__(
        self,
        *,
        uri: str,
        columns: Sequence[str],
        numeric: Sequence[str] = (),
        window_size: int,
        format: str | None = None,
        order_by: str | None = None,
        start_offset: int = 0,
        max_rows: int | None = None,
        batch_rows: int = 65536,
        prepare: Callable[[pa.Table], Rows] | None = None,
        schema: pa.Schema | None = None,
    ) -> None:
        self.fs, self.files, self.format = resolve(uri, format)
        self.columns = list(dict.fromkeys([*columns, *([order_by] if order_by else [])]))
        self.dataset = open_dataset(self.fs, self.files, self.format, self.columns, numeric, schema)
        self.order_by, self.batch_rows = order_by, batch_rows
        self.cutter = _Windows(window_size, start_offset, max_rows, prepare)
        self.start_offset = start_offset

    def count_rows(self) -> int:
        """Rows in the source (reads Parquet footers; scans CSV and JSON files)."""
        return int(self.dataset.count_rows())

    def _tables(self) -> Iterator[pa.Table]:
        try:
            if self.order_by is not None:
                yield self.dataset.to_table(columns=self.columns).sort_by(self.order_by)
                return
            for batch in self.dataset.to_batches(columns=self.columns, batch_size=self.batch_rows):
                yield pa.Table.from_batches([batch])
        except pa.ArrowInvalid as exc:
            raise DataError(f"reading {self.files if len(self.files) > 1 else self.files[0]}: {exc}") from exc

    def __iter__(self) -> Iterator[RecordWindow]:
        return self.cutter.cut(self._tables())


class LandingDirSource:
    """Follow a directory that a producer fills with files of the user's columns.

    Args:
        path: the directory (local path or pyarrow filesystem URI).
        columns: as :class:`FileSource`.
        numeric: as :class:`FileSource`.
        window_size: as :class:`FileSource`.
        start_offset: as :class:`FileSource`.
        max_rows: as :class:`FileSource`.
        prepare: as :class:`FileSource`.
        format: the files' format; ``None``: every file whose suffix names one, each read as its suffix says.
        poll_interval_s: how often to list the directory, in seconds.
        idle_timeout_s: end of stream after this many seconds with no new file.

    Attributes:
        files_read: the files read, in order.
        quarantined_files: ``(path, reason)`` of each file not read: a suffix naming no format, a file that
            does not parse (truncated, not the format), or lacks a column or holds text in a numeric one.
        file_starts: ``(first offset, path)`` of each file read, for :meth:`file_of`.
    """

    def __init__(
        self,
        *,
        path: str,
        columns: Sequence[str],
        numeric: Sequence[str] = (),
        window_size: int,
        format: str | None = None,
        start_offset: int = 0,
        max_rows: int | None = None,
        poll_interval_s: float = 0.5,
        idle_timeout_s: float = 30.0,
        prepare: Callable[[pa.Table], Rows] | None = None,
    ) -> None:
        path = os.path.expanduser(os.path.expandvars(path))
        self.fs: pafs.FileSystem
        self.path: str
        self.fs, self.path = (
            pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), os.path.abspath(path))
        )
        self.columns, self.numeric, self.format = list(columns), list(numeric), format
        self.poll_interval_s, self.idle_timeout_s = poll_interval_s, idle_timeout_s
        self.cutter = _Windows(window_size, start_offset, max_rows, prepare)
        self.start_offset = start_offset
        self.files_read: list[str] = []
        self.quarantined_files: list[tuple[str, str]] = []
        self.file_starts: list[tuple[int, str]] = []
        self._rows_read = 0

    def file_of(self, offset: int) -> str | None:
        """The file that held the row at ``offset`` (``None``: before the first file read)."""
        i = bisect.bisect_right(self.file_starts, (offset, "\uffff")) - 1
        return self.file_starts[i][1] if i >= 0 else None

    def _new_files(self, seen: set[str]) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File and not i.base_name.startswith(".") and i.path not in seen
        )

    def _read(self, path: str) -> pa.Table | None:
        """The file's columns, or ``None`` when it is quarantined (listed with a reason that names it, logged)."""
        if not self.format and _suffix_format(path) is None:
            reason = f"{path}: unknown format: the suffix names none of {sorted(FORMATS)} (set data.format to read it)"
        else:
            try:
                dataset = open_dataset(self.fs, [path], infer_format(path, self.format), self.columns, self.numeric)
                return dataset.to_table(columns=self.columns)
            except DataError as exc:
                reason = str(exc)
            except (pa.ArrowException, OSError) as exc:  # truncated, not the format, unreadable
                reason = f"{path}: cannot read it: {type(exc).__name__}: {exc}"
        self.quarantined_files.append((path, reason))
        log.warning("landing dir: a file quarantined, the stream goes on: %s", reason)
        return None

    def _tables(self) -> Iterator[pa.Table]:
        seen: set[str] = set()
        last_new = time.monotonic()
        while True:
            new = self._new_files(seen)
            for f in new:
                seen.add(f)
                table = self._read(f)
                if table is None:
                    continue
                self.file_starts.append((self._rows_read, f))
                self._rows_read += table.num_rows
                self.files_read.append(f)
                yield table
            if new:
                last_new = time.monotonic()
            elif time.monotonic() - last_new > self.idle_timeout_s:
                return
            else:
                time.sleep(self.poll_interval_s)

    def __iter__(self) -> Iterator[RecordWindow]:
        return self.cutter.cut(self._tables())
