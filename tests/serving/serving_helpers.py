"""Helpers shared by the serving tests (a uniquely named module: ``conftest`` is not importable
reliably when several test folders have one)."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

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


#: Where Ray's workers take their ports (its default ``max_worker_port`` is 19999).
RAY_WORKER_PORTS_END = 20000


def free_port() -> int:
    """A free local TCP port for a server a test starts, taken below the kernel's ephemeral range.
    A port from ``bind(("", 0))`` is an ephemeral one, and any outgoing connection may take it as its
    local port before the server binds it: Ray opens hundreds while a cluster starts, and its Serve
    proxy then failed with "Failed to bind to address" (one run in many)."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    ephemeral_start = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    candidates = list(range(RAY_WORKER_PORTS_END, ephemeral_start))
    random.shuffle(candidates)
    for port in candidates[:500]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {RAY_WORKER_PORTS_END} and {ephemeral_start}")


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
