"""Helpers shared by the serving tests (a uniquely named module: ``conftest`` is not importable
reliably when several test folders have one)."""

from __future__ import annotations

import numpy as np

from medseg_agent.serving.app import create_app
from medseg_agent.serving.config import ServerConfig
from medseg_agent.serving.server import BackgroundServer
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.sample import Sample

TOKEN = "test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def blob_sample(h: int = 96, w: int = 128, centre: tuple[int, int] = (64, 48), radius: int = 22, seed: int = 0,
                ) -> Sample:
    """A bright noisy ellipse on a darker background; every seed gives a different image (hash)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    mask = ((xx - centre[0]) / (radius * 1.2)) ** 2 + ((yy - centre[1]) / radius) ** 2 <= 1.0
    gray = np.clip(60 + 110 * mask + rng.normal(0, 12, (h, w)), 0, 255).astype(np.uint8)
    image = np.stack([gray, gray, gray], axis=2)
    return Sample(image=image, mask=mask, target="bright blob", modality="CT", dataset="synthetic",
                  sample_id=f"blob-{seed}")


def start_server(tool: SegmentationTool, **config: object) -> BackgroundServer:
    return BackgroundServer(create_app(tool, ServerConfig(**config))).start()  # type: ignore[arg-type]
