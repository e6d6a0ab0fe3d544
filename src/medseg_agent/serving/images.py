"""Uploaded images: decode with limits checked *before* pixels are allocated, content-address, keep.

An image is identified by the SHA-256 of its RGB bytes and shape, so the same picture uploaded as
PNG by one rollout and as ``.npy`` by another is one image, one embedding. The client computes the
same key locally (:func:`image_key`) to reference an image without uploading it again.

The bytes of each upload are hashed too (:func:`upload_digest`), *before* decoding: the store
remembers which image they decoded to, so the 8 rollouts of a GRPO group that each send the same
file cost one decode, not eight.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from medseg_agent.io.images import EncodedImage, ImageLimits, ImageLoadError, load_image
from medseg_agent.vocabulary.images import as_rgb_uint8

IMAGE_ID_PATTERN = r"^[0-9a-f]{64}$"
_IMAGE_ID = re.compile(IMAGE_ID_PATTERN)


class ImageRejected(ValueError):
    """The bytes are not an image this server accepts; the message says why (answered as 422)."""


def image_key(image: np.ndarray) -> str:
    """Content hash of an RGB uint8 image: SHA-256 over its shape and its bytes."""
    image = as_rgb_uint8(image)
    digest = hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}x3:".encode())
    digest.update(memoryview(image).cast("B"))
    return digest.hexdigest()


def upload_digest(data: bytes | str) -> str:
    """SHA-256 of an upload exactly as sent (file bytes, or the base64 text of an inline image; text
    that is not ASCII is hashed too, and refused later by the base64 decoder)."""
    return hashlib.sha256(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data).hexdigest()


def is_image_id(value: str) -> bool:
    return bool(_IMAGE_ID.match(value))


def decode_image_bytes(data: bytes, max_side: int) -> np.ndarray:
    """Uploaded bytes -> RGB uint8 through the one image loader (same decoders and intensity handling
    as `segment` and the dataset readers), refusing images whose header announces a side above
    ``max_side`` before any pixel is decoded (decompression bombs)."""
    limits = ImageLimits(max_side=max_side, max_pixels=max_side * max_side)
    try:
        return load_image(EncodedImage(data, "upload"), limits=limits)
    except ImageLoadError as exc:
        raise ImageRejected(exc.problem) from None


@dataclass
class _Stored:
    image: np.ndarray
    pins: int = 0
    uploads: set[str] = field(default_factory=set)  # digests of the uploads that decoded to it


class ImageStore:
    """Content-addressed images, bounded by bytes. Images pinned by live sessions are never
    evicted; unpinned ones leave least-recently-used first once the budget is exceeded. Upload
    digests map to the image they decoded to for as long as the image is stored."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, _Stored] = OrderedDict()
        self._uploads: dict[str, str] = {}  # upload digest -> image key
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, image: np.ndarray, key: str | None = None, upload: str | None = None) -> tuple[str, bool]:
        """Store ``image`` (decoded from the upload whose digest is ``upload``, if given); return
        (key, whether it was new)."""
        key = key or image_key(image)
        with self._lock:
            stored = self._items.get(key)
            created = stored is None
            if stored is None:
                stored = self._items[key] = _Stored(image)
                self._bytes += image.nbytes
            else:
                self._items.move_to_end(key)
            if upload is not None:
                stored.uploads.add(upload)
                self._uploads[upload] = key
            if created:
                self._evict(protect=key)
            return key, created

    def find_upload(self, upload: str) -> tuple[str, np.ndarray] | None:
        """(key, image) of a stored image these upload bytes decoded to before, or None."""
        with self._lock:
            key = self._uploads.get(upload)
            stored = None if key is None else self._items.get(key)
            if stored is None:
                return None
            self._items.move_to_end(key)
            return key, stored.image

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
            gone = self._items.pop(key)
            self._bytes -= gone.image.nbytes
            for upload in gone.uploads:
                self._uploads.pop(upload, None)
