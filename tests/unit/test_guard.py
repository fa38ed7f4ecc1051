"""The request guard (token, body limit) on a real ASGI app, and the input rules every route shares."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from ddn_ray import guard
from ddn_ray.serve import PredictRequest
from ddn_ray.service import Feedback, LearnRequest
from ddn_ray.usecases import images
from ddn_ray.usecases.routes import DynamicsRequest, SeriesRequest, TextRequest


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A PNG file whose header claims ``width x height`` 8-bit grey pixels, with 1,000 zero bytes of data: what a
    decompression bomb looks like before it is decoded (ISO/IEC 15948 chunks: IHDR, IDAT, IEND)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _call(
    settings: tuple[str | None, int], chunks: list[bytes], headers: dict[str, str] | None = None
) -> tuple[int, bytes, list[bytes]]:
    """Send one POST through RequestGuard in front of a FastAPI app that echoes the body's length."""
    app = FastAPI()
    seen: list[bytes] = []

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, int]:
        seen.append(repr(body).encode())
        return {"keys": len(body)}

    refused: list[int] = []
    wrapped = guard.RequestGuard(app, settings=lambda: settings, on_refusal=refused.append)
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": "POST", "path": "/echo", "headers": raw_headers, "query_string": b""}
    scope |= {"http_version": "1.1", "scheme": "http", "root_path": "", "server": ("127.0.0.1", 80)}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(wrapped(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert refused == ([status] if status in (401, 413) else [])
    return status, body, seen


JSON = {"content-type": "application/json"}


def test_a_body_under_the_limit_reaches_the_app_whole_even_in_chunks() -> None:
    status, body, seen = _call((None, 1000), [b'{"a": 1, ', b'"b": [1, 2', b"]}"], JSON)
    assert status == 200 and body == b'{"keys":2}' and seen == [b"{'a': 1, 'b': [1, 2]}"]


def test_a_declared_length_over_the_limit_is_a_413_before_any_byte_is_read() -> None:
    status, body, seen = _call((None, 100), [b"{" * 50], {**JSON, "content-length": "101"})
    assert status == 413 and b"101 bytes; at most 100" in body and b"serve.max_body_bytes" in body and not seen


def test_a_streamed_body_without_length_is_cut_as_it_passes_the_limit() -> None:
    status, body, seen = _call((None, 100), [b"[" * 60, b"1" * 60, b"]" * 60], JSON)
    assert status == 413 and b"over 100 bytes" in body and not seen


@pytest.mark.parametrize(
    "headers,why",
    [
        ({}, b"missing Authorization"),
        ({"authorization": "Bearer nope"}, b"wrong bearer token"),
        ({"authorization": "Basic s3cret"}, b"wrong bearer token"),
    ],
)
def test_without_the_bearer_token_every_request_is_a_401(headers: dict[str, str], why: bytes) -> None:
    status, body, seen = _call(("s3cret", 1000), [b"{}"], {**JSON, **headers})
    assert status == 401 and why in body and not seen


def test_with_the_bearer_token_the_request_goes_through() -> None:
    status, _, seen = _call(("s3cret", 1000), [b'{"a": 1}'], {**JSON, "authorization": "Bearer s3cret"})
    assert status == 200 and seen


def test_the_default_body_limit_holds_the_largest_legitimate_batch() -> None:
    rows = np.full((64, 784), -0.12345678901234568e-100)
    body = PredictRequest(instances=rows.tolist()).model_dump_json(exclude_none=True).encode()
    assert len(body) < guard.default_max_body_bytes(64, 784)
    assert guard.default_max_body_bytes(1, 3) == 8 << 20


@pytest.mark.parametrize("value", [1e300, -1e39, 3.5e38])
def test_numbers_past_float32_are_a_422_naming_the_field(value: float) -> None:
    with pytest.raises(ValidationError) as err:
        PredictRequest.model_validate({"instances": [[0.0, value]]})
    assert ["instances", 0, 1] in [list(e["loc"]) for e in err.value.errors()]
    for model, body, loc in (
        (DynamicsRequest, {"states": [[value]], "actions": [[0.0]]}, ["states", 0, 0]),
        (SeriesRequest, {"series": "s", "values": [1.0, value]}, ["values", 1]),
    ):
        with pytest.raises(ValidationError) as err:
            model.model_validate(body)
        assert loc in [list(e["loc"]) for e in err.value.errors()]
    assert PredictRequest.model_validate({"instances": [[3.4e38]]}).instances == [[3.4e38]]


@pytest.mark.parametrize(
    "bad,why", [("a\ud800b", "lone surrogate (U+D800)"), ("a\x00b", "U+0000"), ("\x1b[2J", "U+001B")]
)
def test_text_with_a_lone_surrogate_or_control_character_is_refused_everywhere(bad: str, why: str) -> None:
    with pytest.raises(ValueError) as exc:
        guard.normalise_text(bad)
    assert why in str(exc.value) and str(exc.value).startswith("character ")
    cases = [
        (TextRequest, {"texts": ["fine", bad]}, "texts.1"),
        (SeriesRequest, {"series": bad, "values": [1.0]}, "series"),
        (PredictRequest, {"records": [{"city": "x"}, {"city": bad}]}, "records[1].city"),
        (PredictRequest, {"columns": ["city"], "data": [["x"], [bad]]}, "data[1][0]"),
        (PredictRequest, {"records": [{bad: 1.0}]}, "records[0] key"),
        (LearnRequest, {"records": [{"label": bad}]}, "records[0].label"),
        (Feedback, {"event_id": bad, "label": 1}, "event_id"),
        (Feedback, {"event_id": "e1", "label": bad}, "label"),
    ]
    for model, body, where in cases:
        with pytest.raises(ValidationError) as err:
            model.model_validate(body)
        text = str(err.value)
        # pydantic's strict str refuses a lone surrogate itself ("unable to parse ... as a unicode string")
        assert why in text or (bad == "a\ud800b" and "unicode" in text), (model, text)
        assert where in text or where.replace(".", "\n  ") in text, (model, text)


def test_text_is_nfc_normalised_and_tabs_and_newlines_are_kept() -> None:
    assert TextRequest.model_validate({"texts": ["cafe\u0301\tx\r\n"]}).texts == ["caf\u00e9\tx\r\n"]
    assert PredictRequest.model_validate({"records": [{"cafe\u0301": "e\u0301"}]}).records == [{"caf\u00e9": "\u00e9"}]


@pytest.mark.parametrize("size", [(20_000, 20_000), (2**31 - 1, 2**31 - 1), (4097, 4096)])
def test_an_image_header_claiming_too_many_pixels_is_refused_before_decoding(size: tuple[int, int]) -> None:
    item = base64.b64encode(_png_header(*size)).decode()
    with pytest.raises(ValueError, match=r"png\[1\] claims"):
        images.decode_png([images.encode_png(np.zeros((1, 4)), (1, 2, 2))[0], item], (1, 2, 2))


def test_an_image_of_the_wrong_size_or_format_is_named() -> None:
    good = images.encode_png(np.zeros((1, 9)), (1, 3, 3))
    with pytest.raises(ValueError, match=r"png\[0\] is 3x3 pixels; expected 2x2"):
        images.decode_png(good, (1, 2, 2))
    with pytest.raises(ValueError, match=r"png\[0\] is not a readable PNG"):
        images.decode_png([base64.b64encode(b"GIF89a" + b"\0" * 20).decode()], (1, 2, 2))
    with pytest.raises(ValueError, match=r"png\[0\] is not a readable PNG"):
        images.decode_png([base64.b64encode(_png_header(40, 40)).decode()], (1, 40, 40))  # 1,000 of 1,640 bytes
