from __future__ import annotations

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from ddn_ray.serve import PredictRequest, check_instances


@pytest.mark.parametrize(
    "body,field",
    [
        ({"instances": []}, "instances"),
        ({"instances": [[1.0, "x"]]}, "instances.0.1"),
        ({"instances": [[1.0, float("nan")]]}, "instances.0.1"),
        ({"instances": [[float("inf")]]}, "instances.0.0"),
        ({"instances": [[1.0]], "extra": 1}, "extra"),
        ({"instances": [1.0]}, "instances.0"),
    ],
)
def test_malformed_bodies_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        PredictRequest.model_validate(body)
    assert field in {".".join(map(str, e["loc"])) for e in err.value.errors()}


@pytest.mark.parametrize(
    "body,got",
    [({"rows": [[1.0]]}, "['rows']"), ({"instances": [[1.0]], "records": [{"a": 1}]}, "['instances', 'records']")],
)
def test_a_body_needs_exactly_one_of_instances_or_records_and_is_told_what_came(body: dict, got: str) -> None:
    with pytest.raises(ValidationError) as err:
        PredictRequest.model_validate(body)
    assert (
        "send exactly one of 'instances'" in str(err.value) and "'records'" in str(err.value) and got in str(err.value)
    )


def test_ints_are_numbers_strings_are_not() -> None:
    assert PredictRequest.model_validate({"instances": [[1, 2.5]]}).instances == [[1.0, 2.5]]
    with pytest.raises(ValidationError):
        PredictRequest.model_validate({"instances": [["1.0"]]})


def test_width_and_batch_size_checks() -> None:
    check_instances([[0.0] * 3] * 4, num_features=3, max_batch_rows=4)
    with pytest.raises(HTTPException) as err:
        check_instances([[0.0] * 3, [0.0] * 2], num_features=3, max_batch_rows=4)
    assert err.value.status_code == 422 and "instances[1] has 2 features; expected 3" in err.value.detail[0]["msg"]
    with pytest.raises(HTTPException) as err:
        check_instances([[0.0] * 3] * 5, num_features=3, max_batch_rows=4)
    assert err.value.status_code == 413 and "at most 4" in err.value.detail
