"""Driving the annotation page in headless Chromium (Debian's ``chromium``) with Playwright, as a
person would: clicks and drags in image coordinates, waiting for the page's own state.

Used by the browser tests and by ``benchmarks/app_latency.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from medseg_agent.io.masks import decode_rle

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's Chromium (Playwright's own browser download is not used)."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found is None:
        raise RuntimeError(
            "the browser tests need Debian's chromium: run `make browser` (as root: apt-get install -y chromium)"
        )
    return found


@contextmanager
def chromium_context(width: int = 1400, height: int = 860) -> Iterator[Any]:
    """A fresh headless Chromium profile (its own user-data dir), closed and removed afterwards."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="medseg-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=chromium_path(),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class AppPage:
    """One tab of the annotation app."""

    def __init__(self, page: Any, timeout_ms: float = 60_000) -> None:
        self.page = page
        self.timeout_ms = timeout_ms
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, url: str) -> AppPage:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]", timeout=self.timeout_ms)
        return self

    def wait(self, expression: str) -> None:
        """Wait until a JavaScript expression over ``app`` (the page's state) is true."""
        self.page.wait_for_function(f"(() => {{ const app = window.medsegApp; return {expression}; }})()",
                                    timeout=self.timeout_ms)

    def state(self, expression: str) -> Any:
        return self.page.evaluate(f"(() => {{ const app = window.medsegApp; return {expression}; }})()")

    def open_library(self, name: str) -> dict:
        before = self.state("app.image && app.image.image_id")
        self.page.locator("#library li", has_text=name).first.click()
        self.wait(f"app.image && app.image.image_id !== {before!r} && app.bitmap"
                  if before else "app.image && app.bitmap")
        return self.state("app.image")

    def episode(self) -> dict:
        return self.state("app.episode")

    def turns(self) -> int:
        return int(self.state("app.episode ? app.episode.turns.length : 0"))

    def mask(self) -> np.ndarray:
        return decode_rle(self.state("app.episode.mask"))

    def to_screen(self, x: float, y: float) -> tuple[float, float]:
        box = self.page.locator("#canvas").bounding_box()
        view = self.state("app.view")
        return box["x"] + view["x"] + x * view["scale"], box["y"] + view["y"] + y * view["scale"]

    def drag_box(self, x1: float, y1: float, x2: float, y2: float) -> dict:
        """Drag a box in image pixels and wait for the server's answer."""
        count = self.turns()
        sx1, sy1 = self.to_screen(x1, y1)
        sx2, sy2 = self.to_screen(x2, y2)
        mouse = self.page.mouse
        mouse.move(sx1, sy1)
        mouse.down()
        mouse.move((sx1 + sx2) / 2, (sy1 + sy2) / 2, steps=5)
        mouse.move(sx2, sy2, steps=5)
        mouse.up()
        self.wait(f"app.episode && app.episode.turns.length === {count + 1} && !app.pending")
        return self.episode()

    def click(self, x: float, y: float, positive: bool = True) -> dict:
        """A left (positive) or right (negative) click at image pixel (x, y)."""
        count = self.turns()
        sx, sy = self.to_screen(x, y)
        self.page.mouse.click(sx, sy, button="left" if positive else "right")
        self.wait(f"app.episode && app.episode.turns.length === {count + 1} && !app.pending")
        return self.episode()

    def press(self, key: str, expression: str) -> dict:
        self.page.locator("#viewport").focus()
        self.page.keyboard.press(key)
        self.wait(expression)
        return self.episode()

    def latencies_ms(self) -> list[float]:
        """Every click -> updated overlay measure the page made (Performance API)."""
        self.page.wait_for_timeout(100)  # the last measure is taken on the next animation frame
        return self.state("performance.getEntriesByName('medseg-click-to-overlay').map(e => e.duration)")


def error_click(mask: np.ndarray, reference: np.ndarray, positive: bool) -> tuple[float, float] | None:
    """The interior-most pixel of the missed (positive) or leaked (negative) region, as (x, y)."""
    from scipy import ndimage as ndi

    region = reference & ~mask if positive else mask & ~reference
    if not region.any():
        return None
    depth = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return float(x), float(y)
