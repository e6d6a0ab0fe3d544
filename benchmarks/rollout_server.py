"""The GRPO rollout workload against the tool server, side by side with the reference behaviour.

Workload: ``--images`` distinct images x ``--sessions`` concurrent sessions per image (the rollouts
of one GRPO group) x ``--actions`` actions per session (a box from the ground truth with a per-
rollout jitter, then corrective clicks at the interior-most point of the larger error region, RITM's
rule). All sessions run at once, each sending its actions one after another over HTTP, as a trainer's
rollout workers do. Images are synthetic organ-like scans of ``--image-size`` pixels.

Sides (each in its own process, model built with the same seed, so the same random weights):

* ``server``: ``medseg_agent.serving`` (shared embedding cache, single-flight encode, batched decodes).
* ``reference``: a minimal re-implementation of the reference system's tool server, written here:
  one global predictor behind a lock; every add_bbox / add_point runs ``set_image`` (the image
  encoder) on the session's image, then decodes. Same session API, same prompt semantics.
* ``ideal``: no server, no concurrency: each image encoded once, then every action decoded one by
  one in-process (the floor: one encode per distinct image + one decode per action).

Tool: ``sam2`` from the MedSAM2 config (``configs/sam2.1/sam2.1_hiera_t.yaml``) with random weights
(``--tool classic`` for a quick smoke run). Reported per side: wall time, actions/s, encodes, cache
hit rate, p50/p95 latency per action, peak memory (peak RSS of the process that runs the model).
Each side's result is written to ``--out`` (JSON, atomically) as soon as it finishes; a rerun with
the same settings skips finished sides (``--fresh`` redoes them).

    .venv/bin/python benchmarks/rollout_server.py                        # the full run (long on CPU)
    .venv/bin/python benchmarks/rollout_server.py --images 2 --sessions 4 --actions 3 --image-size 256
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from medseg_agent.io.atomic import atomic_write_json
from medseg_agent.io.masks import decode_rle, encode_rle
from medseg_agent.policies.clicks import next_click
from medseg_agent.runs.parallel import progress_bar
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.prompts import PromptState

SIDES = ("server", "ideal", "reference")
DEFAULT_OUT = Path("runs/benchmarks/rollout_server.json")
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


# -- workload ----------------------------------------------------------------------------------------
def make_image(index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like slice: smooth textured body, a few organs of different brightness; the target is
    organ 0. Deterministic in ``index``."""
    rng = np.random.default_rng(1000 + index)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    body = ((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.4) ** 2 <= 1.0
    image = np.where(body, 70.0, 10.0) + cv2.GaussianBlur(rng.normal(0, 25, (size, size)).astype(np.float32),
                                                          (0, 0), size / 100)
    target = np.zeros((size, size), bool)
    for organ in range(3):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        rx, ry = rng.uniform(0.06, 0.14, 2)
        angle = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        inside = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        image[inside] += rng.uniform(40, 110) * (1 if organ != 1 else -0.5)
        if organ == 0:
            target = inside & body
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return np.stack([image] * 3, axis=2), target


def jittered_box(mask: np.ndarray, seed: int) -> list[float]:
    """The ground-truth box, each side moved by up to 10 % of its size (a different draw per rollout)."""
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
    rng = np.random.default_rng(seed)
    w, h = x2 - x1 + 1, y2 - y1 + 1
    dx1, dx2 = rng.uniform(-0.1, 0.1, 2) * w
    dy1, dy2 = rng.uniform(-0.1, 0.1, 2) * h
    size_y, size_x = mask.shape
    return [float(np.clip(x1 + dx1, 0, size_x - 1)), float(np.clip(y1 + dy1, 0, size_y - 1)),
            float(np.clip(x2 + dx2, 0, size_x - 1)), float(np.clip(y2 + dy2, 0, size_y - 1))]


def next_point(mask: np.ndarray, gt: np.ndarray, clicked: list[tuple[float, float]]) -> tuple[list[float], str]:
    click = next_click(mask, gt, clicked)
    if click is None:  # nothing left to correct: click the target's centre again
        ys, xs = np.nonzero(gt)
        return [float(xs.mean()), float(ys.mean())], "positive"
    clicked.append((click.x, click.y))
    return [float(click.x), float(click.y)], "positive" if click.positive else "negative"


# -- model -------------------------------------------------------------------------------------------
def build_model(args: argparse.Namespace) -> SegmentationTool:
    """The same random weights in every process: seed, then build."""
    import torch

    from medseg_agent.tools.registry import build_tool

    torch.manual_seed(0)
    if args.tool == "sam2":
        options: dict[str, Any] = {"allow_random_weights": True, "config": SAM2_CONFIG}
        if args.model_size:
            options["image_size"] = args.model_size
        return build_tool("sam2", **options)
    return build_tool(args.tool)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def process_peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- the reference behaviour (one predictor, set_image on every action) --------------------------------
def reference_app(tool: SegmentationTool) -> Any:
    """The reference system's tool server, minimal: sessions keep the image, prompts and logits; every
    action encodes the image again on the single global predictor, then decodes."""
    from fastapi import FastAPI, HTTPException

    from medseg_agent.serving.images import decode_image_bytes

    app = FastAPI(title="reference tool server (re-implemented)")
    lock = threading.Lock()  # one global predictor: one request at a time
    sessions: dict[str, tuple[np.ndarray, PromptState]] = {}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"tool": tool.name, **tool.stats()}

    @app.post("/v1/sessions", status_code=201)
    def create(body: dict[str, Any]) -> dict[str, Any]:
        image = decode_image_bytes(base64.b64decode(body["image_base64"]), 16384)
        session_id = os.urandom(16).hex()
        sessions[session_id] = (image, PromptState())
        return {"session_id": session_id}

    def act(session_id: str, update: Callable[[PromptState], None]) -> dict[str, Any]:
        if session_id not in sessions:
            raise HTTPException(404, "unknown session")
        image, state = sessions[session_id]
        update(state)
        with lock:
            prediction = tool.set_image(image).predict(state.to_prompt())  # set_image: the encoder again
        state.logits = prediction.logits
        return {"mask": encode_rle(prediction.mask), "score": float(prediction.score)}

    @app.post("/v1/sessions/{session_id}/box")
    def box(session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        def update(state: PromptState) -> None:
            state.box, state.points, state.labels, state.logits = tuple(body["bbox_2d"]), [], [], None

        return act(session_id, update)

    @app.post("/v1/sessions/{session_id}/point")
    def point(session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        def update(state: PromptState) -> None:
            state.points.append(tuple(body["point_2d"]))
            state.labels.append(1 if body["point_type"] == "positive" else 0)

        return act(session_id, update)

    @app.delete("/v1/sessions/{session_id}", status_code=204)
    def delete(session_id: str) -> None:
        sessions.pop(session_id, None)

    return app


def serve_role(args: argparse.Namespace) -> None:
    """Child process: build the model, then serve ``args.role`` on ``args.port`` until SIGTERM."""
    from medseg_agent.serving.server import run_server

    tool = build_model(args)
    if args.role == "serve-server":
        from medseg_agent.serving.app import create_app

        app = create_app(tool)
    else:
        app = reference_app(tool)
    run_server(app, host="127.0.0.1", port=args.port, log_level="warning")


# -- running one side ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_http_side(args: argparse.Namespace, side: str, images: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    port = free_port()
    command = [sys.executable, __file__, "--role", f"serve-{side}", "--port", str(port), *model_args(args)]
    child = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, child)
        with httpx.Client(base_url=url, timeout=args.timeout) as http:
            before = http.get("/health").json()
            load_before = os.getloadavg()[0]
            wall, latencies = drive_sessions(http, images, args, side)
            after = http.get("/health").json()
        peak = process_peak_rss_mb(child.pid)
    finally:
        child.terminate()
        child.wait(timeout=60)
    if side == "server":
        encodes = after["model"]["encodes"] - before["model"]["encodes"]
        decodes = after["model"]["decoded_prompts"] - before["model"]["decoded_prompts"]
        hits = after["cache"]["hits"] - before["cache"]["hits"]
        misses = after["cache"]["misses"] - before["cache"]["misses"]
        hit_rate = hits / (hits + misses) if hits + misses else 0.0
        extra = {"decode_batches": after["model"]["decode_batches"] - before["model"]["decode_batches"],
                 "largest_batch": after["model"]["largest_batch"]}
    else:
        encodes = after["encode_count"] - before["encode_count"]
        decodes = after["decode_count"] - before["decode_count"]
        hit_rate, extra = None, {}
        done = actions_for(args, side)
        if done < args.actions:  # a cut-short run: say so, and what the whole workload would take
            extra = {"actions_per_session": done, "extrapolated": True,
                     "extrapolated_wall_s": round(wall * args.actions / done, 3),
                     "extrapolation": f"each session ran its first {done} of {args.actions} actions; every "
                                      "reference action costs one encode + one decode on one locked predictor, "
                                      "so the wall time scales linearly with the number of actions"}
    return summarise(side, wall, latencies, encodes, decodes, hit_rate, peak, load_before, extra)


def wait_for(url: str, child: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the {url} server process exited with {child.returncode} during startup")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no server at {url} after {timeout_s:g} s")


def drive_sessions(http: httpx.Client, images: list[tuple[np.ndarray, np.ndarray]], args: argparse.Namespace,
                   side: str) -> tuple[float, list[float]]:
    """All rollouts at once (up to ``--concurrency``); returns wall seconds and per-action latencies."""
    encoded = [base64.b64encode(cv2.imencode(".png", image[:, :, ::-1])[1].tobytes()).decode() for image, _ in images]
    jobs = [(i, s) for s in range(args.sessions) for i in range(len(images))]
    actions = actions_for(args, side)
    latencies: list[float] = []
    lock = threading.Lock()
    with progress_bar() as progress:
        task = progress.add_task(f"{side}: actions", total=len(jobs) * actions)

        def rollout(job: tuple[int, int]) -> None:
            index, rollout_id = job
            _, gt = images[index]
            response = http.post("/v1/sessions", json={"image_base64": encoded[index]})
            response.raise_for_status()
            session_id = response.json()["session_id"]
            clicked: list[tuple[float, float]] = []
            mask = None
            for step in range(actions):
                if step == 0:
                    path, body = "box", {"bbox_2d": jittered_box(gt, 97 * index + rollout_id)}
                else:
                    point, kind = next_point(mask, gt, clicked)
                    path, body = "point", {"point_2d": point, "point_type": kind}
                start = time.perf_counter()
                response = http.post(f"/v1/sessions/{session_id}/{path}", json=body)
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                mask = decode_rle(response.json()["mask"])
                with lock:
                    latencies.append(elapsed)
                progress.advance(task)
            http.delete(f"/v1/sessions/{session_id}")

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency or len(jobs)) as pool:
            list(pool.map(rollout, jobs))
        wall = time.perf_counter() - start
    return wall, latencies


def actions_for(args: argparse.Namespace, side: str) -> int:
    """Actions per session: all of them, except for a reference run cut short with --reference-actions."""
    if side == "reference" and args.reference_actions:
        return min(args.reference_actions, args.actions)
    return args.actions


def ideal_role(args: argparse.Namespace) -> None:
    """Child process: one encode per image, every action decoded one by one; prints a JSON result."""
    tool = build_model(args)
    images = [make_image(i, args.image_size) for i in range(args.images)]
    latencies: list[float] = []
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    for index, (image, gt) in enumerate(images):
        embedding = tool.encode(image)
        for rollout_id in range(args.sessions):
            state, clicked, mask = PromptState(), [], None
            for step in range(args.actions):
                if step == 0:
                    state = PromptState(box=tuple(jittered_box(gt, 97 * index + rollout_id)))
                else:
                    point, kind = next_point(mask, gt, clicked)
                    state.points.append(tuple(point))
                    state.labels.append(1 if kind == "positive" else 0)
                began = time.perf_counter()
                prediction = tool.decode(embedding, state.to_prompt())
                latencies.append(time.perf_counter() - began)
                state.logits, mask = prediction.logits, prediction.mask
    wall = time.perf_counter() - start
    stats = tool.stats()
    seconds = {"encode_seconds": round(stats["encode_seconds"], 3), "decode_seconds": round(stats["decode_seconds"], 3)}
    result = summarise("ideal", wall, latencies, stats["encode_count"], stats["decode_count"], None, peak_rss_mb(),
                       load_before, seconds)
    print("RESULT " + json.dumps(result), flush=True)


def run_ideal_side(args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--role", "ideal", *model_args(args), *workload_args(args)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    line = next(row for row in output.splitlines() if row.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def summarise(side: str, wall: float, latencies: list[float], encodes: int, decodes: int, hit_rate: float | None,
              peak_mb: float | None, load_before: float, extra: dict) -> dict:
    """One side's row. ``hit_rate``: embedding lookups served without an encode (None: no cache at all)."""
    ordered = sorted(latencies)
    return {
        "side": side,
        "wall_s": round(wall, 3),
        "actions": len(latencies),
        "actions_per_s": round(len(latencies) / wall, 4),
        "encodes": int(encodes),
        "decodes": int(decodes),
        "cache_hit_rate": None if hit_rate is None else round(hit_rate, 4),
        "latency_p50_ms": round(1000 * statistics.median(ordered), 1),
        "latency_p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "peak_rss_mb": None if peak_mb is None else round(peak_mb, 1),
        "load_average_1m_at_start": round(load_before, 2),
        **extra,
    }


# -- reporting ---------------------------------------------------------------------------------------------
def model_args(args: argparse.Namespace) -> list[str]:
    return ["--tool", args.tool, *(["--model-size", str(args.model_size)] if args.model_size else [])]


def workload_args(args: argparse.Namespace) -> list[str]:
    return ["--images", str(args.images), "--sessions", str(args.sessions), "--actions", str(args.actions),
            "--image-size", str(args.image_size)]


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"tool": args.tool, "config": SAM2_CONFIG if args.tool == "sam2" else None,
            "model_size": args.model_size, "images": args.images, "sessions": args.sessions,
            "actions": args.actions, "image_size": args.image_size, "concurrency": args.concurrency}


def print_table(results: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GRPO rollout workload")
    columns = [("wall_s", "wall (s)"), ("actions_per_s", "actions/s"), ("encodes", "encodes"),
               ("cache_hit_rate", "cache hit rate"), ("latency_p50_ms", "p50 (ms)"),
               ("latency_p95_ms", "p95 (ms)"), ("peak_rss_mb", "peak RSS (MB)")]
    table.add_column("side")
    for _, title in columns:
        table.add_column(title, justify="right")
    for side in SIDES:
        if side in results:
            table.add_row(side, *("-" if results[side][key] is None else str(results[side][key]) for key, _ in columns))
    Console(width=140).print(table)
    reference = results.get("reference", {})
    if reference.get("extrapolated"):
        print(f"reference: measured on the first {reference['actions_per_session']} action(s) of every session "
              f"({reference['actions']} actions); whole workload extrapolated: {reference['extrapolated_wall_s']} s")
    if "server" in results and "reference" in results:
        print(f"server vs reference throughput: {speedup(results):.1f}x")
    if "server" in results and "ideal" in results:
        print(f"server wall time / ideal wall time: {results['server']['wall_s'] / results['ideal']['wall_s']:.2f}")


def speedup(results: dict[str, dict]) -> float:
    return results["server"]["actions_per_s"] / results["reference"]["actions_per_s"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="distinct images (GRPO prompts)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions (rollouts) per image")
    parser.add_argument("--actions", type=int, default=5, help="actions per session: a box, then clicks")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the square test images (pixels)")
    parser.add_argument("--tool", default="sam2", choices=["sam2", "classic"], help="sam2 (MedSAM2 arch) or classic")
    parser.add_argument("--model-size", type=int, default=None, help="sam2 input size override (MedSAM2: 512)")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {', '.join(SIDES)}")
    parser.add_argument("--concurrency", type=int, default=0, help="sessions in flight at once (0: all)")
    parser.add_argument("--reference-actions", type=int, default=0,
                        help="run only the first N actions of every reference session (all sessions still run at "
                             "once) and extrapolate its wall time; 0: all actions. Reported as extrapolated.")
    parser.add_argument("--timeout", type=float, default=7200.0, help="HTTP timeout per action (s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (rewritten after each side)")
    parser.add_argument("--fresh", action="store_true", help="rerun the --sides already measured in --out")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("images", "sessions", "actions", "image_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.image_size < 32:
        parser.error("--image-size must be at least 32")
    unknown = set(args.sides.split(",")) - set(SIDES)
    if unknown:
        parser.error(f"unknown side(s) {', '.join(sorted(unknown))}; choose from {', '.join(SIDES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role in ("serve-server", "serve-reference"):
        serve_role(args)
        return
    if args.role == "ideal":
        ideal_role(args)
        return
    settings = settings_of(args)
    chosen = [s for s in SIDES if s in args.sides.split(",")]
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: dict[str, dict] = previous.get("sides", {}) if previous.get("settings") == settings else {}
    if args.fresh:
        results = {side: row for side, row in results.items() if side not in chosen}
    images = [make_image(i, args.image_size) for i in range(args.images)]
    for side in chosen:
        if side in results:
            print(f"{side}: already measured in {args.out} (use --fresh to redo)", file=sys.stderr)
            continue
        print(f"{side}: running {args.images}x{args.sessions} sessions x {args.actions} actions", file=sys.stderr)
        results[side] = run_ideal_side(args) if side == "ideal" else run_http_side(args, side, images)
        results[side]["command"] = " ".join(["python", *sys.argv])
        summary = {}
        if "server" in results and "reference" in results:
            summary["server_vs_reference_throughput"] = round(speedup(results), 2)
        if "server" in results and "ideal" in results:
            summary["server_wall_over_ideal"] = round(results["server"]["wall_s"] / results["ideal"]["wall_s"], 3)
        atomic_write_json(args.out, {
            "settings": settings,
            "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
            "sides": results,
            "summary": summary,
        })
    print_table(results)


if __name__ == "__main__":
    main()
