"""What every request to a replica passes before a route sees it, and the input rules every route shares.

* :class:`RequestGuard`, an ASGI middleware on the Serve app, runs before FastAPI parses anything:
  the bearer token (``serve.auth_token`` or ``$DDN_RAY_AUTH_TOKEN``; 401 without it, on every route) and
  the body limit (``serve.max_body_bytes``; a 413 from the ``Content-Length`` header, or as soon as a
  streamed body passes the limit, so an oversized body is never buffered whole).
* Numbers: :data:`ModelFloat` is a JSON number a float32 model can hold (finite, ``|v| <= 3.4028235e38``);
  a bigger one is a 422 naming the field, not an ``inf`` inside the model.
* Text: :func:`normalise_text` is the one rule for every string a client sends (texts, record values,
  labels, ids): NFC-normalised (Unicode UAX #15); a lone surrogate (not UTF-8) or a control character other
  than tab, line feed and carriage return (NUL included) is a 422 naming the field.
* Images: :func:`check_image_size` reads a PNG's width and height from its header, before decoding, and
  refuses more pixels than :data:`MAX_IMAGE_PIXELS` (a decompression bomb never reaches the decoder).
"""

from __future__ import annotations

import hmac
import io
import json
import os
import unicodedata
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field

__all__ = [
    "AUTH_TOKEN_ENV",
    "F32_MAX",
    "MAX_IMAGE_PIXELS",
    "TEXT_PATTERN",
    "ModelFloat",
    "RequestGuard",
    "Text",
    "auth_token_from_env",
    "check_image_size",
    "check_strings",
    "default_max_body_bytes",
    "normalise_text",
]

AUTH_TOKEN_ENV = "DDN_RAY_AUTH_TOKEN"
F32_MAX = float(np.finfo(np.float32).max)
MAX_IMAGE_PIXELS = 4096 * 4096  # per image, from its header; a model's own size is checked after
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def _in_float32(value: float) -> float:
    if abs(value) > F32_MAX:
        raise ValueError(f"{value:g} is outside float32's range (|v| <= {F32_MAX:.7g}): the model computes in float32")
    return value


# The bounds are published in the OpenAPI; the validator gives the clearer message.
ModelFloat = Annotated[
    float,
    Field(strict=True, allow_inf_nan=False, json_schema_extra={"minimum": -F32_MAX, "maximum": F32_MAX}),
    AfterValidator(_in_float32),
]
"""A JSON number a float32 model can take: finite and within float32's range (a 422 naming the field else)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def normalise_text(value: str) -> str:
    """The text rule for every string a client sends: NFC (UAX #15), no lone surrogate, no control character
    but tab, line feed and carriage return.

    Returns:
        ``value`` in NFC.

    Raises:
        ValueError: saying which character (by code point) and where it is.

    Examples:
        >>> normalise_text("cafe\\u0301") == "caf\\u00e9"
        True
    """
    for i, ch in enumerate(value):
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"character {i} is a lone surrogate (U+{code:04X}): not valid UTF-8 text")
        if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS:
            raise ValueError(f"character {i} is the control character U+{code:04X}; only tab, LF and CR are taken")
    return unicodedata.normalize("NFC", value)


TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
"""The text rule's control characters as a JSON-schema ``pattern`` (published in the OpenAPI)."""

Text = Annotated[str, Field(json_schema_extra={"pattern": TEXT_PATTERN}), AfterValidator(normalise_text)]
"""A client's string under :func:`normalise_text` (a 422 naming the field when it breaks the rule)."""


def check_strings(value: Any, where: str) -> Any:
    """Apply :func:`normalise_text` to every string (keys included) inside lists and objects.

    Args:
        value: JSON-decoded data (lists, dicts, scalars).
        where: its field's name, for the error (``records``).

    Returns:
        ``value`` with every string normalised.

    Raises:
        ValueError: naming the place, e.g. ``records[3].city: character 2 is the control character U+0000``.
    """
    if isinstance(value, str):
        try:
            return normalise_text(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if isinstance(value, list):
        return [check_strings(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {check_strings(k, f"{where} key"): check_strings(v, f"{where}.{k}") for k, v in value.items()}
    return value


def default_max_body_bytes(max_batch_rows: int, num_features: int) -> int:
    """The default request body limit: 32 bytes for each number of the largest batch (``max_batch_rows``
    rows of ``num_features``; a float64 in JSON with its separator takes at most 25), at least 8 MiB
    (texts and images are sent raw, not as model inputs)."""
    return max(8 << 20, 32 * max_batch_rows * num_features)


def check_image_size(raw: bytes, expected: tuple[int, int], where: str) -> None:
    """Check a PNG's size from its header, before anything is decoded.

    Args:
        raw: the file's bytes.
        expected: ``(width, height)`` the model takes.
        where: the field (``png[3]``).

    Raises:
        ValueError: not a PNG, more than :data:`MAX_IMAGE_PIXELS` pixels, or not ``expected``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:  # reads the header only
            (w, h), kind = img.size, img.format
    except Image.DecompressionBombError:  # PIL's own check, at twice its MAX_IMAGE_PIXELS
        raise ValueError(f"{where} claims more than {MAX_IMAGE_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ValueError(f"{where} is not a readable PNG file") from None
    if kind != "PNG":
        raise ValueError(f"{where} is a {kind} image; send PNG")
    if w * h > MAX_IMAGE_PIXELS:
        raise ValueError(f"{where} claims {w}x{h} pixels; at most {MAX_IMAGE_PIXELS} pixels are read")
    if (w, h) != expected:
        raise ValueError(f"{where} is {w}x{h} pixels; expected {expected[0]}x{expected[1]}")


class RequestGuard:
    """ASGI middleware: the bearer token and the body limit, before the app parses a byte.

    Args:
        app: the wrapped ASGI app.
        settings: returns ``(auth_token, max_body_bytes)`` at each request (``None`` token: no auth), so a
            replica sets them after the app is built.

    A refused request gets a JSON ``{"detail": ...}`` answer: 401 (``WWW-Authenticate: Bearer``) for a missing
    or wrong ``Authorization: Bearer <token>`` header, 413 for a body over the limit. ``on_refusal`` (the
    replica's metrics) counts each.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Callable[[], tuple[str | None, int]],
        on_refusal: Callable[[int], None] | None = None,
    ) -> None:
        self.app, self.settings, self.on_refusal = app, settings, on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token, limit = self.settings()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if token is not None:
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                why = "missing Authorization header" if not given else "wrong bearer token"
                await self._refuse(send, 401, f"{why}: send 'Authorization: Bearer <token>'", bearer=True)
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._refuse(send, 413, f"the body is {int(length)} bytes; at most {limit} (serve.max_body_bytes)")
            return
        chunks, size, more = [], 0, True
        while more:  # read the body up to the limit, then hand it to the app in one piece
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, 413, f"the body is over {limit} bytes (serve.max_body_bytes)")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(
            scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive), send
        )

    async def _refuse(self, send: Send, status: int, detail: str, bearer: bool = False) -> None:
        if self.on_refusal is not None:
            self.on_refusal(status)
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if bearer:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A ``receive`` that gives ``messages`` first, then defers to ``then`` (a client's disconnect)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def auth_token_from_env() -> str | None:
    """``$DDN_RAY_AUTH_TOKEN``, ``None`` when unset or empty."""
    return os.environ.get(AUTH_TOKEN_ENV) or None
