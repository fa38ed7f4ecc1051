"""Streaming preprocessing: fitted on revealed rows only, the unknown slot, missing values, classes, state."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddn_ray.features import Featurizer
from ddn_ray.records import RecordError, records_table


def _table(**cols: list) -> pa.Table:
    return pa.table(cols)


def test_scaling_follows_only_the_rows_revealed_so_far() -> None:
    f = Featurizer(numeric=["a"], label="y", classes=[0, 1], missing="quarantine")
    first = _table(a=[1.0, 2.0, 3.0], y=[0, 1, 0])
    later = _table(a=[100.0, 200.0], y=[1, 1])
    before = f.transform(first)
    assert before[:, 0].tolist() == [1.0, 2.0, 3.0]  # nothing revealed yet: identity
    f.update(first)
    x = f.transform(later)  # the later rows are scaled by the first rows' moments only
    assert x[:, 0] == pytest.approx([(100 - 2) / 1.0, (200 - 2) / 1.0])
    f.update(later)
    all_rows = np.array([1, 2, 3, 100, 200.0])
    assert f.mean[0] == pytest.approx(all_rows.mean()) and f.m2[0] == pytest.approx(
        ((all_rows - all_rows.mean()) ** 2).sum()
    )


def test_vocabulary_grows_with_an_unknown_slot_and_a_capacity() -> None:
    f = Featurizer(numeric=[], categorical=["c"], max_categories=3)
    f.update(_table(c=["x", "y", "z", None]))
    assert f.vocabularies["c"] == ["x", "y"] and f.unknown_values == 1  # "z" found the vocabulary full
    x = f.transform(_table(c=["y", "z", "never seen", None, "x"]))
    assert x.argmax(1).tolist() == [2, 0, 0, 0, 1] and x.sum(1).tolist() == [1.0] * 5


def test_categorical_numbers_and_strings_are_one_value() -> None:
    f = Featurizer(numeric=[], categorical=["c"], max_categories=4)
    f.update(_table(c=pa.array([3, 7], pa.int64())))
    served = records_table([{"c": 3}, {"c": "7"}, {"c": 3.0}], numeric=[], categorical=["c"])
    assert f.transform(served).argmax(1).tolist() == [1, 2, 1]


def test_missing_values_are_imputed_with_an_indicator_or_quarantined() -> None:
    rows = _table(a=[1.0, None, float("nan"), 3.0, 5.0], c=["u", None, "u", "v", "u"], y=["p", "q", "p", "q", None])
    imp = Featurizer(numeric=["a"], categorical=["c"], label="y", classes=["p", "q"], max_categories=3)
    good, reasons = imp.check(rows)
    assert good.tolist() == [True, True, True, True, False] and reasons == ["missing label y"]
    imp.update(rows.filter(pa.array(good)))
    x = imp.transform(rows)
    assert x[:, 1].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]  # the indicator
    assert x[1, 0] == pytest.approx(0.0) and x[1, 2] == 1.0  # mean-imputed (0 after scaling), unknown slot
    strict = Featurizer(numeric=["a"], categorical=["c"], label="y", classes=["p", "q"], missing="quarantine")
    good, reasons = strict.check(rows)
    assert good.tolist() == [True, False, False, True, False]
    assert reasons == ["missing value in a", "missing value in a", "missing label y"]


def test_new_classes_grow_or_are_quarantined() -> None:
    rows = _table(a=[0.0, 1.0, 2.0], y=["cat", "dog", "emu"])
    fixed = Featurizer(numeric=["a"], label="y", classes=["cat", "dog"])
    good, reasons = fixed.check(rows)
    assert good.tolist() == [True, True, False] and "not in the declared classes" in reasons[0]
    grow = Featurizer(numeric=["a"], label="y", classes=["dog"], allow_new_classes=True)
    assert grow.check(rows)[0].all() and grow.num_classes == 1
    assert grow.label_ids(rows).tolist() == [-1, 0, -1]  # before the labels were revealed
    grow.update(rows)
    assert grow.classes == ["dog", "cat", "emu"] and grow.label_ids(rows).tolist() == [1, 0, 2]
    assert grow.class_names([2, 0, 5]) == ["emu", "dog", None]


def test_state_round_trips_and_rejects_another_schema() -> None:
    f = Featurizer(numeric=["a", "b"], categorical=["c"], label="y", classes=[0, 1], max_categories=4)
    t = _table(a=[1.0, 5.0], b=[None, 2.0], c=["k", "l"], y=[1, 0])
    f.update(t)
    state = pickle.loads(pickle.dumps(f.state_dict()))
    g = Featurizer.from_state(state)
    assert np.array_equal(f.transform(t), g.transform(t)) and g.vocabularies == {"c": ["k", "l"]}
    other = Featurizer(numeric=["a"], categorical=["c"], label="y", max_categories=4)
    with pytest.raises(ValueError, match="numeric"):
        other.load_state_dict(state)


def test_regression_targets_and_non_finite_values() -> None:
    f = Featurizer(numeric=["a"], label="t", task="regression")
    rows = _table(a=[1.0, float("inf"), 2.0], t=[0.5, 1.0, None])
    good, reasons = f.check(rows)
    assert good.tolist() == [True, False, False] and reasons == [
        "non-finite value in a",
        "missing or non-finite target t",
    ]
    assert f.label_ids(rows.slice(0, 1)).tolist() == [[0.5]] and f.num_classes == 1


@pytest.mark.parametrize(
    "records,field",
    [
        ([{"a": 1.0}], "records[0].c"),
        ([{"a": 1.0, "c": "x"}, {"a": "1.0", "c": "x"}], "records[1].a"),
        ([{"a": 1.0, "c": "x", "zzz": 1}], "records[0].zzz"),
        ([{"a": True, "c": "x"}], "records[0].a"),
        ([{"a": 1e400, "c": "x"}], "records[0].a"),
        ([{"a": 1.0, "c": ["x"]}], "records[0].c"),
        ([[1.0, "x"]], "records[0]"),
    ],
)
def test_records_name_the_row_and_column(records: list, field: str) -> None:
    with pytest.raises(RecordError) as err:
        records_table(records, numeric=["a"], categorical=["c"])
    assert err.value.field == field and str(err.value).startswith(field)
    assert pickle.loads(pickle.dumps(err.value)).field == field  # crosses actors
    with pytest.raises(RecordError) as err:  # what a replica calls: the same error, whichever path read them
        Featurizer(numeric=["a"], categorical=["c"]).read_records(records)
    assert err.value.field == field


_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, width=32),
    st.sampled_from(["n", "s", "3", ""]),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({"a": _VALUE, "b": _VALUE, "c": _VALUE}, optional={"id": _VALUE}), min_size=1, max_size=8
    )
)
def test_records_read_column_wise_featurize_as_records_table(records: list) -> None:
    """The column-wise path a replica takes for plain records agrees with :func:`records_table` on any request."""
    f = Featurizer(numeric=["a", "b"], categorical=["c"], id_column="id", max_categories=4)
    f.update(_table(a=[1.0, 5.0], b=[0.0, 2.0], c=["n", "s"]))
    try:
        table = records_table(records, numeric=["a", "b"], categorical=["c"], optional=["id"])
    except RecordError as exc:
        with pytest.raises(RecordError) as err:
            f.read_records(records)
        assert err.value.field == exc.field
        return
    rows, ids = f.read_records(records)
    np.testing.assert_array_equal(f.transform(rows), f.transform(table))
    assert ids == table["id"].to_pylist()
    assert f.check(rows, labels=False)[0].tolist() == f.check(table, labels=False)[0].tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.fixed_dictionaries({"a": _VALUE, "b": _VALUE, "c": _VALUE, "id": _VALUE}), min_size=1, max_size=8),
    st.permutations(["a", "b", "c", "id"]),
)
def test_split_orientation_reads_as_the_same_records(records: list, columns: list) -> None:
    """``{"columns", "data"}`` (pandas' split orientation) gives what the same rows as records give, or the same
    error with ``data[i]`` for ``records[i]``; the columns may come in any order."""
    f = Featurizer(numeric=["a", "b"], categorical=["c"], id_column="id", max_categories=4)
    f.update(_table(a=[1.0, 5.0], b=[0.0, 2.0], c=["n", "s"]))
    data = [[r[c] for c in columns] for r in records]
    try:
        want, want_ids = f.read_records(records)
    except RecordError as exc:
        with pytest.raises(RecordError) as err:
            f.read_split(columns, data)
        assert err.value.field == exc.field.replace("records[", "data[")
        return
    rows, ids = f.read_split(columns, data)
    np.testing.assert_array_equal(f.transform(rows), f.transform(want))
    assert ids == want_ids


@pytest.mark.parametrize(
    "columns,data,field",
    [
        (["a"], [[1.0]], "columns"),  # c missing
        (["a", "c", "zzz"], [[1.0, "x", 1]], "columns"),  # unknown
        (["a", "c", "a"], [[1.0, "x", 1.0]], "columns"),  # twice
        (["a", "c"], [[1.0, "x"], [1.0]], "data[1]"),  # a short row
        (["a", "c"], [[1.0, "x"], {"a": 1.0}], "data[1]"),  # not a list
        (["c", "a"], [["x", 1.0], ["x", "1.0"]], "data[1].a"),
        (["a", "c"], [[1.0, ["x"]]], "data[0].c"),
    ],
)
def test_split_orientation_names_columns_row_and_column(columns: list, data: list, field: str) -> None:
    with pytest.raises(RecordError) as err:
        Featurizer(numeric=["a"], categorical=["c"], id_column="id").read_split(columns, data)
    assert err.value.field == field, str(err.value)


def test_records_accept_nulls_and_an_id() -> None:
    t = records_table(
        [{"a": None, "c": None, "id": 7}, {"a": 2, "c": "x"}], numeric=["a"], categorical=["c"], optional=["id"]
    )
    assert t.column_names == ["a", "c", "id"] and t["id"].to_pylist() == ["7", None]
    assert t["a"].type == pa.float64()
