"""Reading a request's named rows: JSON records, or the split orientation, checked against a table's schema.

What a replica gets on ``POST /predict`` for a model of a user's table (:mod:`ddn_ray.serve`):

* **records**: one object per row, ``[{"amount": 1200, "region": "north"}, ...]``;
* **split**: pandas' split orientation (``df.to_json(orient="split", index=False)``): the names once,
  ``{"columns": ["amount", "region"], "data": [[1200, "north"], ...]}``.

A number column takes a finite number or ``null``; a categorical one a string, a number or a bool
(kept as the string Arrow's cast gives it, so ``3`` and ``"3"`` are one value) or ``null``. The usual
request (the schema's columns, finite numbers, string categories) is read column-wise, with no
per-value Python check; any other is checked value by value and the first that does not fit is a
:class:`RecordError` naming it (``records[3].amount``, ``columns``, ``data[3]``, ``data[3].amount``).
:class:`ddn_ray.features.Featurizer` turns what these return into its :class:`~ddn_ray.features.Rows`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ddn_ray.errors import DataError

__all__ = ["RecordError", "plain_columns", "records_table", "split_columns"]

Columns = tuple[np.ndarray, dict[str, np.ndarray], "list[str | None] | None"]
"""``(numeric (n, k) float64, {categorical column: (n,) object strings}, ids or None)``."""


class RecordError(DataError):
    """A request's record does not fit the schema; ``field`` names it, e.g. ``records[3].amount``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)  # both in args: the error pickles across actors
        self.field, self.message = field, message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _category(v: Any) -> str | None:
    """A categorical value as the string Arrow's cast gives it (so ``3.0`` in a CSV and in a request agree)."""
    return v if v is None or isinstance(v, str) else pa.scalar(v).cast(pa.string()).as_py()


def records_table(
    records: Sequence[Any], numeric: Sequence[str], categorical: Sequence[str], optional: Sequence[str] = ()
) -> pa.Table:
    """Check JSON records against the schema and build an Arrow table of the feature columns.

    Args:
        records: one mapping per row, ``{column: value}``.
        numeric: columns that take a number or ``null``.
        categorical: columns that take a string, a number or a bool (kept as its string), or ``null``.
        optional: other columns a record may carry (an id column); passed through as strings.

    Returns:
        A table with the numeric columns as float64, the categorical ones as string, the optional ones present.

    Raises:
        RecordError: naming ``records[i]`` or ``records[i].column``: a record that is not an object,
            a missing or unknown column, a value of the wrong type, or a non-finite number.
    """
    known = set(numeric) | set(categorical) | set(optional)
    cols: dict[str, list[Any]] = {c: [] for c in (*numeric, *categorical, *optional)}
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise RecordError(f"records[{i}]", f"must be an object of columns, got {type(rec).__name__}")
        unknown = [k for k in rec if k not in known]
        if unknown:
            raise RecordError(f"records[{i}].{unknown[0]}", f"unknown column; the schema has {sorted(known)}")
        for c in (*numeric, *categorical):
            if c not in rec:
                raise RecordError(f"records[{i}].{c}", "missing column (send null for a missing value)")
        for c in numeric:
            v = rec[c]
            if v is not None and not (_is_number(v) and math.isfinite(v)):
                raise RecordError(f"records[{i}].{c}", f"expected a finite number or null, got {v!r}"[:200])
            cols[c].append(None if v is None else float(v))
        for c in categorical:
            v = rec[c]
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise RecordError(f"records[{i}].{c}", f"expected a string or a number, got {type(v).__name__}")
            cols[c].append(_category(v))
        for c in optional:
            v = rec.get(c)
            cols[c].append(None if v is None else str(v))
    arrays = {c: pa.array(v, pa.float64() if c in numeric else pa.string()) for c, v in cols.items()}
    return pa.table(arrays) if arrays else pa.table({})


def _ids(values: Sequence[Any]) -> list[str | None]:
    return [None if v is None else str(v) for v in values]


def _plain(
    by_name: Mapping[str, Sequence[Any]], n: int, numeric: Sequence[str], categorical: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """``(numeric (n, k) float64, categorical object arrays)`` when every number is a finite int or float (not a
    bool, a string or None) and every category a string; else ``None``."""
    numbers = [by_name[c] for c in numeric]
    if not {type(v) for col in numbers for v in col} <= {float, int} or not all(
        type(v) is str for c in categorical for v in by_name[c]
    ):
        return None
    x = np.array(numbers, np.float64).T.reshape(n, len(numeric))
    if not np.isfinite(x).all():
        return None
    return x, {c: np.array(by_name[c], object) for c in categorical}


def plain_columns(
    records: Sequence[Any], numeric: Sequence[str], categorical: Sequence[str], id_column: str | None = None
) -> Columns | None:
    """The columns of records that are plain: exactly the schema's columns (the id optional), finite
    numbers (not bools) and string categories; ``None`` for any other request (check it with
    :func:`records_table`, which names what does not fit)."""
    required = set(numeric) | set(categorical)
    with_id = required | {id_column} if id_column else required
    if not all(type(r) is dict and (r.keys() == required or r.keys() == with_id) for r in records):
        return None
    plain = _plain({c: [r[c] for r in records] for c in required}, len(records), numeric, categorical)
    if plain is None:
        return None
    return *plain, (_ids([r.get(id_column) for r in records]) if id_column else None)


def split_columns(
    columns: Sequence[Any],
    data: Sequence[Any],
    numeric: Sequence[str],
    categorical: Sequence[str],
    id_column: str | None = None,
) -> Columns | None:
    """Check a split-orientation request's ``columns`` and row lengths; the columns when its values are
    plain (as :func:`plain_columns`), else ``None`` (read its rows as records to name the value that does not fit).

    Raises:
        RecordError: naming ``columns`` (a column missing, unknown, or listed twice) or ``data[i]`` (a row
            that is not a list of ``len(columns)`` values).
    """
    required = [*numeric, *categorical]
    known = {*required, *([id_column] if id_column else [])}
    if not all(type(c) is str for c in columns) or len(set(columns)) != len(columns):
        raise RecordError("columns", f"must be distinct column names, got {list(columns)!r}"[:300])
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise RecordError("columns", f"unknown column {unknown[0]!r}; the schema has {sorted(known)}")
    missing = [c for c in required if c not in columns]
    if missing:
        raise RecordError("columns", f"missing column {missing[0]!r} (send null for a missing value)")
    for i, row in enumerate(data):
        if type(row) is not list or len(row) != len(columns):
            raise RecordError(f"data[{i}]", f"must be a list of {len(columns)} values, one per column")
    if not data:
        return None
    by_name = dict(zip(columns, zip(*data)))  # column-wise, in C
    plain = _plain(by_name, len(data), numeric, categorical)
    if plain is None:
        return None
    return *plain, (_ids(by_name.get(id_column, [None] * len(data))) if id_column else None)
