"""Fluorescence nuclei samples: crops centred on single DSB 2018 nuclei (target: the nucleus at the
image centre) and the densest fields (target: all nuclei), upscaled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.io.intensity import gray_to_rgb, percentile_range, rescale_to_uint8

from .reporting import DemoBuildError

NUCLEUS_CROP = 96  # px of the original 512x512 image, upscaled x2
FIELD_CROP = 128
UPSCALE = 2
N_CENTRAL_NUCLEI = 6
N_FIELDS = 3
MICRO_MODALITY_TOKEN = "Microscopy"
MICRO_SITE = "fluorescence"
CENTRAL_NUCLEUS = "nucleus at the image centre"
ALL_NUCLEI = "all cell nuclei"


def _resize(a: np.ndarray, nearest: bool) -> np.ndarray:
    import cv2

    h, w = a.shape[:2]
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    src = a.astype(np.uint8)
    return cv2.resize(src, (w * UPSCALE, h * UPSCALE), interpolation=interp)


def _pick_apart(ranked: list[tuple[int, int, int]], size: int, n: int) -> list[tuple[int, int, int]]:
    """The first ``n`` of ``ranked`` ``(key, y0, x0)`` whose ``size`` crops overlap none picked before."""
    picked: list[tuple[int, int, int]] = []
    for key, y0, x0 in ranked:
        if all(max(abs(y0 - y), abs(x0 - x)) >= size for _, y, x in picked):
            picked.append((key, y0, x0))
        if len(picked) == n:
            break
    return picked


def _crop_entry(name: str, crop: np.ndarray, mask: np.ndarray, target: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A demo entry from a gray crop and its mask, both upscaled (bilinear image, nearest mask)."""
    return {
        "image_id": f"{name}_{MICRO_MODALITY_TOKEN}_{MICRO_SITE}",
        "image": gray_to_rgb(_resize(crop, nearest=False)),
        "masks": {target: _resize(mask, nearest=True).astype(bool)},
        "modality": "Microscopy",
        "modality_token": MICRO_MODALITY_TOKEN,
        "site": MICRO_SITE,
        "source": "DSB 2018 nuclei (PyPI stardist 0.9.2)",
        "spacing": None,
        "meta": meta,
    }


def nuclei_images(src: Path) -> list[dict[str, Any]]:
    """Single-nucleus crops then all-nuclei fields, as entries shaped like
    :func:`..brain_mri.brain_mri_images`'s, from the stardist data folder ``src``."""
    import tifffile
    from skimage.measure import regionprops

    raw = tifffile.imread(str(src / "img2d.tif"))
    inst = tifffile.imread(str(src / "mask2d.tif")).astype(np.int32)
    if raw.ndim != 2 or raw.shape != inst.shape:
        raise DemoBuildError(f"unexpected stardist data shapes {raw.shape} / {inst.shape}")
    lo, hi = percentile_range(raw)
    gray = rescale_to_uint8(raw, lo, hi)
    h, w = raw.shape
    out = []
    half = NUCLEUS_CROP // 2
    margin = 6
    candidates = []
    for p in regionprops(inst):
        cy, cx = (int(round(c)) for c in p.centroid)
        y0, x0 = cy - half, cx - half
        r0, c0, r1, c1 = p.bbox
        if not (y0 >= 0 and x0 >= 0 and y0 + NUCLEUS_CROP <= h and x0 + NUCLEUS_CROP <= w):
            continue
        if inst[cy, cx] != p.label or p.area < 300 or p.solidity < 0.93:
            continue
        if r0 - y0 < margin or c0 - x0 < margin or y0 + NUCLEUS_CROP - r1 < margin or x0 + NUCLEUS_CROP - c1 < margin:
            continue
        candidates.append((-int(p.area), int(p.label), y0, x0))
    chosen = _pick_apart([(label, y0, x0) for _, label, y0, x0 in sorted(candidates)], NUCLEUS_CROP, N_CENTRAL_NUCLEI)
    for label, y0, x0 in chosen:
        crop = gray[y0 : y0 + NUCLEUS_CROP, x0 : x0 + NUCLEUS_CROP]
        mask = inst[y0 : y0 + NUCLEUS_CROP, x0 : x0 + NUCLEUS_CROP] == label
        meta = {"crop_yx": [y0, x0], "crop_size": NUCLEUS_CROP, "upscale": UPSCALE, "instance": label}
        out.append(_crop_entry(f"dsb2018_nucleus{label:03d}_y{y0:03d}x{x0:03d}", crop, mask, CENTRAL_NUCLEUS, meta))
    # Fields with the most nucleus pixels, on a 32 px grid, not overlapping.
    fg = inst > 0
    scored = []
    for y0 in range(0, h - FIELD_CROP + 1, 32):
        for x0 in range(0, w - FIELD_CROP + 1, 32):
            scored.append((-int(fg[y0 : y0 + FIELD_CROP, x0 : x0 + FIELD_CROP].sum()), y0, x0))
    for _, y0, x0 in _pick_apart(sorted(scored), FIELD_CROP, N_FIELDS):
        crop = gray[y0 : y0 + FIELD_CROP, x0 : x0 + FIELD_CROP]
        mask = fg[y0 : y0 + FIELD_CROP, x0 : x0 + FIELD_CROP]
        meta = {"crop_yx": [y0, x0], "crop_size": FIELD_CROP, "upscale": UPSCALE}
        out.append(_crop_entry(f"dsb2018_field_y{y0:03d}x{x0:03d}", crop, mask, ALL_NUCLEI, meta))
    return out
