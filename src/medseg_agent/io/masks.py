"""Mask encodings for records and exports: COCO RLE (exact, compact) and PNG files."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a 2-D bool mask as JSON-ready ``{"size": [H, W], "counts": str}``.

    Exactly what ``pycocotools.mask.encode`` gives, about 2x faster at 1024x1024: the run boundaries
    are found with vectorised comparisons (see :func:`_run_boundaries`) and only the short list of
    run lengths goes through pycocotools' string compression.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE needs a 2-D mask, got shape {mask.shape}")
    if mask.dtype != bool:
        mask = mask != 0
    height, width = mask.shape
    return rle_from_boundaries(_run_boundaries(mask), height, width)


def encode_rle_batch(masks: Any) -> list[dict[str, Any]]:
    """COCO RLE of each mask of a (B, H, W) batch: a numpy array or a torch tensor on any device.

    On an accelerator the run boundaries of the whole batch are found there, in one pass, and only
    their positions cross to the host (a few kB instead of B x H x W bytes), with one synchronisation
    for the batch. CPU tensors and arrays take the numpy path of :func:`encode_rle`.
    """
    if getattr(masks, "device", None) is not None and getattr(masks.device, "type", "cpu") != "cpu":
        return _encode_rle_batch_torch(masks)
    if hasattr(masks, "numpy"):  # a CPU tensor: no copy
        masks = masks.numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"a batch of masks must have shape (B, H, W), got {masks.shape}")
    return [encode_rle(mask) for mask in masks]


def rle_area(rle: dict[str, Any]) -> int:
    """Pixels in an RLE mask, from its run lengths (no decoding)."""
    counts = rle["counts"]
    encoded = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return int(coco_mask.area(encoded))


def rle_from_boundaries(boundaries: np.ndarray, height: int, width: int) -> dict[str, Any]:
    """COCO RLE from the sorted column-major positions where the value changes (position 0 when
    the first pixel is set): run lengths are their differences, zeros first."""
    edges = np.empty(len(boundaries) + 2, np.int64)
    edges[0], edges[-1] = 0, height * width
    edges[1:-1] = boundaries
    counts = np.diff(edges)
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _run_boundaries(mask: np.ndarray) -> np.ndarray:
    """Sorted column-major positions ``c * H + r`` where pixel (r, c) differs from the pixel before
    it in column-major order (position 0 if the first pixel is set: COCO counts start with zeros).

    Within a column the previous pixel is the one above; at the top of a column it is the bottom of
    the column before. Both comparisons run on the row-major mask, so nothing is transposed.
    """
    height, width = mask.shape
    down = np.flatnonzero(np.not_equal(mask[1:], mask[:-1], out=_scratch((height - 1, width))))  # as r * W + c
    rows, cols = np.divmod(down, width)
    wrap = np.flatnonzero(mask[0, 1:] != mask[-1, :-1]) + 1  # top of column c vs bottom of c - 1
    parts = [cols * height + rows + 1, wrap * height]
    if mask[0, 0]:
        parts.append(np.zeros(1, np.int64))
    return np.sort(np.concatenate(parts))


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, int]) -> np.ndarray:
    """A reusable bool buffer per thread: a fresh 1 MB temporary costs more in page faults than the
    comparison written into it."""
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.size < shape[0] * shape[1]:
        buffer = _SCRATCH.buffer = np.empty(shape[0] * shape[1], bool)
    return buffer[: shape[0] * shape[1]].reshape(shape)


def _encode_rle_batch_torch(masks: Any) -> list[dict[str, Any]]:
    import torch

    if masks.ndim != 3:
        raise ValueError(f"a batch of masks must have shape (B, H, W), got {tuple(masks.shape)}")
    batch, height, width = (int(v) for v in masks.shape)
    if batch == 0:
        return []
    flat = masks.bool().transpose(1, 2).reshape(batch, height * width)  # column-major, on the device
    change = torch.empty_like(flat)
    change[:, 0] = flat[:, 0]
    torch.ne(flat[:, 1:], flat[:, :-1], out=change[:, 1:])
    rows, positions = change.nonzero(as_tuple=True)  # row-major order: sorted by row, then position
    rows, positions = rows.cpu().numpy(), positions.cpu().numpy()
    splits = np.searchsorted(rows, np.arange(1, batch))
    return [rle_from_boundaries(part, height, width) for part in np.split(positions, splits)]


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

