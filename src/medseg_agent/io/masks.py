"""Mask encodings for records and exports: COCO RLE (exact, compact) and PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a 2-D bool mask as JSON-ready ``{"size": [H, W], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE needs a 2-D mask, got shape {mask.shape}")
    as_bytes = mask.view(np.uint8) if mask.dtype == bool else (mask != 0).view(np.uint8)
    # cv2.transpose is a fast SIMD copy; its transpose view is the column-major layout COCO RLE reads.
    rle = coco_mask.encode(cv2.transpose(np.ascontiguousarray(as_bytes)).T)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_rle`: the exact bool mask."""
    try:
        size, counts = rle["size"], rle["counts"]
    except (KeyError, TypeError):
        raise ValueError(f"not a COCO RLE (needs 'size' and 'counts'): {str(rle)[:80]}") from None
    encoded = {"size": list(size), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(encoded).astype(bool)


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """0/255 single-channel PNG: viewable, and what BiomedParse-style datasets use."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.asarray(mask, dtype=bool).astype(np.uint8) * 255):
        raise OSError(f"could not write mask PNG {path}")


def read_mask_png(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"could not read mask image {path}")
    if image.ndim == 3:
        image = image.max(axis=2)
    return image > 0


def write_image_png(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB (or gray) uint8 image; OpenCV wants BGR."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), data):
        raise OSError(f"could not write image {path}")

