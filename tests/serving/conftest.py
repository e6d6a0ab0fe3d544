"""Real uvicorn servers on 127.0.0.1 (free ports) for the serving tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from serving_helpers import TOKEN, blob_sample, start_server

from medseg_agent.serving.server import BackgroundServer
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.tools.registry import build_tool
from medseg_agent.vocabulary.sample import Sample


@pytest.fixture(scope="session")
def make_sample() -> Callable[..., Sample]:
    return blob_sample


@pytest.fixture(scope="module")
def classic_server() -> Iterator[BackgroundServer]:
    """A classic-tool server with a token and small limits, shared by a test module."""
    server = start_server(build_tool("classic"), token=TOKEN, max_body_bytes=2_000_000, max_image_side=1024)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sam2_tool() -> SegmentationTool:
    """Random-weight SAM 2.1 hiera-t at a 256 input: the MedSAM2 architecture, fast enough on CPU."""
    return build_tool("sam2", allow_random_weights=True, image_size=256)
