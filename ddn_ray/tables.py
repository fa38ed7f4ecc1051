"""A user's table as a stream of named records: quarantine, serve, then reveal.

The rows come from a source of :mod:`ddn_ray.sources` (a file, directory or glob, or a landing dir,
read through pyarrow; see there what is read when). :class:`TabularStream` does the streaming part:
rows that :meth:`ddn_ray.features.Featurizer.check` refuses are quarantined with their offsets and
reasons; the rest are served as JSON records, and only then revealed to the featurizer and the trainer.
:func:`read_schema`, :func:`featurizer_for` and :func:`source_for` build these parts from a job's
``data`` section; :func:`replay_table` replays a table in-process, as a sweep trial does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ddn_ray.errors import DataError
from ddn_ray.features import Featurizer, Rows, Task
from ddn_ray.sources import FileSource, LandingDirSource, RecordWindow, open_dataset, resolve
from ddn_ray.stream import Quarantine, Table, Window

__all__ = ["TabularStream", "featurizer_for", "read_schema", "replay_table", "source_for"]


def _json_column(col: pa.ChunkedArray) -> list[Any]:
    """A column as JSON values: NaN as null (JSON has no NaN), other non-JSON types (dates, decimals) as strings."""
    t = col.type
    if pa.types.is_floating(t):
        values = col.to_pylist()
        return (
            [None if v is not None and math.isnan(v) else v for v in values]
            if pc.any(pc.is_nan(col)).as_py()
            else values
        )
    if (
        pa.types.is_integer(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
    ):
        return col.to_pylist()
    return pc.cast(col, pa.string()).to_pylist()


class TabularStream:
    """The streaming part of a user's table: quarantine, records to serve, then reveal.

    Args:
        source: a :class:`~ddn_ray.sources.FileSource` or :class:`~ddn_ray.sources.LandingDirSource`.
        featurizer: the preprocessing state, fitted here on revealed windows only.
        id_column: a column carried into every request and answer (``None``: none).
    """

    def __init__(
        self, *, source: FileSource | LandingDirSource, featurizer: Featurizer, id_column: str | None = None
    ) -> None:
        self.source, self.featurizer, self.id_column = source, featurizer, id_column
        self.quarantine = Quarantine()
        if isinstance(source, LandingDirSource):
            self.quarantine.files = source.quarantined_files  # the same list: files quarantined as it reads
        self._others = [*featurizer.categorical, *([id_column] if id_column else [])]
        self.record_columns = [*featurizer.numeric, *self._others]

    def windows(self) -> Iterator[RecordWindow]:
        """The source's windows with only the rows :meth:`Featurizer.check` accepts; the others are quarantined."""
        for w in self.source:
            rows = self._rows(w)
            good, reasons = self.featurizer.check(rows)
            if not good.all():
                bad = w.offsets[~good].tolist()
                if isinstance(self.source, LandingDirSource):  # an entry names its file
                    reasons = [f"{self.source.file_of(o)}: {r}" for o, r in zip(bad, reasons)]
                self.quarantine.offsets += bad
                self.quarantine.reasons += reasons
                w = RecordWindow(
                    w.index, w.start, w.end, w.offsets[good], w.table.filter(pa.array(good)), rows.filter(good)
                )
            elif w.rows is None:
                w = RecordWindow(w.index, w.start, w.end, w.offsets, w.table, rows)
            yield w

    def _rows(self, window: RecordWindow) -> Rows:
        return window.rows if window.rows is not None else self.featurizer.rows(window.table)

    def records(self, window: RecordWindow) -> list[dict[str, Any]]:
        """The window's rows as JSON records of the feature columns (and the id): what a client sends.

        Numeric values are sent as the floats the featurizer reads (``null`` where missing).
        """
        return [dict(zip(self.record_columns, row)) for row in self.split(window)]

    def split(self, window: RecordWindow) -> list[list[Any]]:
        """The window's rows as lists of values in :attr:`record_columns` order: the ``data`` of a request in
        pandas' ``split`` orientation (``{"columns": record_columns, "data": ...}``), what the replay client
        sends. The same values as :meth:`records`, with the column names sent once instead of in every row.
        """
        x = self._rows(window).numeric
        numeric = x.tolist()  # column-wise conversions: no per-value Python but the NaN -> null of a gap
        if np.isnan(x).any():
            numeric = [[None if math.isnan(v) else v for v in row] for row in numeric]
        if not self._others:
            return numeric
        others = zip(*[_json_column(window.table[c]) for c in self._others])
        return [[*row, *rest] for row, rest in zip(numeric, others)]

    def ids(self, window: RecordWindow) -> list[str | None] | None:
        if self.id_column is None:
            return None
        return [None if v is None else str(v) for v in window.table[self.id_column].to_pylist()]

    def reveal(self, window: RecordWindow) -> Window:
        """The labels arrive: fit the featurizer on the window, then featurize it for training.

        Returns:
            A :class:`~ddn_ray.stream.Window` of ``(n, width)`` float32 inputs and ``(n,)`` int64 class ids
            (``(n, 1)`` float32 targets for regression), after this window's rows were fitted.
        """
        rows = self._rows(window)
        self.featurizer.update(rows)
        x = self.featurizer.transform(rows)
        y = self.featurizer.label_ids(rows)
        return Window(window.index, window.start, window.end, window.offsets, x, y)


def read_schema(data: Any) -> pa.Schema | None:
    """The first file's schema of a ``DataConfig``'s table source (``None`` for a landing dir): read once, then
    given to :func:`featurizer_for` and :func:`source_for`.

    Raises:
        DataError: the table cannot be read or lacks a feature column or the label.
    """
    if data.source.kind != "table":
        return None
    fs, files, fmt = resolve(data.source.uri, data.format)
    return open_dataset(fs, files[:1], fmt, [*data.features, data.label], ()).schema


def featurizer_for(data: Any, task: Task, *, schema: pa.Schema | None = None) -> Featurizer:
    """The featurizer a ``DataConfig`` with a ``source`` describes, not yet fitted.

    Without ``data.categorical``, a table source's string and dictionary columns are the categorical
    features (read from the first file's ``schema``, :func:`read_schema` when not given); a landing dir's
    features are then all numeric.

    Raises:
        DataError: the table cannot be read or lacks a feature column.
    """
    categorical = data.categorical
    if categorical is None:
        categorical = ()
        if data.source.kind == "table":
            schema = schema if schema is not None else read_schema(data)
            assert schema is not None, "a table source has a schema"
            categorical = tuple(
                c
                for c in data.features
                if pa.types.is_string(schema.field(c).type)
                or pa.types.is_large_string(schema.field(c).type)
                or pa.types.is_dictionary(schema.field(c).type)
                or pa.types.is_boolean(schema.field(c).type)
            )
    numeric = [c for c in data.features if c not in categorical]
    return Featurizer(
        numeric=numeric,
        categorical=list(categorical),
        label=data.label,
        task=task,
        classes=list(data.classes),
        allow_new_classes=data.allow_new_classes,
        missing=data.missing,
        scaling=data.scaling,
        max_categories=data.max_categories,
        id_column=data.id,
    )


def source_for(
    data: Any, featurizer: Featurizer, *, window_size: int, start_offset: int = 0, schema: pa.Schema | None = None
) -> FileSource | LandingDirSource:
    """The source a ``DataConfig`` with a ``source`` describes, reading the featurizer's columns (and id, order_by).

    ``schema``: a table's first file's (:func:`read_schema`), so that it is not read again.
    """
    columns = [*featurizer.numeric, *featurizer.categorical, data.label, *([data.id] if data.id else [])]
    common: dict[str, Any] = {
        "columns": columns,
        "numeric": featurizer.numeric,
        "window_size": window_size,
        "format": data.format,
        "start_offset": start_offset,
        "max_rows": data.max_rows,
        "prepare": featurizer.prepare,
    }
    if data.source.kind == "table":
        return FileSource(uri=data.source.uri, order_by=data.order_by, schema=schema, **common)
    return LandingDirSource(
        path=data.source.path,
        poll_interval_s=data.source.poll_interval_s,
        idle_timeout_s=data.source.idle_timeout_s,
        **common,
    )


def replay_table(data: Any, task: Task, *, window_size: int) -> Table:
    """A user's table as the rows a sweep trial replays in-process (:mod:`ddn_ray.sweep`), featurized as served.

    The table is streamed as the main job streams it: rows :meth:`Featurizer.check` refuses are left out,
    and each window is featurized with the state fitted on the windows before it (what a replica serving
    the previous window's version does), then fitted. The main job's trainer learns a window featurized
    after fitting it; with a :attr:`~ddn_ray.features.Featurizer.stateless` featurizer the two are the same.

    Args:
        data: a ``DataConfig`` with a table ``source`` (a landing dir is consumed live, not replayed).
        task: ``classification`` or ``regression``.
        window_size: rows per window (the trial's ``stream.window_size``).

    Returns:
        A :class:`~ddn_ray.stream.Table`: ``(n, width)`` float32 inputs named by ``input_names``, ``(n,)``
        int64 class ids (``(n, 1)`` float32 targets for regression), and the classes known at the end.

    Raises:
        DataError: as :func:`read_schema` and :class:`~ddn_ray.sources.FileSource`; or every row was refused.
        ValueError: ``data.source`` is a landing dir.
    """
    if data.source.kind != "table":
        raise ValueError("a sweep replays a table source; a landing dir is consumed while the job runs")
    schema = read_schema(data)
    featurizer = featurizer_for(data, task, schema=schema)
    ts = TabularStream(
        source=source_for(data, featurizer, window_size=window_size, schema=schema), featurizer=featurizer
    )
    xs, ys = [], []
    for w in ts.windows():
        if not len(w):
            continue
        rows = ts._rows(w)
        xs.append(featurizer.transform(rows))  # as served: before the window's labels are revealed
        featurizer.update(rows)
        ys.append(featurizer.label_ids(rows))
    if not xs:
        raise DataError(f"every row of {data.source.uri} was refused: {ts.quarantine.reasons[:3]}")
    return Table(
        features=np.concatenate(xs),
        labels=np.concatenate(ys),
        feature_names=tuple(featurizer.input_names),
        num_classes=featurizer.num_classes,
        task=task,
    )
