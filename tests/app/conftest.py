"""The annotation app in a real browser: the real demo data (built once into the cache, honouring
$MEDSEG_AGENT_CACHE), a live server with the classic tool, and headless Debian Chromium."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from app_page import AppPage, chromium_context

from medseg_agent.annotation.library import Library, LibraryVolume
from medseg_agent.data import demo
from medseg_agent.data.readers import open_dataset
from medseg_agent.serving.app import create_app
from medseg_agent.serving.app_api import install_app
from medseg_agent.serving.app_state import AppConfig
from medseg_agent.serving.config import ServerConfig
from medseg_agent.serving.server import BackgroundServer
from medseg_agent.tools.registry import build_tool
from medseg_agent.vocabulary.sample import Sample

TOKEN = "browser-test-token"


@dataclass
class DemoData:
    samples: list[Sample]
    volume: Path
    cells: Path  # folder with the 512x512 16-bit img2d.tif and its mask2d.tif


@dataclass
class RunningApp:
    server: BackgroundServer
    out: Path
    samples: list[Sample]

    @property
    def url(self) -> str:
        return f"{self.server.url}/app/#token={TOKEN}"


@pytest.fixture(scope="session")
def demo_data() -> DemoData:
    root = demo.build_demo_dataset(demo.default_demo_dir())
    templates = demo.fetch_mricron_templates()
    return DemoData(open_dataset(root).load(), templates / "ch2.nii.gz", demo.fetch_stardist_images())


@pytest.fixture(scope="module")
def running_app(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("annotations")
    volume = LibraryVolume(demo_data.volume, "Colin27 T1 brain MRI (NIfTI volume)", "brain", "MRI")
    app = create_app(build_tool("classic"), ServerConfig(token=TOKEN))
    install_app(app, AppConfig(out_dir=out, library=Library(demo_data.samples, [volume])))
    with BackgroundServer(app) as server:
        yield RunningApp(server, out, demo_data.samples)


@pytest.fixture(scope="module")
def browser():
    with chromium_context() as context:
        yield context


@pytest.fixture
def app_page(browser, running_app):
    page = browser.new_page()
    app = AppPage(page).open(running_app.url)
    yield app
    assert app.errors == [], f"errors in the page: {app.errors}"
    page.close()
