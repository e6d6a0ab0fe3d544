"""Click -> updated overlay in the annotation app, measured in a real browser.

Starts ``medseg-agent app``'s server in-process (classic tool by default), opens the page in headless
Debian Chromium (Playwright), uploads the demo's 512x512 fluorescence image (16-bit TIFF from the
``stardist`` wheel), draws a box around a nucleus and sends corrective clicks, as a person would. The
page measures each click with the Performance API, from the mouse release to the animation frame
after the new overlay is drawn (``performance.measure('medseg-click-to-overlay')``); the server's own
time and the tool's decode time come from the answers. Results go to a JSON file.

    .venv/bin/python benchmarks/app_latency.py --clicks 20 --scene nucleus --out runs/benchmarks/app_latency.json
    .venv/bin/python benchmarks/app_latency.py --clicks 20 --scene field --out runs/benchmarks/app_latency_field.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "app"))  # the page driver shared with the browser tests

from app_page import AppPage, chromium_context, error_click  # noqa: E402

from medseg_agent.annotation.library import Library  # noqa: E402
from medseg_agent.data import demo  # noqa: E402
from medseg_agent.serving.app import create_app  # noqa: E402
from medseg_agent.serving.app_api import install_app  # noqa: E402
from medseg_agent.serving.app_state import AppConfig  # noqa: E402
from medseg_agent.serving.server import BackgroundServer  # noqa: E402
from medseg_agent.tools.registry import build_tool  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def targets(labels: np.ndarray, scene: str) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(reference mask, box) pairs: single nuclei (largest first), or 256-px fields of all nuclei."""
    h, w = labels.shape
    if scene == "field":
        out = []
        for y0, x0 in ((128, 128), (0, 0), (256, 256), (0, 256), (256, 0)):
            region = np.zeros_like(labels, dtype=bool)
            region[y0 : y0 + 256, x0 : x0 + 256] = True
            out.append(((labels > 0) & region, (x0, y0, min(x0 + 255, w - 1), min(y0 + 255, h - 1))))
        return out
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    out = []
    for value in values[np.argsort(-counts)]:
        nucleus = labels == value
        ys, xs = np.nonzero(nucleus)
        out.append((nucleus, (max(xs.min() - 4, 0), max(ys.min() - 4, 0), min(xs.max() + 4, w - 1),
                              min(ys.max() + 4, h - 1))))
    return out


def run(clicks: int, tool_name: str, scene: str, out_dir: Path) -> dict:
    import tifffile

    cells = demo.fetch_stardist_images()
    labels = tifffile.imread(cells / "mask2d.tif")
    tool = build_tool(tool_name)
    app = create_app(tool)
    install_app(app, AppConfig(out_dir=out_dir, library=Library(), max_turns=64))
    measures, server_ms, tool_ms = [], [], []
    with BackgroundServer(app) as server, chromium_context() as browser:
        page = AppPage(browser.new_page()).open(f"{server.url}/app/")
        page.page.set_input_files("#file-input", str(cells / "img2d.tif"))
        page.wait("app.image && app.bitmap")
        page.page.fill("#target", "all cell nuclei" if scene == "field" else "cell nucleus")
        done = 0
        for reference, box in targets(labels, scene):  # a new box on the next target every 5 clicks
            page.drag_box(*box)
            for k in range(min(5, clicks - done)):
                mask = page.mask()
                positive = k % 2 == 0
                point = error_click(mask, reference, positive) or error_click(mask, ~mask, True)
                episode = page.click(*point, positive=positive)
                server_ms.append(episode["server_ms"])
                tool_ms.append(episode["turns"][-1]["tool_seconds"] * 1000)
                done += 1
            if done >= clicks:
                break
        measures = page.latencies_ms()
        if page.errors:
            raise RuntimeError(f"errors in the page: {page.errors}")
    return {
        "tool": tool_name,
        "image": "DSB 2018 fluorescence, 512x512, uint16 TIFF (stardist==0.9.2)",
        "scene": scene,
        "clicks": len(measures),
        "click_to_overlay_ms": {"median": statistics.median(measures), "p90": percentile(measures, 90),
                                "max": max(measures), "all": [round(m, 1) for m in measures]},
        "server_ms": {"median": statistics.median(server_ms), "p90": percentile(server_ms, 90)},
        "tool_decode_ms": {"median": statistics.median(tool_ms), "p90": percentile(tool_ms, 90)},
        "machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0], "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=20, help="corrective clicks to time")
    parser.add_argument("--tool", default="classic", help="segmentation tool of the server")
    parser.add_argument("--scene", choices=("nucleus", "field"), default="nucleus",
                        help="nucleus: a box around one nucleus (about 30 px); field: a 256-px box, all nuclei in it")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / "app_latency.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = run(args.clicks, args.tool, args.scene, args.out.parent / "app_latency_sessions")
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    c, s, t = result["click_to_overlay_ms"], result["server_ms"], result["tool_decode_ms"]
    print(f"{result['clicks']} clicks, {args.tool} tool, 512x512 image, {args.scene} boxes, "
          f"load {result['machine']['load_1min']:.1f}")
    print(f"click -> overlay (browser, Performance API): median {c['median']:.0f} ms, p90 {c['p90']:.0f} ms, "
          f"max {c['max']:.0f} ms")
    print(f"server time per click: median {s['median']:.0f} ms; tool decode: median {t['median']:.0f} ms")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
