"""Streaming preprocessing of a user's table: fitted on revealed rows only, versioned with the weights.

A :class:`Featurizer` turns rows of named columns (an Arrow table, or JSON records at serving
time) into the model's ``(n, width)`` float32 inputs and class ids. Its state is fitted by
:meth:`Featurizer.update` on rows whose labels were revealed, never on rows still to be
served, and travels with every model version (controller, replicas, checkpoints), so a
replica featurizes a request exactly as the trainer featurized the rows that version learned.

Columns become inputs in this order, so the input width is fixed from the first row on:

* **numeric** columns: ``(x - mean) / std`` with the running mean and variance of the revealed
  rows (Welford 1962, "Note on a method for calculating corrected sums of squares and
  products"; the same update as River's ``preprocessing.StandardScaler``); identity before
  two rows were seen, or with ``scaling="none"``.
* with ``missing="impute"``, one ``<column>__missing`` indicator per numeric column (1.0 where
  the value was missing; the value itself becomes the running mean, i.e. 0 after scaling).
* **categorical** columns: one-hot over ``max_categories`` slots. Slot 0 is the reserved
  *unknown* index: a value first seen at serving time, a value that arrived after the
  vocabulary was full, and (``missing="impute"``) a missing value. The vocabulary grows in the
  order values are revealed; values are compared as strings (``3`` and ``"3"`` are one value).

Labels: classification labels (strings or ints) map to ids through a class vocabulary that
starts with the declared ``classes``; a label never seen before either grows it
(``allow_new_classes``) or makes the row quarantined. Regression targets are the float label
column as it is, ``(n, 1)`` float32.

Example:
    >>> import pyarrow as pa
    >>> f = Featurizer(numeric=["amount"], categorical=["region"], label="y", classes=["no", "yes"], max_categories=3)
    >>> f.input_names
    ['amount', 'amount__missing', 'region=<unknown>', 'region=0', 'region=1']
    >>> t = pa.table({"amount": [1.0, 3.0, None], "region": ["n", "s", "n"], "y": ["yes", "no", "yes"]})
    >>> f.update(t)
    >>> f.transform(t)[:, :3].tolist()
    [[-0.7071067690849304, 0.0, 0.0], [0.7071067690849304, 0.0, 0.0], [0.0, 1.0, 0.0]]
    >>> f.label_ids(t).tolist(), f.vocabularies["region"]
    ([1, 0, 1], ['n', 's'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ddn_ray.errors import DataError

__all__ = ["Featurizer", "RecordError", "records_table"]

UNKNOWN = "<unknown>"
MISSING_SUFFIX = "__missing"


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


def records_table(records: Sequence[Any], numeric: Sequence[str], categorical: Sequence[str],
                  optional: Sequence[str] = ()) -> pa.Table:
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


class Featurizer:
    """Streaming preprocessing state for a table's feature and label columns (see the module doc).

    Args:
        numeric: numeric feature columns, in input order.
        categorical: categorical feature columns, after the numeric ones.
        label: the label column (``None``: a featurizer for serving only).
        task: ``classification`` (labels to class ids) or ``regression`` (float targets).
        classes: classes known before the stream starts, in id order (strings or ints).
        allow_new_classes: a label never seen before is given the next id (the model's output
            layer grows, :func:`ddn_ray.models.grow_head`); else :meth:`check` quarantines its row.
        missing: ``impute`` (running mean plus an indicator; the unknown slot for categories) or
            ``quarantine`` (a row with a missing feature is refused).
        scaling: ``standard`` (running mean / std) or ``none``.
        max_categories: one-hot slots per categorical column, the unknown slot included.
        id_column: a column that requests may carry and answers echo (not an input).

    Raises:
        ValueError: a column is listed twice, or ``max_categories < 2``.
    """

    def __init__(
        self,
        *,
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
        label: str | None = None,
        task: Literal["classification", "regression"] = "classification",
        classes: Sequence[Any] = (),
        allow_new_classes: bool = False,
        missing: Literal["impute", "quarantine"] = "impute",
        scaling: Literal["standard", "none"] = "standard",
        max_categories: int = 32,
        id_column: str | None = None,
    ) -> None:
        cols = [*numeric, *categorical, *([label] if label else []), *([id_column] if id_column else [])]
        if len(set(cols)) != len(cols):
            raise ValueError(f"a column is listed twice among features and label: {cols}")
        if max_categories < 2:
            raise ValueError(f"max_categories must be >= 2 (the unknown slot and one value), got {max_categories}")
        self.numeric, self.categorical, self.label = list(numeric), list(categorical), label
        self.task, self.allow_new_classes, self.missing, self.scaling = task, allow_new_classes, missing, scaling
        self.max_categories, self.id_column = max_categories, id_column
        self.classes: list[Any] = list(classes)
        self.count = np.zeros(len(self.numeric), np.int64)
        self.mean = np.zeros(len(self.numeric), np.float64)
        self.m2 = np.zeros(len(self.numeric), np.float64)
        self.vocabularies: dict[str, list[str]] = {c: [] for c in self.categorical}
        self.rows_seen = 0
        self.unknown_values = 0  # revealed values that found the vocabulary full

    # schema ---------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        """The model's input columns, ``width`` of them."""
        names = list(self.numeric)
        if self.missing == "impute":
            names += [c + MISSING_SUFFIX for c in self.numeric]
        for c in self.categorical:
            names += [f"{c}={UNKNOWN}", *[f"{c}={k}" for k in range(self.max_categories - 1)]]
        return names

    @property
    def width(self) -> int:
        return len(self.numeric) * (2 if self.missing == "impute" else 1) + len(self.categorical) * self.max_categories

    @property
    def num_classes(self) -> int:
        """The model's output width: classes known so far (at least 1), or 1 target for regression."""
        return 1 if self.task == "regression" else max(1, len(self.classes))

    def schema(self) -> dict[str, Any]:
        """What a client sends and gets: columns by kind, the rules, and the classes known now."""
        return {"numeric": self.numeric, "categorical": self.categorical, "id": self.id_column,
                "label": self.label, "task": self.task,
                "classes": self.classes if self.task == "classification" else None, "missing": self.missing,
                "vocabularies": self.vocabularies}

    # validation -----------------------------------------------------------
    def check(self, table: pa.Table, labels: bool = True) -> tuple[np.ndarray, list[str]]:
        """Which rows may be served and learned (``labels=False``: only the features, as a replica checks a request).

        Returns:
            ``(good (n,) bool, reason for each bad row)``: a missing feature under ``missing="quarantine"``,
            a non-finite number, a missing label, or a class not known and not allowed to grow.
        """
        n = table.num_rows
        reasons: list[str | None] = [None] * n

        def refuse(mask: np.ndarray, why: str) -> None:
            if not mask.any():
                return
            for i in np.flatnonzero(mask):
                if reasons[i] is None:
                    reasons[i] = why

        for c in self.numeric:
            v = self._floats(table[c])
            missing = np.isnan(v)
            refuse(np.isinf(v), f"non-finite value in {c}")
            if self.missing == "quarantine":
                refuse(missing, f"missing value in {c}")
        if self.missing == "quarantine":
            for c in self.categorical:
                refuse(np.asarray(table[c].is_null().to_numpy(zero_copy_only=False)), f"missing value in {c}")
        if self.label is not None and labels:
            col = table[self.label]
            if self.task == "regression":
                y = self._floats(col)
                refuse(~np.isfinite(y), f"missing or non-finite target {self.label}")
            else:
                labels = col.to_pylist()
                refuse(np.array([v is None for v in labels], bool), f"missing label {self.label}")
                if not self.allow_new_classes:
                    known = set(self.classes)
                    refuse(np.array([v is not None and v not in known for v in labels], bool),
                           "label not in the declared classes (data.classes; or set data.allow_new_classes)")
        good = np.array([r is None for r in reasons], bool)
        return good, [r for r in reasons if r is not None]

    # fitting --------------------------------------------------------------
    def update(self, table: pa.Table) -> None:
        """Fit on revealed rows (already :meth:`check`-ed): running moments, vocabularies, new classes."""
        if self.numeric:
            # Chan, Golub & LeVeque (1979): merge the batch's moments into the running ones, all columns
            # at once; a column's missing values are left out of its moments.
            x = np.column_stack([self._floats(table[c]) for c in self.numeric])
            finite = np.isfinite(x)
            n_a, n_b = self.count, finite.sum(axis=0)
            n = n_a + n_b
            mean_b = np.where(finite, x, 0.0).sum(axis=0) / np.maximum(n_b, 1)
            m2_b = (np.where(finite, x - mean_b, 0.0) ** 2).sum(axis=0)
            delta, share = mean_b - self.mean, n_b / np.maximum(n, 1)
            self.mean = self.mean + delta * share
            self.m2 = self.m2 + m2_b + delta**2 * n_a * share
            self.count = n
        for c in self.categorical:
            vocab = self.vocabularies[c]
            seen = set(vocab)
            for v in pc.unique(pc.cast(table[c], pa.string())).to_pylist():
                if v is None or v in seen:
                    continue
                if len(vocab) < self.max_categories - 1:
                    vocab.append(v)
                    seen.add(v)
                else:
                    self.unknown_values += 1
        if self.label is not None and self.task == "classification" and self.allow_new_classes:
            known = set(self.classes)
            for v in table[self.label].to_pylist():
                if v is not None and v not in known:
                    self.classes.append(v)
                    known.add(v)
        self.rows_seen += table.num_rows

    # transforming ---------------------------------------------------------
    @staticmethod
    def _floats(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """A numeric column as float64, nulls as NaN."""
        arr = col if col.type == pa.float64() else pc.cast(col, pa.float64())
        if arr.null_count:
            arr = pc.fill_null(arr, math.nan)
        return np.asarray(arr.to_numpy(zero_copy_only=False), np.float64)

    def transform(self, table: pa.Table) -> np.ndarray:
        """The model's inputs for ``table``'s rows: ``(n, width)`` float32 (see the module doc)."""
        n = table.num_rows
        out = np.zeros((n, self.width), np.float32)
        k = len(self.numeric)
        if k:
            x = np.column_stack([self._floats(table[c]) for c in self.numeric])
            missing = np.isnan(x)
            x = np.where(missing, self.mean, x)
            if self.scaling == "standard":
                std = np.sqrt(np.where(self.count > 1, self.m2 / np.maximum(self.count - 1, 1), 1.0))
                std = np.where(std > 1e-12, std, 1.0)
                x = (x - np.where(self.count > 1, self.mean, 0.0)) / std
            out[:, :k] = x
            if self.missing == "impute":
                out[:, k : 2 * k] = missing
        at = k * (2 if self.missing == "impute" else 1)
        for c in self.categorical:
            vocab = self.vocabularies[c]
            col = pc.cast(table[c], pa.string())
            slot = pc.index_in(col, value_set=pa.array(vocab, pa.string())) if vocab else pa.nulls(n, pa.int32())
            idx = np.asarray(pc.fill_null(pc.add(slot, 1), 0).to_numpy(zero_copy_only=False), np.int64)
            out[np.arange(n), at + idx] = 1.0
            at += self.max_categories
        return out

    def label_ids(self, table: pa.Table) -> np.ndarray:
        """Class ids ``(n,)`` int64 (``-1`` for a class not known), or regression targets ``(n, 1)`` float32.

        Raises:
            ValueError: the featurizer has no label column.
        """
        if self.label is None:
            raise ValueError("this featurizer has no label column")
        if self.task == "regression":
            return self._floats(table[self.label]).astype(np.float32).reshape(-1, 1)
        ids = {v: i for i, v in enumerate(self.classes)}
        return np.array([ids.get(v, -1) for v in table[self.label].to_pylist()], np.int64)

    def class_names(self, ids: Sequence[int]) -> list[Any]:
        """The class of each id (``None`` for an output not yet given a class)."""
        return [self.classes[i] if 0 <= i < len(self.classes) else None for i in ids]

    # state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: the schema, the rules and the fitted state."""
        return {
            "numeric": self.numeric, "categorical": self.categorical, "label": self.label, "task": self.task,
            "allow_new_classes": self.allow_new_classes, "missing": self.missing, "scaling": self.scaling,
            "max_categories": self.max_categories, "id_column": self.id_column, "classes": list(self.classes),
            "count": self.count.tolist(), "mean": self.mean.tolist(), "m2": self.m2.tolist(),
            "vocabularies": {c: list(v) for c, v in self.vocabularies.items()},
            "rows_seen": self.rows_seen, "unknown_values": self.unknown_values,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the fitted state; the schema and rules must match this featurizer's.

        Raises:
            ValueError: the state was written for other columns or rules.
        """
        for key in ("numeric", "categorical", "label", "task", "missing", "scaling", "max_categories"):
            if state[key] != getattr(self, key):
                raise ValueError(f"preprocessing state has {key}={state[key]!r}; this featurizer has {getattr(self, key)!r}")
        self.classes = list(state["classes"])
        self.count = np.array(state["count"], np.int64)
        self.mean = np.array(state["mean"], np.float64)
        self.m2 = np.array(state["m2"], np.float64)
        self.vocabularies = {c: list(v) for c, v in state["vocabularies"].items()}
        self.rows_seen, self.unknown_values = int(state["rows_seen"]), int(state["unknown_values"])

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Featurizer:
        """Rebuild a featurizer from :meth:`state_dict` (what a replica does with a version's state)."""
        f = cls(numeric=state["numeric"], categorical=state["categorical"], label=state["label"], task=state["task"],
                classes=state["classes"], allow_new_classes=state["allow_new_classes"], missing=state["missing"],
                scaling=state["scaling"], max_categories=state["max_categories"], id_column=state.get("id_column"))
        f.load_state_dict(state)
        return f
