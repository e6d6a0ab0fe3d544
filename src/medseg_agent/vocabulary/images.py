"""The one image form every tool, the environment and replays take: contiguous RGB uint8."""

from __future__ import annotations

import numpy as np

from medseg_agent.vocabulary.errors import ToolError


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate and normalise an image to contiguous (H, W, 3) uint8, the form every tool takes."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ToolError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ToolError(f"image is too small: {image.shape[:2]}")
    if image.dtype != np.uint8:
        raise ToolError(f"expected a uint8 image (window/normalise medical intensities first), got {image.dtype}")
    return np.ascontiguousarray(image)
