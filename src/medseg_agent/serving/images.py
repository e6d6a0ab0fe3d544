"""Uploaded images: decode with limits checked *before* pixels are allocated, content-address, keep.

An image is identified by the SHA-256 of its RGB bytes and shape, so the same picture uploaded as
PNG by one rollout and as ``.npy`` by another is one image, one embedding. The client computes the
same key locally (:func:`image_key`) to reference an image without uploading it again.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.images import as_rgb_uint8

IMAGE_ID_PATTERN = r"^[0-9a-f]{64}$"
_IMAGE_ID = re.compile(IMAGE_ID_PATTERN)
_NPY_MAGIC = b"\x93NUMPY"
_PIL_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"}


class ImageRejected(ValueError):
    """The bytes are not an image this server accepts; the message says why (answered as 422)."""


def image_key(image: np.ndarray) -> str:
    """Content hash of an RGB uint8 image: SHA-256 over its shape and its bytes."""
    image = as_rgb_uint8(image)
    digest = hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}x3:".encode())
    digest.update(memoryview(image).cast("B"))
    return digest.hexdigest()


def is_image_id(value: str) -> bool:
    return bool(_IMAGE_ID.match(value))


def decode_image_bytes(data: bytes, max_side: int) -> np.ndarray:
    """PNG/JPEG/TIFF/BMP (8-bit) or ``.npy`` (uint8) bytes -> RGB uint8, refusing images whose
    header announces a side above ``max_side`` before any pixel is decoded (decompression bombs)."""
    if not data:
        raise ImageRejected("the image is empty (0 bytes)")
    image = _decode_npy(data, max_side) if data.startswith(_NPY_MAGIC) else _decode_pil(data, max_side)
    try:
        return as_rgb_uint8(image)
    except ToolError as exc:
        raise ImageRejected(str(exc)) from None


def _check_side(height: int, width: int, max_side: int) -> None:
    if height > max_side or width > max_side:
        raise ImageRejected(f"image is {height}x{width}; this server accepts at most {max_side} pixels per side")
    if height < 2 or width < 2:
        raise ImageRejected(f"image is {height}x{width}; at least 2x2 pixels are needed")


def _decode_pil(data: bytes, max_side: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            _check_side(height, width, max_side)
            if img.mode not in _PIL_MODES:
                raise ImageRejected(
                    f"image mode {img.mode!r} is not 8-bit; window/normalise medical intensities to "
                    "8-bit (PNG L or RGB) before uploading"
                )
            return np.array(img.convert("RGB"))  # a writable copy: torch warns on read-only arrays
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageRejected(f"not a readable image (PNG, JPEG, TIFF, BMP or .npy): {exc}") from None


def _decode_npy(data: bytes, max_side: int) -> np.ndarray:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except (ValueError, OSError, SyntaxError) as exc:
        raise ImageRejected(f"not a valid .npy array: {exc}") from None
    if dtype != np.uint8:
        raise ImageRejected(f".npy image must be uint8, got {dtype}")
    if len(shape) not in (2, 3):
        raise ImageRejected(f".npy image must have shape (H, W) or (H, W, C), got {shape}")
    _check_side(int(shape[0]), int(shape[1]), max_side)
    if len(shape) == 3 and shape[2] not in (1, 3, 4):
        raise ImageRejected(f".npy image must have 1, 3 or 4 channels, got shape {shape}")
    expected = int(np.prod(shape))
    body = data[stream.tell() :]
    if len(body) != expected:
        raise ImageRejected(f".npy array of shape {shape} needs {expected} bytes of data, got {len(body)}")
    array = np.frombuffer(body, dtype=np.uint8).reshape(shape, order="F" if fortran else "C")
    return np.array(array, order="C")  # a writable copy


@dataclass
class _Stored:
    image: np.ndarray
    pins: int = 0


class ImageStore:
    """Content-addressed images, bounded by bytes. Images pinned by live sessions are never
    evicted; unpinned ones leave least-recently-used first once the budget is exceeded."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, _Stored] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, image: np.ndarray, key: str | None = None) -> tuple[str, bool]:
        """Store ``image``; return (key, whether it was new)."""
        key = key or image_key(image)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return key, False
            self._items[key] = _Stored(image)
            self._bytes += image.nbytes
            self._evict(protect=key)
            return key, True

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            stored = self._items.get(key)
            if stored is None:
                return None
            self._items.move_to_end(key)
            return stored.image

    def pin(self, key: str) -> np.ndarray | None:
        """Mark ``key`` as used by one more session (so it stays); None if it is not stored."""
        with self._lock:
            stored = self._items.get(key)
            if stored is None:
                return None
            stored.pins += 1
            self._items.move_to_end(key)
            return stored.image

    def unpin(self, key: str) -> None:
        with self._lock:
            stored = self._items.get(key)
            if stored is not None and stored.pins > 0:
                stored.pins -= 1
                self._evict()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"images": len(self._items), "bytes": self._bytes, "max_bytes": self.max_bytes}

    def _evict(self, protect: str | None = None) -> None:
        """Drop unpinned images, oldest first, until within budget; ``protect`` (the image just
        uploaded) stays even when it alone exceeds the budget, so its uploader can use it."""
        if self._bytes <= self.max_bytes:
            return
        for key in [k for k, v in self._items.items() if v.pins == 0 and k != protect]:
            if self._bytes <= self.max_bytes:
                break
            self._bytes -= self._items.pop(key).image.nbytes
