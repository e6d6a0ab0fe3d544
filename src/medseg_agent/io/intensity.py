"""Turning raw medical intensities into display-ready RGB uint8 images.

CT is shown through a window (width/level in Hounsfield units, presets below); every other modality
(MRI, microscopy, 16-bit ultrasound, ...) is clipped to its 0.5–99.5 percentiles and stretched to
0–255. :func:`to_display_rgb` picks between the two from the modality.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

#: Standard CT windows as (width, level) in HU.
CT_WINDOWS: Mapping[str, tuple[float, float]] = {
    "abdomen": (400.0, 40.0),
    "soft_tissue": (350.0, 50.0),
    "mediastinum": (350.0, 50.0),
    "liver": (150.0, 30.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
    "subdural": (200.0, 75.0),
    "stroke": (40.0, 40.0),
    "temporal_bone": (2800.0, 600.0),
}

DEFAULT_CT_WINDOW = "abdomen"
DEFAULT_PERCENTILES = (0.5, 99.5)

WindowSpec = str | tuple[float, float]


def _preset_key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def resolve_window(window: WindowSpec) -> tuple[float, float]:
    """``"lung"`` / ``"soft-tissue"`` / ``"W1500L-600"`` / ``(1500, -600)`` -> (width, level)."""
    if isinstance(window, str):
        key = _preset_key(window)
        if key in CT_WINDOWS:
            return CT_WINDOWS[key]
        m = re.fullmatch(r"\s*W\s*(-?\d+(?:\.\d*)?)\s*[/,]?\s*L\s*(-?\d+(?:\.\d*)?)\s*", window, re.IGNORECASE)
        if m:
            return _check_window(float(m.group(1)), float(m.group(2)))
        raise ValueError(f"unknown CT window {window!r}; presets: {', '.join(sorted(CT_WINDOWS))}")
    try:
        width, level = window
        width, level = float(width), float(level)
    except (TypeError, ValueError):  # a number, a bool, three values, words: a hand-written config's slip
        raise ValueError(
            f"a CT window is a preset name, 'W<width>L<level>' or a (width, level) pair, not {window!r}"
        ) from None
    return _check_window(width, level)


def _check_window(width: float, level: float) -> tuple[float, float]:
    if not np.isfinite(width) or not np.isfinite(level) or width <= 0:
        raise ValueError(f"invalid CT window width={width} level={level}")
    return width, level


def apply_window(array: np.ndarray, window: WindowSpec = DEFAULT_CT_WINDOW) -> np.ndarray:
    """Map ``level - width/2 .. level + width/2`` linearly to 0..255 (uint8, same shape)."""
    width, level = resolve_window(window)
    lo = level - width / 2.0
    scaled = (np.asarray(array, dtype=np.float64) - lo) * (255.0 / width)
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).round().astype(np.uint8)


def percentile_range(
    array: np.ndarray,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    *,
    nonzero: bool = False,
) -> tuple[float, float]:
    """The intensity range to stretch: percentiles of finite values (optionally of non-zero ones)."""
    values = np.asarray(array, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if nonzero:
        nz = values[values != 0]
        values = nz if nz.size else values
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, percentiles)
    return float(lo), float(hi)


def rescale_to_uint8(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip to ``[lo, hi]`` and stretch to 0..255; a flat range maps to 0 (or 255 above it)."""
    a = np.nan_to_num(np.asarray(array, dtype=np.float64), nan=lo)
    if hi <= lo:
        return np.where(a > lo, 255, 0).astype(np.uint8)
    return np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


def percentile_normalize(
    array: np.ndarray,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    *,
    nonzero: bool = False,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Percentile clip + stretch to uint8.

    ``reference`` (e.g. the whole volume) supplies the percentiles so that every slice of a volume
    shares one intensity mapping.
    """
    lo, hi = percentile_range(array if reference is None else reference, percentiles, nonzero=nonzero)
    return rescale_to_uint8(array, lo, hi)


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 (contiguous copy)."""
    g = np.asarray(gray)
    if g.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {g.shape}")
    if g.dtype != np.uint8:
        g = to_uint8(g)
    return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Any numeric image to uint8 without a modality: bool -> 0/255, [0,1] floats -> x255,
    uint8 unchanged, everything else percentile-normalised."""
    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        finite = a[np.isfinite(a)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            return rescale_to_uint8(a, 0.0, 1.0)
    if np.issubdtype(a.dtype, np.integer) and a.size and a.min() >= 0 and a.max() <= 255:
        return a.astype(np.uint8)
    return percentile_normalize(a)


def ensure_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of any dtype -> contiguous (H, W, 3) uint8.

    Alpha is dropped; non-uint8 colour images are scaled jointly over their channels.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return gray_to_rgb(to_uint8(a))
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = a[:, :, :3]
        return np.ascontiguousarray(to_uint8(rgb))
    raise ValueError(f"cannot make an RGB image from an array of shape {a.shape}")


def is_ct(modality: str | None) -> bool:
    return bool(modality) and modality.strip().upper().split("-")[0] == "CT"


def to_display_rgb(
    array: np.ndarray,
    modality: str | None = None,
    *,
    window: WindowSpec | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Raw 2-D intensities -> RGB uint8: CT through ``window`` (default abdomen), anything else by
    percentiles (of ``reference`` when given). An explicit ``window`` is honoured for any modality.
    Colour / already-uint8 images are passed through :func:`ensure_rgb_uint8`."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return ensure_rgb_uint8(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if window is not None or is_ct(modality):
        return gray_to_rgb(apply_window(a, window if window is not None else DEFAULT_CT_WINDOW))
    if a.dtype == np.uint8 and reference is None:
        return gray_to_rgb(a)
    return gray_to_rgb(percentile_normalize(a, percentiles, reference=reference))
