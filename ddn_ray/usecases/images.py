"""Images over HTTP: PNG bytes (base64 in JSON) to and from flattened pixel rows.

Pixel rows are float32 in ``[0, 1]`` (``value / 255``), grey images ``(1, H, W)`` flattened
row-major, as :func:`ddn_ray.usecases.datasets.load_fashion_mnist` gives them. 8-bit greyscale PNG
(ISO/IEC 15948) holds exactly these values, so a row survives the round trip unchanged
when it is a multiple of 1/255.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence

import numpy as np

from ddn_ray.guard import check_image_size

__all__ = ["decode_png", "encode_png"]


def encode_png(rows: np.ndarray, shape: Sequence[int]) -> list[str]:
    """Encode pixel rows as base64 PNG strings.

    Args:
        rows: ``(n, H*W)`` float in ``[0, 1]``.
        shape: ``(1, H, W)``.

    Returns:
        ``n`` base64 (ASCII) strings of 8-bit greyscale PNG files.
    """
    from PIL import Image

    _, h, w = shape
    out = []
    for row in np.asarray(rows):
        buf = io.BytesIO()
        pixels = np.clip(np.rint(row.reshape(h, w) * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(buf, format="PNG")
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def decode_png(items: Sequence[str], shape: Sequence[int]) -> np.ndarray:
    """Decode base64 PNG strings into pixel rows, checking each one.

    Colour images are converted to greyscale (ITU-R 601-2 luma, as PIL's ``convert("L")``).

    Args:
        items: base64 strings of PNG files.
        shape: ``(1, H, W)`` the model expects.

    Returns:
        ``(len(items), H*W)`` float32 in ``[0, 1]``.

    Raises:
        ValueError: naming the first bad item, ``png[i]``: not base64, not a PNG file,
            or not ``W x H`` pixels (read from the header before decoding,
            :func:`ddn_ray.guard.check_image_size`).

    Examples:
        >>> rows = np.arange(4, dtype=np.float32).reshape(1, 4) / 255
        >>> bool((decode_png(encode_png(rows, (1, 2, 2)), (1, 2, 2)) == rows).all())
        True
    """
    from PIL import Image, UnidentifiedImageError

    _, h, w = shape
    out = np.empty((len(items), h * w), dtype=np.float32)
    for i, item in enumerate(items):
        try:
            raw = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"png[{i}] is not valid base64") from None
        check_image_size(raw, (w, h), f"png[{i}]")  # from the header: nothing is decoded before this
        try:
            with Image.open(io.BytesIO(raw), formats=["PNG"]) as img:
                pixels = np.asarray(img.convert("L"), dtype=np.float32)
        except (UnidentifiedImageError, OSError):
            raise ValueError(f"png[{i}] is not a readable PNG file") from None
        out[i] = pixels.ravel() / 255.0
    return out
