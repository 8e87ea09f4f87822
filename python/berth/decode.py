"""Turning raw ``BYTES`` inputs into arrays, for ``preprocess()``.

A ``BYTES`` tensor reaches a model as a NumPy object array of ``bytes``.
These helpers decode every element of such an array and raise
:class:`berth.InvalidInput` (the client gets 400) naming the input and the
element when one cannot be decoded:

- :func:`texts`: UTF-8 text -> a list of ``str``.
- :func:`json_values`: JSON documents -> a list of Python values.
- :func:`images`: JPEG, PNG (anything Pillow reads) -> ``uint8`` array
  ``[N, height, width, channels]``, each image converted to one mode and
  resized to one size. An element is the encoded image itself (the binary
  tensor extension carries raw bytes) or its base64 text, optionally as a
  ``data:image/...;base64,`` URL (JSON can only carry text). Needs Pillow
  (``pip install 'berth[images]'``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import numpy as np

from .errors import InvalidInput, MissingExtraError

__all__ = ["images", "json_values", "texts"]

#: Largest image, in pixels, :func:`images` decodes (a decompression-bomb
#: guard; Pillow's own limit is larger).
MAX_IMAGE_PIXELS = 64_000_000


def _elements(array: Any, name: str) -> list[Any]:
    values = np.asarray(array, dtype=object).reshape(-1)
    for i, value in enumerate(values):
        if not isinstance(value, (bytes, bytearray, memoryview, str)):
            raise InvalidInput(
                f"input {name!r} element {i} is a {type(value).__name__}; send BYTES"
            )
    return list(values)


def _raw(value: bytes | bytearray | memoryview | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


#: Leading bytes of the image formats clients usually send.
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def _image_bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    """The encoded image in an element: raw bytes, base64 text, or a
    base64 data URL."""
    raw = _raw(value)
    if raw.startswith(_IMAGE_MAGIC):
        return raw
    text = raw.strip()
    if text.startswith(b"data:"):
        _, sep, text = text.partition(b"base64,")
        if not sep:
            return raw
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return raw  # not base64: let Pillow say what it is not


def texts(array: Any, name: str = "text") -> list[str]:
    """Every element of a ``BYTES`` array as UTF-8 text (flattened)."""
    out = []
    for i, value in enumerate(_elements(array, name)):
        if isinstance(value, str):
            out.append(value)
            continue
        try:
            out.append(bytes(value).decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"input {name!r} element {i} is not UTF-8 text") from None
    return out


def json_values(array: Any, name: str = "json") -> list[Any]:
    """Every element of a ``BYTES`` array parsed as JSON (flattened)."""
    out = []
    for i, value in enumerate(_elements(array, name)):
        try:
            out.append(json.loads(_raw(value)))
        except ValueError as e:
            raise InvalidInput(f"input {name!r} element {i} is not JSON: {e}") from None
    return out


def images(
    array: Any,
    size: tuple[int, int] | None = None,
    mode: str = "RGB",
    name: str = "image",
) -> np.ndarray:
    """Decodes encoded images (one per element) into ``uint8``
    ``[N, height, width, channels]``. ``size`` is ``(height, width)``; without
    it every image must already have the same size."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise MissingExtraError("image", "images", f"cannot import PIL: {e}") from e

    decoded = []
    for i, value in enumerate(_elements(array, name)):
        try:
            with Image.open(io.BytesIO(_image_bytes(value))) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise InvalidInput(
                        f"input {name!r} element {i} is {img.width}x{img.height} pixels; "
                        f"the limit is {MAX_IMAGE_PIXELS}"
                    )
                img = img.convert(mode)
                if size is not None and (img.height, img.width) != tuple(size):
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise InvalidInput(
                f"input {name!r} element {i} is not an image Pillow can read (JPEG, PNG, ...): {e}"
            ) from None
        decoded.append(pixels if pixels.ndim == 3 else pixels[:, :, None])
    if not decoded:
        channels = len(mode) if mode != "I;16" else 1
        h, w = size if size is not None else (0, 0)
        return np.zeros((0, h, w, channels), dtype=np.uint8)
    shapes = {a.shape for a in decoded}
    if len(shapes) > 1:
        raise InvalidInput(
            f"input {name!r}: images of different sizes {sorted(shapes)}; send one size "
            "or let the model resize them"
        )
    return np.stack(decoded)
