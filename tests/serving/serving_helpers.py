"""Helpers shared by the serving tests (a uniquely named module: ``conftest`` is not importable
reliably when several test folders have one)."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Poll ``url``/health until it answers; fail with the process's output if it exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.stdout.read() if process.stdout else "the server exited"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)
