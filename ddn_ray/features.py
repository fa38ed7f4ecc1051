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

Examples:
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
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ddn_ray import records as records_io
from ddn_ray.guard import F32_MAX
from ddn_ray.records import RecordError

Task = Literal["classification", "regression"]
"""What a model predicts: a class (softmax over classes) or real values (MSE)."""

__all__ = ["Featurizer", "Rows"]

UNKNOWN = "<unknown>"
MISSING_SUFFIX = "__missing"


def _is_none(values: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: which of an object array's values are ``None`` (a missing categorical value)."""
    return np.equal(values, None)  # type: ignore[call-overload]  # elementwise ``is None`` on object arrays


@dataclass(frozen=True)
class Rows:
    """Rows as a :class:`Featurizer` reads them: every column converted once, then used by check, fit and transform.

    Build it with :meth:`Featurizer.rows` (from an Arrow table) or :meth:`Featurizer.read_records` (from a
    request's JSON records); every :class:`Featurizer` method also takes a table and converts it itself. A
    stream converts each batch it reads once and slices it into windows (:meth:`slice` is a view).

    Attributes:
        numeric: ``(n, k)`` float64, the featurizer's numeric columns in order, NaN where a value is missing.
        categorical: ``(n,)`` object arrays, each categorical column's values as strings (``None`` where missing).
        label: the label column as Arrow (``None``: rows without labels, e.g. a request's).
        label_values: ``(n,)`` the label as numpy: a regression target as float64 (NaN where missing), a
            class as the column's values (object for strings; float64 with NaN for ints with gaps).
        class_ids: ``(classes_version, (n,) int64 ids)`` when the classes cannot grow: the label ids
            computed once at conversion, used while the featurizer's classes are that version.
        checked: ``(classes_version, good (n,) bool, reasons (n,) object)``: :meth:`Featurizer.check` of the
            rows with their labels, done once for a whole batch (:meth:`Featurizer.prepare`); ``reasons`` holds
            ``None`` for a good row. Used while the classes are that version (``-1``: any version).
        inputs: ``(n, width)`` float32, the model inputs of a featurizer whose transform reads no fitted state
            (:attr:`Featurizer.stateless`), computed once for a whole batch.
    """

    numeric: np.ndarray
    categorical: Mapping[str, np.ndarray] = field(default_factory=dict)
    label: pa.Array | pa.ChunkedArray | None = None
    label_values: np.ndarray | None = None
    class_ids: tuple[int, np.ndarray] | None = None
    checked: tuple[int, np.ndarray, np.ndarray] | None = None
    inputs: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def _take(self, index: slice | np.ndarray) -> Rows:
        c, k = self.class_ids, self.checked
        return Rows(
            numeric=self.numeric[index],
            categorical={name: v[index] for name, v in self.categorical.items()},
            label=None
            if self.label is None
            else (
                self.label.slice(index.start, index.stop - index.start)
                if isinstance(index, slice)
                else self.label.filter(pa.array(index))
            ),
            label_values=None if self.label_values is None else self.label_values[index],
            class_ids=None if c is None else (c[0], c[1][index]),
            checked=None if k is None else (k[0], k[1][index], k[2][index]),
            inputs=None if self.inputs is None else self.inputs[index],
        )

    def slice(self, start: int, stop: int) -> Rows:
        """Rows ``[start, stop)``, without copying."""
        return self._take(slice(start, stop))

    def filter(self, keep: np.ndarray) -> Rows:
        """The rows where ``keep`` (``(n,)`` bool) is true."""
        return self._take(keep)

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        """The rows of ``parts`` one after the other (their columns must match)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        label = None
        if first.label is not None:
            label = pa.chunked_array(
                [c for p in parts for c in (p.label.chunks if isinstance(p.label, pa.ChunkedArray) else [p.label])]
            )
        versions = {None if p.class_ids is None else p.class_ids[0] for p in parts}
        class_ids = None
        if len(versions) == 1 and first.class_ids is not None:
            class_ids = (first.class_ids[0], np.concatenate([p.class_ids[1] for p in parts if p.class_ids is not None]))
        checked = None
        if len({None if p.checked is None else p.checked[0] for p in parts}) == 1 and first.checked is not None:
            done = [p.checked for p in parts if p.checked is not None]
            checked = (first.checked[0], np.concatenate([c[1] for c in done]), np.concatenate([c[2] for c in done]))
        inputs = None
        if all(p.inputs is not None for p in parts):
            inputs = np.concatenate([p.inputs for p in parts])
        return Rows(
            numeric=np.concatenate([p.numeric for p in parts]),
            categorical={c: np.concatenate([p.categorical[c] for p in parts]) for c in first.categorical},
            label=label,
            label_values=None if first.label_values is None else np.concatenate([p.label_values for p in parts]),
            class_ids=class_ids,
            checked=checked,
            inputs=inputs,
        )


def _strings(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A categorical column as strings: a number or bool as Arrow's cast writes it (``3`` and ``"3"`` are one value)."""
    return col if pa.types.is_string(col.type) else pc.cast(col, pa.string())


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
        task: Task = "classification",
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
        self._slot_maps: dict[str, tuple[int, dict[str, int]]] = {}
        self._classes_version = 0  # bumped whenever classes change: Rows.class_ids of another version are stale

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

    @property
    def stateless(self) -> bool:
        """Whether :meth:`transform` reads no fitted state: no scaling, no categorical column, and no
        imputation by the running mean (a missing value is quarantined). Its inputs can then be computed
        for a whole batch at once (:meth:`prepare`)."""
        return self.scaling == "none" and not self.categorical and (self.missing == "quarantine" or not self.numeric)

    @property
    def _fits_moments(self) -> bool:
        """Whether anything reads the running moments: scaling, or imputation by the running mean."""
        return bool(self.numeric) and (self.scaling == "standard" or self.missing == "impute")

    def _check_version(self) -> int:
        """The classes version a label check depends on (``-1``: none; the classes can grow, or regression)."""
        return self._classes_version if self.task == "classification" and not self.allow_new_classes else -1

    def schema(self) -> dict[str, Any]:
        """What a client sends and gets: columns by kind, the rules, and the classes known now."""
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "id": self.id_column,
            "label": self.label,
            "task": self.task,
            "classes": self.classes if self.task == "classification" else None,
            "missing": self.missing,
            "vocabularies": self.vocabularies,
        }

    # reading --------------------------------------------------------------
    def rows(self, table: pa.Table) -> Rows:
        """Convert ``table``'s feature (and label, when it has it) columns once, for the methods below."""
        n = table.num_rows
        x = np.empty((n, len(self.numeric)), np.float64)
        for j, c in enumerate(self.numeric):
            x[:, j] = self._floats(table[c])
        categorical = {c: _strings(table[c]).to_numpy(zero_copy_only=False) for c in self.categorical}
        label = values = ids = None
        if self.label is not None and self.label in table.column_names:
            label = table[self.label]
            values = self._floats(label) if self.task == "regression" else label.to_numpy(zero_copy_only=False)
            if self.task == "classification" and not self.allow_new_classes:
                ids = (self._classes_version, self._class_ids(values))
        return Rows(numeric=x, categorical=categorical, label=label, label_values=values, class_ids=ids)

    def prepare(self, table: pa.Table) -> Rows:
        """:meth:`rows` of a batch read from a stream, with the work that reads no fitted state done once for
        the whole batch: the :meth:`check` of every row and its label, and the inputs of a :attr:`stateless`
        featurizer. The windows cut from it (:meth:`Rows.slice`) then only fit and transform what is stateful.
        """
        r = self.rows(table)
        if r.label is None:
            return r
        good, reasons = self.check(r)
        why = np.full(len(r), None, object)
        why[~good] = reasons
        return replace(
            r, checked=(self._check_version(), good, why), inputs=self.transform(r) if self.stateless else None
        )

    def _rows(self, data: pa.Table | Rows) -> Rows:
        return data if isinstance(data, Rows) else self.rows(data)

    def read_records(self, records: Sequence[Any]) -> tuple[Rows, list[str | None] | None]:
        """A request's JSON records as :class:`Rows` and their ids (``None`` without an id column).

        Records of exactly the schema's columns, finite numbers and string categories (the usual
        request) are read column-wise; any other request goes through :func:`~ddn_ray.records.records_table`,
        which names the first record and column that does not fit.

        Raises:
            RecordError: as :func:`~ddn_ray.records.records_table`.
        """
        plain = records_io.plain_columns(records, self.numeric, self.categorical, self.id_column)
        if plain is not None:
            x, categorical, ids = plain
            return Rows(numeric=x, categorical=categorical), ids
        optional = [self.id_column] if self.id_column else []
        table = records_io.records_table(records, self.numeric, self.categorical, optional)
        return self.rows(table), (table[self.id_column].to_pylist() if self.id_column else None)

    def read_split(self, columns: Sequence[Any], data: Sequence[Any]) -> tuple[Rows, list[str | None] | None]:
        """A request in pandas' ``split`` orientation (``df.to_json(orient="split", index=False)``: the
        column names once, then one list of values per row) as :class:`Rows` and ids, like :meth:`read_records`.

        Args:
            columns: the schema's feature columns (and the id column, when it has one), in any order.
            data: ``(n, len(columns))`` values, row by row.

        Raises:
            RecordError: naming ``columns`` (a column missing, unknown or listed twice), ``data[i]`` (a row
                that is not a list of ``len(columns)`` values) or ``data[i].column`` (a value of the wrong type).
        """
        plain = records_io.split_columns(columns, data, self.numeric, self.categorical, self.id_column)
        if plain is not None:
            x, categorical, ids = plain
            return Rows(numeric=x, categorical=categorical), ids
        try:  # the checks of records_table, each error named by its row and column
            return self.read_records([dict(zip(columns, row)) for row in data])
        except RecordError as exc:
            raise RecordError(exc.field.replace("records[", "data[", 1), exc.message) from None

    def record_table(self, rows: Rows) -> pa.Table:
        """The feature columns of ``rows`` as they were read: numeric float64 (NaN where missing), categorical
        strings. What the service's prediction log keeps of a request, and learns from once its label joins."""
        cols: dict[str, Any] = {c: rows.numeric[:, j] for j, c in enumerate(self.numeric)}
        cols.update({c: pa.array(rows.categorical[c], pa.string()) for c in self.categorical})
        return pa.table(cols)

    # validation -----------------------------------------------------------
    def check(self, data: pa.Table | Rows, labels: bool = True) -> tuple[np.ndarray, list[str]]:
        """Which rows may be served and learned (``labels=False``: only the features, as a replica checks a request).

        Args:
            data: an Arrow table with the feature (and label) columns, or its :class:`Rows`.
            labels: check the label column too.

        Returns:
            ``(good (n,) bool, reason for each bad row)``: a missing feature under ``missing="quarantine"``,
            a non-finite number or one past float32's range, a missing label, or a class not known and not
            allowed to grow.
        """
        r = self._rows(data)
        n = len(r)
        if labels and r.checked is not None and r.checked[0] == self._check_version():
            good = r.checked[1]
            return (good, []) if good.all() else (good, r.checked[2][~good].tolist())
        x = r.numeric
        quarantine = self.missing == "quarantine"
        # past float32's range a value would reach the model as infinity: refused like one
        huge = np.abs(np.nan_to_num(x, nan=0.0)) > F32_MAX
        bad_x = (not np.isfinite(x).all()) if quarantine else bool(np.isinf(x).any())
        bad_x = bad_x or bool(huge.any())
        bad_cat = quarantine and any(_is_none(v).any() for v in r.categorical.values())
        label, label_values = (r.label, r.label_values) if self.label is not None and labels else (None, None)
        check_labels = label is not None and label_values is not None
        if self.label is not None and labels and not check_labels:
            raise ValueError(f"the rows have no label column {self.label!r}")
        ids = None
        if check_labels and self.task == "classification" and not self.allow_new_classes:
            ids = self._label_ids(r)
        bad_y = (
            label is not None
            and label_values is not None
            and (
                (
                    self.task == "regression"
                    and not (np.isfinite(label_values) & (np.abs(label_values) <= F32_MAX)).all()
                )
                or (self.task == "classification" and (label.null_count > 0 or (ids is not None and (ids < 0).any())))
            )
        )
        if not (bad_x or bad_cat or bad_y):  # the usual window: no per-row work
            return np.ones(n, bool), []
        reasons: list[str | None] = [None] * n

        def refuse(mask: np.ndarray, why: str) -> None:
            for i in np.flatnonzero(mask):
                if reasons[i] is None:
                    reasons[i] = why

        for j, c in enumerate(self.numeric):
            refuse(np.isinf(x[:, j]), f"non-finite value in {c}")
            refuse(huge[:, j], f"value in {c} outside float32's range (|v| <= {F32_MAX:.7g})")
            if quarantine:
                refuse(np.isnan(x[:, j]), f"missing value in {c}")
        if quarantine:
            for c, v in r.categorical.items():
                refuse(_is_none(v), f"missing value in {c}")
        if label is not None and label_values is not None:
            if self.task == "regression":
                refuse(~np.isfinite(label_values), f"missing or non-finite target {self.label}")
                refuse(np.abs(np.nan_to_num(label_values)) > F32_MAX, f"target {self.label} outside float32's range")
            else:
                refuse(np.asarray(label.is_null().to_numpy(zero_copy_only=False)), f"missing label {self.label}")
                if ids is not None:
                    refuse(ids < 0, "label not in the declared classes (data.classes; or set data.allow_new_classes)")
        good = np.array([why is None for why in reasons], bool)
        return good, [why for why in reasons if why is not None]

    # fitting --------------------------------------------------------------
    def update(self, data: pa.Table | Rows) -> None:
        """Fit on revealed rows (already :meth:`check`-ed): running moments, vocabularies, new classes."""
        r = self._rows(data)
        if self._fits_moments:  # else nothing reads them (no scaling, a missing value quarantined)
            # Chan, Golub & LeVeque (1979): merge the batch's moments into the running ones, all columns
            # at once; a column's missing values are left out of its moments.
            x = r.numeric
            finite = np.isfinite(x)
            if finite.all():  # the usual window
                n_b = np.full(x.shape[1], x.shape[0], np.int64)
                mean_b = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
                m2_b = ((x - mean_b) ** 2).sum(axis=0)
            else:
                n_b = finite.sum(axis=0)
                mean_b = np.where(finite, x, 0.0).sum(axis=0) / np.maximum(n_b, 1)
                m2_b = (np.where(finite, x - mean_b, 0.0) ** 2).sum(axis=0)
            n_a = self.count
            n = n_a + n_b
            delta, share = mean_b - self.mean, n_b / np.maximum(n, 1)
            self.mean = self.mean + delta * share
            self.m2 = self.m2 + m2_b + delta**2 * n_a * share
            self.count = n
        for c, col in r.categorical.items():
            vocab = self.vocabularies[c]
            seen = set(vocab)
            for v in dict.fromkeys(col.tolist()):  # in order of first appearance
                if v is None or v in seen:
                    continue
                if len(vocab) < self.max_categories - 1:
                    vocab.append(v)
                    seen.add(v)
                else:
                    self.unknown_values += 1
        if r.label is not None and self.label is not None and self.task == "classification" and self.allow_new_classes:
            known = set(self.classes)
            for v in dict.fromkeys(r.label.to_pylist()):
                if v is not None and v not in known:
                    self.classes.append(v)
                    known.add(v)
                    self._classes_version += 1
        self.rows_seen += len(r)

    # transforming ---------------------------------------------------------
    @staticmethod
    def _floats(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """A numeric column as float64, nulls as NaN."""
        arr = col if col.type == pa.float64() else pc.cast(col, pa.float64())
        if arr.null_count:
            arr = pc.fill_null(arr, math.nan)
        return np.asarray(arr.to_numpy(zero_copy_only=False), np.float64)

    def _label_ids(self, r: Rows) -> np.ndarray:
        if r.class_ids is not None and r.class_ids[0] == self._classes_version:
            return r.class_ids[1]
        if r.label_values is None:
            raise ValueError(f"the rows have no label column {self.label!r}")
        return self._class_ids(r.label_values)

    def _class_ids(self, values: np.ndarray) -> np.ndarray:
        """``(n,)`` int64: each label's index in ``classes``, ``-1`` for a label not known (or missing).

        ``values`` is :attr:`Rows.label_values`; labels and classes compare as Python values do (``1 == 1.0``).
        """
        ids = np.full(len(values), -1, np.int64)
        if len(self.classes) <= 64:  # a comparison per class; numpy's == is elementwise, also for strings
            for i, c in enumerate(self.classes):
                hit = values == c
                if np.ndim(hit):
                    ids[hit] = i
            return ids
        lookup = {v: i for i, v in enumerate(self.classes)}
        return np.array([lookup.get(v, -1) for v in values.tolist()], np.int64)

    def _slots(self, column: str) -> dict[str, int]:
        """A categorical column's value -> one-hot slot (from 1), rebuilt only when its vocabulary grew."""
        vocab = self.vocabularies[column]
        cached = self._slot_maps.get(column)
        if cached is None or cached[0] != len(vocab):
            cached = (len(vocab), {v: k + 1 for k, v in enumerate(vocab)})
            self._slot_maps[column] = cached
        return cached[1]

    def transform(self, data: pa.Table | Rows) -> np.ndarray:
        """The model's inputs for the rows: ``(n, width)`` float32 (see the module doc)."""
        r = self._rows(data)
        n = len(r)
        if r.inputs is not None and self.stateless and r.inputs.shape[1] == self.width:
            return r.inputs  # computed for the whole batch (prepare): the same for any fitted state
        out = np.zeros((n, self.width), np.float32)
        k = len(self.numeric)
        if k:
            x = r.numeric
            missing = np.isnan(x)
            if missing.any():
                x = np.where(missing, self.mean, x)
            if self.scaling == "standard":
                std = np.sqrt(np.where(self.count > 1, self.m2 / np.maximum(self.count - 1, 1), 1.0))
                std = np.where(std > 1e-12, std, 1.0)
                x = (x - np.where(self.count > 1, self.mean, 0.0)) / std
            out[:, :k] = x
            if self.missing == "impute":
                out[:, k : 2 * k] = missing
        at = k * (2 if self.missing == "impute" else 1)
        rows = np.arange(n)
        for c, col in r.categorical.items():
            slots = self._slots(c)
            idx = np.fromiter((slots.get(v, 0) for v in col.tolist()), np.int64, n)  # 0: the unknown slot
            out[rows, at + idx] = 1.0
            at += self.max_categories
        return out

    def label_ids(self, data: pa.Table | Rows) -> np.ndarray:
        """Class ids ``(n,)`` int64 (``-1`` for a class not known), or regression targets ``(n, 1)`` float32.

        Raises:
            ValueError: the featurizer has no label column, or the rows do not have it.
        """
        if self.label is None:
            raise ValueError("this featurizer has no label column")
        r = self._rows(data)
        if r.label is None or r.label_values is None:
            raise ValueError(f"the rows have no label column {self.label!r}")
        if self.task == "regression":
            return r.label_values.astype(np.float32).reshape(-1, 1)
        return self._label_ids(r)

    def class_names(self, ids: Sequence[int]) -> list[Any]:
        """The class of each id (``None`` for an output not yet given a class)."""
        return [self.classes[i] if 0 <= i < len(self.classes) else None for i in ids]

    # state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: the schema, the rules and the fitted state."""
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "label": self.label,
            "task": self.task,
            "allow_new_classes": self.allow_new_classes,
            "missing": self.missing,
            "scaling": self.scaling,
            "max_categories": self.max_categories,
            "id_column": self.id_column,
            "classes": list(self.classes),
            "count": self.count.tolist(),
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "vocabularies": {c: list(v) for c, v in self.vocabularies.items()},
            "rows_seen": self.rows_seen,
            "unknown_values": self.unknown_values,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the fitted state; the schema and rules must match this featurizer's.

        Raises:
            ValueError: the state was written for other columns or rules.
        """
        for key in ("numeric", "categorical", "label", "task", "missing", "scaling", "max_categories"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"preprocessing state has {key}={state[key]!r}; this featurizer has {getattr(self, key)!r}"
                )
        self.classes = list(state["classes"])
        self._slot_maps = {}
        self._classes_version += 1
        self.count = np.array(state["count"], np.int64)
        self.mean = np.array(state["mean"], np.float64)
        self.m2 = np.array(state["m2"], np.float64)
        self.vocabularies = {c: list(v) for c, v in state["vocabularies"].items()}
        self.rows_seen, self.unknown_values = int(state["rows_seen"]), int(state["unknown_values"])

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Featurizer:
        """Rebuild a featurizer from :meth:`state_dict` (what a replica does with a version's state)."""
        f = cls(
            numeric=state["numeric"],
            categorical=state["categorical"],
            label=state["label"],
            task=state["task"],
            classes=state["classes"],
            allow_new_classes=state["allow_new_classes"],
            missing=state["missing"],
            scaling=state["scaling"],
            max_categories=state["max_categories"],
            id_column=state.get("id_column"),
        )
        f.load_state_dict(state)
        return f
