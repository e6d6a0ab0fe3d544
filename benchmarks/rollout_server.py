"""The GRPO rollout workload against the tool server, side by side with the reference system.

Workload: ``--images`` distinct images x ``--sessions`` concurrent sessions per image x ``--actions``
actions per session (a box from the ground truth with a per-rollout jitter, then corrective clicks
at the interior-most point of the larger error region of the mask the server returned, RITM's rule).
All sessions are created at once (each sends its image, as a rollout worker does), then all of them
run their actions at once, each sending its actions one after another over HTTP. Images are
synthetic organ-like scans of ``--image-size`` pixels.

Sides (each in its own process, the model loaded from the same checkpoint file):

* ``server``: ``medseg-agent serve`` (shared embedding cache, batched decodes, compact masks).
* ``replicas``: the same server as ``--replicas`` Ray Serve replicas behind one endpoint, routed by
  image hash (``medseg-agent serve --replicas N``).
* ``ideal``: no server, no concurrency: each image encoded once, then every action decoded one by
  one in-process (one encode per distinct image + one decode per action).
* ``reimplemented``: a minimal re-implementation of the reference system's tool server, written
  here: one global predictor behind a lock, ``set_image`` (the image encoder) on every action.
* ``reference``: the reference system's own server, unmodified (``--reference-server PATH`` to
  ``RL-verl/api_server/segmentation_api.py`` of the public MedSAM-Agent repository; it is loaded
  from that path, never copied here). Its IMISNet imports are stubbed (it runs as MedSAM2), and its
  own API is used: ``/session/create``, ``/session/add_bbox``, ``/session/add_click``.

Tools: ``sam2`` (the MedSAM2 architecture, ``configs/sam2.1/sam2.1_hiera_t.yaml``, random weights
saved once with seed 0 to a checkpoint file that every side loads, the reference included),
``classic`` (no model), or ``zero-cost`` (a test double whose predict costs nothing, from
``benchmarks/zero_cost_tool.py``: what remains is the server's own overhead, the CPU proxy).

Measured per side, so that a slow client cannot hide a slow server: wall time and actions/s of the
whole workload; client-observed latency per action (p50/p95); the server process tree's CPU time
per action and per session creation; the server's own time per action (from its request-duration
histogram); the client's CPU per action (HTTP, RLE decoding and the click rule); encodes, cache hit
rate and decode batches; the model thread's time per decode batch and its busy share of the action
phase (near 1: the model thread is the limit; well below 1 with long server times: requests wait
elsewhere); peak memory. Each side's row is written to ``--out`` (JSON, atomically) as
soon as it finishes; a rerun with the same settings skips finished sides (``--fresh`` redoes them).

    python benchmarks/rollout_server.py --sides server,ideal --device cuda            # on a GPU
    python benchmarks/rollout_server.py --tool zero-cost --sides server               # CPU proxy
    python benchmarks/rollout_server.py --sides reference --reference-server PATH --reference-actions 1
    python benchmarks/rollout_server.py --images 2 --sessions 4 --actions 3 --image-size 256   # quick
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import queue
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # zero_cost_tool, run as a script or a module

from medseg_agent.io.atomic import atomic_write_json  # noqa: E402
from medseg_agent.io.masks import decode_rle, encode_rle  # noqa: E402
from medseg_agent.policies.clicks import next_click  # noqa: E402
from medseg_agent.runs.parallel import progress_bar  # noqa: E402
from medseg_agent.tools.base import SegmentationTool  # noqa: E402
from medseg_agent.tools.spec import ToolSpec  # noqa: E402
from medseg_agent.vocabulary.prompts import PromptState  # noqa: E402

SIDES = ("server", "replicas", "ideal", "reimplemented", "reference")
HTTP_SIDES = ("server", "replicas", "reimplemented", "reference")
DEFAULT_OUT = Path("runs/benchmarks/rollout_server.json")
WEIGHTS_DIR = Path("runs/benchmarks/weights")
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
ACTION_ROUTES = ("/v1/sessions/{session_id}/box", "/v1/sessions/{session_id}/point")


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


def next_point(mask: np.ndarray, gt: np.ndarray, clicked: list[tuple[float, float]]) -> tuple[list[float], bool]:
    """The next corrective click on ``mask`` and whether it is positive."""
    click = next_click(mask, gt, clicked)
    if click is None:  # nothing left to correct: click the target's centre again
        ys, xs = np.nonzero(gt)
        return [float(xs.mean()), float(ys.mean())], True
    clicked.append((click.x, click.y))
    return [float(click.x), float(click.y)], click.positive


# -- model -------------------------------------------------------------------------------------------
def weights_file(args: argparse.Namespace) -> Path | None:
    """The random sam2 weights every side loads (built once with seed 0, saved as ``{"model": sd}``,
    the layout ``sam2.build_sam`` and the reference server read)."""
    if args.tool != "sam2":
        return None
    return WEIGHTS_DIR / f"{Path(SAM2_CONFIG).stem}-seed0.pt"


def ensure_weights(args: argparse.Namespace) -> None:
    path = weights_file(args)
    if path is None or path.exists():
        return
    import torch
    from sam2.build_sam import build_sam2

    from medseg_agent.tools.sam2 import quiet_jit_warnings

    torch.manual_seed(0)
    with quiet_jit_warnings():
        model = build_sam2(SAM2_CONFIG, ckpt_path=None, device="cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"model": model.state_dict()}, partial)
    partial.replace(path)


def build_model(args: argparse.Namespace) -> SegmentationTool:
    return tool_spec(args).build()


def tool_spec(args: argparse.Namespace) -> ToolSpec:
    """The server's tool, for another process to build (a replica, a model process)."""
    return ToolSpec(args.tool, checkpoint=weights_file(args), device=args.device, options=tool_options(args),
                    preload=("zero_cost_tool",) if args.tool == "zero-cost" else ())


def model_process(args: argparse.Namespace) -> SegmentationTool:
    """``--model-process``: the server's model in a process of its own (``serve --model-process``)."""
    from medseg_agent.tools.process import ProcessTool

    return ProcessTool(tool_spec(args))


def tool_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.tool == "zero-cost":
        options["mask_runs"] = args.mask_runs
        options["mask"] = args.zero_cost_mask
        options["launch_ms"] = args.zero_cost_launch_ms
    if args.tool == "sam2":
        options["config"] = SAM2_CONFIG
        if args.model_size:
            options["image_size"] = args.model_size
        if args.precision:
            options["precision"] = args.precision
        if args.bucket_batches != "auto":
            options["bucket_batches"] = args.bucket_batches == "on"
        if args.tool_max_batch:
            options["max_batch"] = args.tool_max_batch
        if args.cuda_graphs:
            options["cuda_graphs"] = True
    return options


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


class ProcessTree:
    """CPU seconds and peak memory of a server process and everything it started (Ray workers)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self._seen: dict[int, psutil.Process] = {}

    def _processes(self) -> list[psutil.Process]:
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            found = []
        for proc in found:
            self._seen.setdefault(proc.pid, proc)
        return list(self._seen.values())

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._processes():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def peak_rss_mb(self) -> float | None:
        peaks = []
        for proc in self._processes():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                continue
        return max(peaks) if peaks else None


# -- the reference behaviour, re-implemented (one predictor, set_image on every action) ---------------
def reimplemented_app(tool: SegmentationTool) -> Any:
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


def reference_app(path: Path, checkpoint: Path) -> Any:
    """The reference system's own FastAPI app, loaded from ``path`` unmodified, as MedSAM2.

    Its module imports IMISNet classes from a ``third_party`` package of its repository that its
    MedSAM2 path never uses; empty stand-ins let the import succeed (using them would fail loudly).
    """
    def unavailable(*_: Any, **__: Any) -> Any:
        raise RuntimeError("IMISNet is not available in this benchmark (the reference runs as MedSAM2)")

    stubs = {
        "third_party": {},
        "third_party.segment_anything": {"sam_model_registry": {}},
        "third_party.segment_anything.predictor": {"IMISPredictor": unavailable},
        "third_party.segment_anything.model": {"IMISNet": unavailable},
    }
    for name, attributes in stubs.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = []  # a package, so the submodules resolve
            module.__dict__.update(attributes)
            sys.modules[name] = module
    os.environ.update(MODEL_TYPE="medsam2", MEDSAM2_CHECKPOINT=str(checkpoint), MEDSAM2_CONFIG=SAM2_CONFIG)
    spec = importlib.util.spec_from_file_location("medsam_agent_segmentation_api", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--reference-server {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def serve_role(args: argparse.Namespace) -> None:
    """Child process: serve ``args.role`` on ``args.port`` until SIGTERM."""
    from medseg_agent.serving.server import run_server

    if args.role == "serve-reference":
        app = reference_app(args.reference_server, weights_file(args))
    elif args.role == "serve-replicas":
        from medseg_agent.serving.cluster import ClusterSpec, run_cluster

        spec = ClusterSpec(tool=tool_spec(args), replicas=args.replicas, cpus_per_replica=args.cpus_per_replica,
                           gpus_per_replica=1.0 if args.device.startswith("cuda") else 0.0,
                           model_process=args.model_process)
        run_cluster(spec, host="127.0.0.1", port=args.port, log_level="warning")
        return
    else:
        tool = model_process(args) if args.model_process and args.role == "serve-server" else build_model(args)
        if args.role == "serve-server":
            from medseg_agent.serving.app import create_app

            app = create_app(tool, owns_tool=True)
        else:
            app = reimplemented_app(tool)
    run_server(app, host="127.0.0.1", port=args.port, log_level="warning")


# -- the two HTTP APIs -----------------------------------------------------------------------------------
class SessionApi:
    """medseg-agent's session API (also spoken by the re-implemented reference)."""

    encodes_in_health = True

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def create(self, png: bytes, encoded: str) -> str:
        response = self.http.post("/v1/sessions", json={"image_base64": encoded})
        response.raise_for_status()
        return response.json()["session_id"]

    def box(self, session_id: str, box: list[float]) -> dict[str, Any]:
        return self._post(f"/v1/sessions/{session_id}/box", {"bbox_2d": box})

    def point(self, session_id: str, point: list[float], positive: bool) -> dict[str, Any]:
        body = {"point_2d": point, "point_type": "positive" if positive else "negative"}
        return self._post(f"/v1/sessions/{session_id}/point", body)

    def mask(self, answer: dict[str, Any]) -> np.ndarray:
        return decode_rle(answer["mask"])

    def delete(self, session_id: str) -> None:
        self.http.delete(f"/v1/sessions/{session_id}")

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()


class ReferenceApi(SessionApi):
    """The reference server's own API: multipart creation, form fields, base64 PNG masks. Its
    ``add_click`` sends the new click alone with the previous logits, as its rollouts do."""

    encodes_in_health = False

    def create(self, png: bytes, encoded: str) -> str:
        response = self.http.post("/session/create", files={"image": ("image.png", png, "image/png")})
        response.raise_for_status()
        return response.json()["session_id"]

    def box(self, session_id: str, box: list[float]) -> dict[str, Any]:
        form = {"session_id": session_id, "bbox": json.dumps([round(v) for v in box])}
        return self._form("/session/add_bbox", form)

    def point(self, session_id: str, point: list[float], positive: bool) -> dict[str, Any]:
        form = {"session_id": session_id, "point_x": str(round(point[0])), "point_y": str(round(point[1])),
                "is_positive": "true" if positive else "false"}
        return self._form("/session/add_click", form)

    def mask(self, answer: dict[str, Any]) -> np.ndarray:
        png = np.frombuffer(base64.b64decode(answer["masks"][0]), np.uint8)
        return cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) > 0

    def delete(self, session_id: str) -> None:
        self.http.delete(f"/session/{session_id}")

    def _form(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        response = self.http.post(path, data=form)
        response.raise_for_status()
        return response.json()


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
        wait_for(url, child, args.startup_timeout)
        tree = ProcessTree(child.pid)
        for round_ in range(args.warmup_rounds):  # a training run's server has served earlier steps
            drive_sessions(url, warmup_images(args, round_), args, side, tree, label=f"{side} warm-up {round_ + 1}")
        with httpx.Client(base_url=url, timeout=args.timeout) as http:
            before = server_counters(http, side)
            load_before = os.getloadavg()[0]
            run = drive_sessions(url, images, args, side, tree)
            after = server_counters(http, side)
        peak = tree.peak_rss_mb()
    finally:
        child.terminate()
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
    extra: dict[str, Any] = {"client_processes": run["client_processes"]}
    if run["action_wall_s"]:  # the cores each side kept busy in the action phase: who had the machine?
        extra["client_cores"] = round(run["client_cpu_action_s"] / run["action_wall_s"], 3)
        if "server_cpu_action_s" in run:
            extra["server_cores"] = round(run["server_cpu_action_s"] / run["action_wall_s"], 3)
    hit_rate = None
    if "encodes" in after:
        encodes, decodes = after["encodes"] - before["encodes"], after["decodes"] - before["decodes"]
    else:  # the reference server counts nothing: every creation and action runs set_image once
        encodes, decodes = run["creates"] + run["actions"], run["actions"]
        extra["encodes_counted_from"] = "the reference's code: set_image on session creation and on every action"
    if "hits" in after:
        hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
        hit_rate = hits / (hits + misses) if hits + misses else 0.0
        batches = after["decode_batches"] - before["decode_batches"]
        decoding = after["decode_seconds"] - before["decode_seconds"]
        extra.update(decode_batches=batches, largest_batch=after["largest_batch"])
        if batches:  # the model thread's time inside decode calls: busy there, or waiting elsewhere?
            extra.update(model_ms_per_decode_batch=round(1000 * decoding / batches, 2),
                         model_busy_share=round(decoding / run["action_wall_s"], 3))
    if "decoder_graphs" in after:  # were the graphs used in the measured phase?
        extra.update(decoder_graphs=after["decoder_graphs"], decoder_graphs_rejected=after["decoder_graphs_rejected"],
                     decoder_graph_replays=after["decoder_graph_replays"] - before["decoder_graph_replays"],
                     decoder_graph_eager_calls=after["decoder_graph_eager_calls"] - before["decoder_graph_eager_calls"])
    if "action_seconds" in after:
        served = after["action_count"] - before["action_count"]
        if served:
            extra["server_time_ms_per_action"] = round(
                1000 * (after["action_seconds"] - before["action_seconds"]) / served, 3)
    done = actions_for(args, side)
    if done < args.actions:  # a cut-short run: say so, and what the whole workload would take
        extra.update(actions_per_session=done, extrapolated=True,
                     extrapolated_wall_s=round(run["create_wall_s"] + run["action_wall_s"] * args.actions / done, 3),
                     extrapolation=f"each session ran its first {done} of {args.actions} actions; every reference "
                                   "action costs one encode + one decode on one locked predictor, so the action "
                                   "phase scales linearly with the number of actions")
    return summarise(side, run, encodes, decodes, hit_rate, peak, load_before, extra)


def server_counters(http: httpx.Client, side: str) -> dict[str, float]:
    """Counters the server exposes: its /health (ours and the re-implementation) and, for ours, the
    request-duration histogram of the two action routes."""
    health = http.get("/health").json()
    counters: dict[str, float] = {}
    if "model" in health:  # medseg-agent serve
        model, cache = health["model"], health["cache"]
        counters.update(encodes=model["encodes"], decodes=model["decoded_prompts"],
                        decode_batches=model["decode_batches"], largest_batch=model["largest_batch"],
                        decode_seconds=model["decode_seconds"], hits=cache["hits"], misses=cache["misses"])
        # the tool's CUDA graphs (tool option cuda_graphs): captured shapes, replays, eager calls
        counters.update({name: value for name, value in health.get("tool_counters", {}).items()
                         if name.startswith("decoder_graph")})
        metrics = http.get("/metrics")
        if metrics.status_code == 200:
            counters.update(action_durations(metrics.text))
    elif "encode_count" in health:  # the re-implementation
        counters.update(encodes=health["encode_count"], decodes=health["decode_count"])
    return counters


def action_durations(text: str) -> dict[str, float]:
    seconds = count = 0.0
    for route in ACTION_ROUTES:
        for suffix, into in (("sum", "seconds"), ("count", "count")):
            label = f'method="POST",route="{re.escape(route)}"'
            pattern = rf"^medseg_http_request_duration_seconds_{suffix}\{{{label}\}} (\S+)$"
            for match in re.finditer(pattern, text, flags=re.MULTILINE):
                if into == "seconds":
                    seconds += float(match.group(1))
                else:
                    count += float(match.group(1))
    return {"action_seconds": seconds, "action_count": count}


def wait_for(url: str, child: subprocess.Popen, timeout_s: float) -> None:
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


def client_processes(args: argparse.Namespace, sessions: int) -> int:
    """Client processes to run: ``--client-processes``, or min(8, CPUs); never more than sessions."""
    wanted = args.client_processes or min(8, os.cpu_count() or 1)
    return max(1, min(wanted, sessions))


def drive_sessions(url: str, images: list[tuple[np.ndarray, np.ndarray]], args: argparse.Namespace,
                   side: str, tree: ProcessTree, label: str | None = None) -> dict[str, Any]:
    """Create every session at once, then run every session's actions at once, from
    ``client_processes`` processes (a GRPO rollout runs many workers; one Python process would
    serialise the click rule, RLE decoding and JSON parsing of all sessions under one GIL and cap
    the throughput it measures). Sessions go to the processes in turn; each process runs its
    sessions on its own threads. The phases start together in every process (a barrier with this
    one, which reads the server's CPU time at each phase boundary). Returns wall times, every
    client-observed latency, and CPU seconds of the server tree and of the client processes (summed),
    per phase."""
    pngs = [cv2.imencode(".png", image[:, :, ::-1])[1].tobytes() for image, _ in images]
    jobs = [(i, s) for s in range(args.sessions) for i in range(len(images))]
    count = client_processes(args, len(jobs))
    shares = [jobs[p::count] for p in range(count)]
    in_flight = args.concurrency or len(jobs)
    context = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
    barrier = context.Barrier(count + 1)
    finished_work = context.Value("q", 0)  # sessions created, then actions done (the progress bar)
    answers = context.Queue()
    spec = ClientSpec(url=url, side=side, pngs=pngs, truths=[gt for _, gt in images],
                      actions=actions_for(args, side), timeout=args.timeout)
    clients = [context.Process(target=client_process, name=f"rollout-client-{p}", daemon=True,
                               args=(spec, share, max(1, -(-in_flight * len(share) // len(jobs))), barrier,
                                     finished_work, answers))
               for p, share in enumerate(shares)]
    for client in clients:
        client.start()
    try:
        with progress_bar() as progress:
            label = label or side
            task = progress.add_task(f"{label}: sessions", total=len(jobs))
            phase = PhaseBarrier(barrier, clients, progress, task, finished_work, args.timeout)
            phase.wait()  # every client ready: creation starts now
            cpu0, start = tree.cpu_seconds(), time.perf_counter()
            phase.wait()  # every session created
            cpu1, created = tree.cpu_seconds(), time.perf_counter()
            finished_work.value = 0
            progress.update(task, description=f"{label}: actions", completed=0, total=len(jobs) * spec.actions)
            phase.wait()  # actions start now
            phase.wait()  # every action answered
            cpu2, finished = tree.cpu_seconds(), time.perf_counter()
            reports = [phase.next_report(answers) for _ in clients]
    finally:
        for client in clients:
            client.join(timeout=30)
            if client.is_alive():
                client.kill()
    latencies = [value for report in reports for value in report["latencies"]]
    return {"creates": len(jobs), "actions": len(latencies), "latencies": latencies,
            "wall_s": finished - start, "create_wall_s": created - start, "action_wall_s": finished - created,
            "server_cpu_create_s": cpu1 - cpu0, "server_cpu_action_s": cpu2 - cpu1,
            "client_cpu_create_s": sum(r["cpu_create_s"] for r in reports),
            "client_cpu_action_s": sum(r["cpu_action_s"] for r in reports),
            "client_work_s": sum(r["work_s"] for r in reports), "client_processes": count}


@dataclass(frozen=True)
class ClientSpec:
    """What every client process needs (sent to it once, pickled)."""

    url: str
    side: str
    pngs: list[bytes]
    truths: list[np.ndarray]
    actions: int
    timeout: float


class PhaseBarrier:
    """The driver's side of the phase barrier: waits while showing progress, and fails (with the
    client's own error) instead of hanging when a client process dies."""

    def __init__(self, barrier: Any, clients: list[Any], progress: Any, task: Any, finished_work: Any,
                 timeout: float) -> None:
        self.barrier, self.clients, self.progress, self.task = barrier, clients, progress, task
        self.finished_work, self.timeout = finished_work, timeout

    def wait(self) -> None:
        passed: list[BaseException | None] = []

        def wait() -> None:
            try:
                self.barrier.wait()
                passed.append(None)
            except threading.BrokenBarrierError as exc:
                passed.append(exc)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        deadline = time.monotonic() + self.timeout
        while waiter.is_alive():
            waiter.join(0.2)
            self.progress.update(self.task, completed=self.finished_work.value)
            dead = [c for c in self.clients if c.exitcode is not None and c.exitcode != 0]
            if dead or time.monotonic() > deadline:
                self.barrier.abort()
                waiter.join()
                why = (f"{dead[0].name} exited with {dead[0].exitcode}" if dead
                       else f"a phase took over {self.timeout:g} s")
                raise RuntimeError(f"a rollout client failed: {why}")
        if passed[0] is not None:
            raise RuntimeError("a rollout client failed; its error is printed above") from passed[0]

    def next_report(self, answers: Any) -> dict[str, Any]:
        """The next client's report; fails if a client dies before sending its report."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                return answers.get(timeout=0.5)
            except queue.Empty:
                dead = [c for c in self.clients if c.exitcode is not None and c.exitcode != 0]
                if dead:
                    why = f"{dead[0].name} exited with {dead[0].exitcode}"
                    raise RuntimeError(f"a rollout client failed: {why}") from None
        raise RuntimeError(f"a rollout client sent no report in {self.timeout:g} s")


def client_process(spec: ClientSpec, share: list[tuple[int, int]], threads: int, barrier: Any,
                   finished_work: Any, answers: Any) -> None:
    """One client process: its sessions on ``threads`` threads, phase by phase with the driver.
    Reports its latencies and CPU seconds (all its threads: HTTP, JSON, RLE decoding, click rule)."""
    try:
        report = run_client(spec, share, threads, barrier, finished_work)
    except BaseException:
        barrier.abort()  # the other processes and the driver stop waiting
        raise
    answers.put(report)


def run_client(spec: ClientSpec, share: list[tuple[int, int]], threads: int, barrier: Any,
               finished_work: Any) -> dict[str, Any]:
    api_class = ReferenceApi if spec.side == "reference" else SessionApi
    encoded = [base64.b64encode(png).decode() for png in spec.pngs]
    latencies: list[float] = []
    work_s = [0.0]  # thread CPU seconds spent on the click rule and mask decoding
    lock = threading.Lock()

    def advance() -> None:
        with finished_work.get_lock():
            finished_work.value += 1

    limits = httpx.Limits(max_connections=len(share) + 8)
    with httpx.Client(base_url=spec.url, timeout=spec.timeout, limits=limits) as http, \
            ThreadPoolExecutor(max_workers=threads) as pool:
        api = api_class(http)

        def create(job: tuple[int, int]) -> str:
            session_id = api.create(spec.pngs[job[0]], encoded[job[0]])
            advance()
            return session_id

        def rollout(job: tuple[int, int], session_id: str) -> None:
            index, rollout_id = job
            gt = spec.truths[index]
            clicked: list[tuple[float, float]] = []
            mask = None
            for step in range(spec.actions):
                work = time.thread_time()
                if step:
                    point, positive = next_point(mask, gt, clicked)
                work = time.thread_time() - work
                began = time.perf_counter()
                if step == 0:
                    answer = api.box(session_id, jittered_box(gt, 97 * index + rollout_id))
                else:
                    answer = api.point(session_id, point, positive)
                elapsed = time.perf_counter() - began
                decoding = time.thread_time()
                mask = api.mask(answer)
                work += time.thread_time() - decoding
                with lock:
                    latencies.append(elapsed)
                    work_s[0] += work
                advance()

        barrier.wait(spec.timeout)  # a driver that went away breaks it: no client waits forever
        cpu0 = time.process_time()
        session_ids = list(pool.map(create, share))
        cpu1 = time.process_time()
        barrier.wait(spec.timeout)  # all created; the driver reads the server's CPU time
        barrier.wait(spec.timeout)
        cpu2 = time.process_time()
        list(pool.map(rollout, share, session_ids))
        cpu3 = time.process_time()
        barrier.wait(spec.timeout)  # all answered
        list(pool.map(api.delete, session_ids))
    return {"latencies": latencies, "cpu_create_s": cpu1 - cpu0, "cpu_action_s": cpu3 - cpu2, "work_s": work_s[0]}


def actions_for(args: argparse.Namespace, side: str) -> int:
    """Actions per session: all of them, except for a reference side cut short with --reference-actions."""
    if side in ("reimplemented", "reference") and args.reference_actions:
        return min(args.reference_actions, args.actions)
    return args.actions


def ideal_role(args: argparse.Namespace) -> None:
    """Child process: one encode per image, every action decoded one by one; prints a JSON result.

    The same click rule as the HTTP sides' clients chooses each click (its CPU time is counted
    apart, ``client_work_ms_per_action``, and is in the wall time but not in the latencies); the
    masks come back whole, so nothing is run-length encoded or decoded."""
    tool = build_model(args)
    for round_ in range(args.warmup_rounds):
        ideal_round(tool, warmup_images(args, round_), args)
    before = tool.stats()
    images = [make_image(i, args.image_size) for i in range(args.images)]
    load_before = os.getloadavg()[0]
    run = ideal_round(tool, images, args)
    stats = {key: value - before[key] for key, value in tool.stats().items()}
    seconds = {"encode_seconds": round(stats["encode_seconds"], 3), "decode_seconds": round(stats["decode_seconds"], 3)}
    result = summarise("ideal", run, stats["encode_count"], stats["decode_count"], None, peak_rss_mb(),
                       load_before, seconds)
    print("RESULT " + json.dumps(result), flush=True)


def ideal_round(tool: SegmentationTool, images: list[tuple[np.ndarray, np.ndarray]],
                args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    click_rule_s = 0.0
    start = time.perf_counter()
    for index, (image, gt) in enumerate(images):
        embedding = tool.encode(image)
        for rollout_id in range(args.sessions):
            state, clicked, mask = PromptState(), [], None
            for step in range(args.actions):
                if step == 0:
                    state = PromptState(box=tuple(jittered_box(gt, 97 * index + rollout_id)))
                else:
                    clicking = time.thread_time()
                    point, positive = next_point(mask, gt, clicked)
                    click_rule_s += time.thread_time() - clicking
                    state.points.append(tuple(point))
                    state.labels.append(1 if positive else 0)
                began = time.perf_counter()
                prediction = tool.decode(embedding, state.to_prompt())
                latencies.append(time.perf_counter() - began)
                state.logits, mask = prediction.logits, prediction.mask
    return {"creates": 0, "actions": len(latencies), "latencies": latencies, "wall_s": time.perf_counter() - start,
            "client_work_s": click_rule_s}


def warmup_images(args: argparse.Namespace, round_: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images of the same kind as the measured ones, but others (as a GRPO step brings new ones):
    the unmeasured warm-up rounds of ``--warmup-rounds`` run on them."""
    return [make_image(args.images * (round_ + 1) + i, args.image_size) for i in range(args.images)]


def run_ideal_side(args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--role", "ideal", *model_args(args), *workload_args(args)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    line = next(row for row in output.splitlines() if row.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def summarise(side: str, run: dict[str, Any], encodes: int, decodes: int, hit_rate: float | None,
              peak_mb: float | None, load_before: float, extra: dict) -> dict:
    """One side's row. ``hit_rate``: embedding lookups served without an encode (None: no cache at all)."""
    ordered = sorted(run["latencies"])
    actions, creates = run["actions"], run["creates"]

    def per(seconds_key: str, count: int) -> float | None:
        return round(1000 * run[seconds_key] / count, 3) if seconds_key in run and count else None

    return {
        "side": side,
        "wall_s": round(run["wall_s"], 3),
        "actions": actions,
        "actions_per_s": round(actions / run["wall_s"], 3),
        "create_wall_s": None if "create_wall_s" not in run else round(run["create_wall_s"], 3),
        "action_wall_s": None if "action_wall_s" not in run else round(run["action_wall_s"], 3),
        "encodes": int(encodes),
        "decodes": int(decodes),
        "cache_hit_rate": None if hit_rate is None else round(hit_rate, 4),
        "latency_p50_ms": round(1000 * statistics.median(ordered), 1),
        "latency_p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "server_cpu_ms_per_action": per("server_cpu_action_s", actions),
        "server_cpu_ms_per_create": per("server_cpu_create_s", creates),
        "client_cpu_ms_per_action": per("client_cpu_action_s", actions),
        "client_work_ms_per_action": per("client_work_s", actions),
        "peak_rss_mb": None if peak_mb is None else round(peak_mb, 1),
        "load_average_1m_at_start": round(load_before, 2),
        **extra,
    }


# -- reporting ---------------------------------------------------------------------------------------------
def model_args(args: argparse.Namespace) -> list[str]:
    out = ["--tool", args.tool, "--device", args.device, "--mask-runs", args.mask_runs,
           "--zero-cost-mask", args.zero_cost_mask, "--zero-cost-launch-ms", str(args.zero_cost_launch_ms)]
    if args.model_size:
        out += ["--model-size", str(args.model_size)]
    if args.precision:
        out += ["--precision", args.precision]
    out += ["--bucket-batches", args.bucket_batches]
    if args.tool_max_batch:
        out += ["--tool-max-batch", str(args.tool_max_batch)]
    if args.cuda_graphs:
        out += ["--cuda-graphs"]
    if args.model_process:
        out += ["--model-process"]
    if args.reference_server:
        out += ["--reference-server", str(args.reference_server)]
    out += ["--replicas", str(args.replicas), "--cpus-per-replica", str(args.cpus_per_replica)]
    return out


def workload_args(args: argparse.Namespace) -> list[str]:
    return ["--images", str(args.images), "--sessions", str(args.sessions), "--actions", str(args.actions),
            "--image-size", str(args.image_size), "--warmup-rounds", str(args.warmup_rounds)]


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"tool": args.tool, "config": SAM2_CONFIG if args.tool == "sam2" else None, "device": args.device,
            "mask_runs": args.mask_runs if args.tool == "zero-cost" else None,
            "zero_cost_mask": args.zero_cost_mask if args.tool == "zero-cost" else None,
            "zero_cost_launch_ms": args.zero_cost_launch_ms if args.tool == "zero-cost" else None,
            "precision": args.precision, "bucket_batches": args.bucket_batches, "model_size": args.model_size,
            "cuda_graphs": args.cuda_graphs,
            "model_process": args.model_process, "images": args.images,
            "sessions": args.sessions, "actions": args.actions, "image_size": args.image_size,
            "concurrency": args.concurrency, "client_processes": args.client_processes,
            "warmup_rounds": args.warmup_rounds}


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": sys.platform}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    # what uvicorn runs the server on: uvloop and httptools when installed (0.50 against 0.66-0.69 ms
    # of server CPU per action without them, zero-cost tool, 2-core sandbox), else asyncio and h11
    info["server_runtime"] = {name: installed_version(name) for name in ("uvicorn", "uvloop", "httptools")}
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    return info


COLUMNS = [("wall_s", "wall (s)"), ("actions_per_s", "actions/s"), ("encodes", "encodes"),
           ("cache_hit_rate", "cache hits"), ("latency_p50_ms", "p50 (ms)"), ("latency_p95_ms", "p95 (ms)"),
           ("server_cpu_ms_per_action", "server CPU/action (ms)"),
           ("server_time_ms_per_action", "server time/action (ms)"),
           ("model_ms_per_decode_batch", "model ms/decode batch"), ("model_busy_share", "model busy"),
           ("client_cpu_ms_per_action", "client CPU/action (ms)"), ("peak_rss_mb", "peak RSS (MB)")]


#: Cores kept busy beyond this share of those available (the machine's; the client processes', each
#: about one core of Python) may be what limits a run rather than the server.
BOUND_SHARE = 0.8


def print_table(results: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GRPO rollout workload")
    table.add_column("side")
    for _, title in COLUMNS:
        table.add_column(title, justify="right")
    for side in SIDES:
        if side in results:
            row = results[side]
            table.add_row(side, *("-" if row.get(key) is None else str(row[key]) for key, _ in COLUMNS))
    Console(width=200).print(table)
    for side, row in results.items():
        if "decoder_graphs" in row:
            print(f"{side}: CUDA graphs: {row['decoder_graphs']} shapes captured, {row['decoder_graphs_rejected']} "
                  "dropped (first replay unlike eager); measured phase: "
                  f"{row['decoder_graph_replays']} replays, {row['decoder_graph_eager_calls']} eager calls")
    cores = os.cpu_count() or 1
    for side, row in results.items():
        if "client_cores" not in row:
            continue
        clients, server = row["client_cores"], row.get("server_cores", 0.0)
        machine_busy = clients + server >= BOUND_SHARE * cores
        client_bound = clients >= BOUND_SHARE * row["client_processes"] or (machine_busy and clients > server)
        verdict = (": the client may limit this throughput (more --client-processes, or more cores)" if client_bound
                   else ": the machine's cores were nearly all busy" if machine_busy else "")
        print(f"{side}: in the action phase the {row['client_processes']} client process(es) kept {clients:.2f} "
              f"cores busy and the server {server:.2f}, of {cores}{verdict}")
    for side in ("reimplemented", "reference"):
        row = results.get(side, {})
        if row.get("extrapolated"):
            print(f"{side}: measured on the first {row['actions_per_session']} action(s) of every session "
                  f"({row['actions']} actions); whole workload extrapolated: {row['extrapolated_wall_s']} s")
    for side in ("reimplemented", "reference"):
        if "server" in results and side in results:
            print(f"server vs {side} throughput: {speedup(results, side):.1f}x")
    if "server" in results and "ideal" in results:
        print(f"server wall time / ideal wall time: {results['server']['wall_s'] / results['ideal']['wall_s']:.2f}")


def speedup(results: dict[str, dict], side: str) -> float:
    return results["server"]["actions_per_s"] / results[side]["actions_per_s"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="distinct images (GRPO prompts)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions (rollouts) per image")
    parser.add_argument("--actions", type=int, default=5, help="actions per session: a box, then clicks")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the square test images (pixels)")
    parser.add_argument("--tool", default="sam2", choices=["sam2", "classic", "zero-cost"],
                        help="sam2 (MedSAM2 architecture), classic, or zero-cost (server overhead only)")
    parser.add_argument("--mask-runs", default="device", choices=["device", "host"],
                        help="zero-cost tool: where mask runs are found; device: as sam/sam2 on a GPU (free, "
                             "the host only builds the RLE string), host: as a CPU backend (a full-mask pass "
                             "per action on the server's CPU)")
    parser.add_argument("--zero-cost-mask", default="ellipse", choices=["ellipse", "noisy"],
                        help="zero-cost tool: the mask every prompt gets; ellipse: a trained model's (a few hundred "
                             "runs), noisy: like the random-weight sam2 checkpoint's (~34,000 runs at 1024^2)")
    parser.add_argument("--zero-cost-launch-ms", type=float, default=0.0,
                        help="zero-cost tool: milliseconds each decoder call holds the interpreter lock, as a "
                             "launch-bound GPU forward does (~20 on one H100 for sam2.1 hiera-t); 0: none")
    parser.add_argument("--device", default="cpu", help="torch device of the model on every side (cpu, cuda)")
    parser.add_argument("--precision", default=None, choices=["fp32", "tf32", "bf16"],
                        help="sam2 precision (default: the tool's own, bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--model-size", type=int, default=None, help="sam2 input size override (MedSAM2: 512)")
    parser.add_argument("--bucket-batches", default="auto", choices=["auto", "on", "off"],
                        help="sam2 decoder calls padded to power-of-two row counts (auto: the tool's default, "
                             "on with --device cuda)")
    parser.add_argument("--tool-max-batch", type=int, default=None,
                        help="sam2 rows per decoder call (default: the tool's own, 32 with --device cuda, 16 on CPU)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="sam2 prompt encoder and mask decoder replayed from one CUDA graph per input shape "
                             "(the tool option cuda_graphs=true; needs --device cuda)")
    parser.add_argument("--model-process", action="store_true",
                        help="the server (and each replica) runs its model in a process of its own, as "
                             "'medseg-agent serve --model-process' does: the model's operator launches and the "
                             "event loop no longer share one interpreter lock")
    parser.add_argument("--sides", default="server,ideal,reimplemented",
                        help=f"comma-separated subset of {', '.join(SIDES)}")
    parser.add_argument("--reference-server", type=Path, default=None,
                        help="path to MedSAM-Agent's RL-verl/api_server/segmentation_api.py (the 'reference' side)")
    parser.add_argument("--replicas", type=int, default=2, help="Ray Serve replicas of the 'replicas' side")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs each replica reserves in Ray")
    parser.add_argument("--concurrency", type=int, default=0, help="sessions in flight at once (0: all)")
    parser.add_argument("--client-processes", type=int, default=0,
                        help="processes the HTTP sides' sessions are spread over, each running its sessions on "
                             "its own threads, as rollout workers do (0: min(8, CPUs))")
    parser.add_argument("--warmup-rounds", type=int, default=0,
                        help="run the whole workload this many times first, on other images, unmeasured, on the "
                             "same server (a training run's server is warm: a GPU builds kernels and plans per "
                             "batch shape once per process); 0: measure a freshly started server")
    parser.add_argument("--reference-actions", type=int, default=0,
                        help="run only the first N actions of every session on the two reference sides (all "
                             "sessions still run at once) and extrapolate the wall time; 0: all actions")
    parser.add_argument("--timeout", type=float, default=7200.0, help="HTTP timeout per request (s)")
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for a server to start")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (rewritten after each side)")
    parser.add_argument("--fresh", action="store_true", help="rerun the --sides already measured in --out")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("images", "sessions", "actions", "image_size", "replicas"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup_rounds < 0:
        parser.error("--warmup-rounds must be >= 0")
    if args.client_processes < 0:
        parser.error("--client-processes must be >= 0 (0: min(8, CPUs))")
    if args.image_size < 32:
        parser.error("--image-size must be at least 32")
    if args.cuda_graphs and (args.tool != "sam2" or not args.device.startswith("cuda")):
        parser.error(f"--cuda-graphs needs --tool sam2 --device cuda, got --tool {args.tool} --device {args.device}")
    unknown = set(args.sides.split(",")) - set(SIDES)
    if unknown:
        parser.error(f"unknown side(s) {', '.join(sorted(unknown))}; choose from {', '.join(SIDES)}")
    if "reference" in args.sides.split(","):
        if args.reference_server is None:
            parser.error("the reference side needs --reference-server PATH (MedSAM-Agent's segmentation_api.py)")
        if not args.reference_server.is_file():
            parser.error(f"--reference-server {args.reference_server}: no such file")
        if args.tool != "sam2" or args.model_size not in (None, 1024):
            parser.error("the reference side runs MedSAM2 from the sam2 package's own config: --tool sam2, "
                         "no --model-size (its server has no way to set the input size)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role.startswith("serve-"):
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
    ensure_weights(args)
    images = [make_image(i, args.image_size) for i in range(args.images)]
    for side in chosen:
        if side in results:
            print(f"{side}: already measured in {args.out} (use --fresh to redo)", file=sys.stderr)
            continue
        print(f"{side}: running {args.images}x{args.sessions} sessions x {args.actions} actions", file=sys.stderr)
        results[side] = run_ideal_side(args) if side == "ideal" else run_http_side(args, side, images)
        results[side]["command"] = " ".join(["python", *sys.argv])
        if side == "replicas":
            results[side]["replicas"] = args.replicas
        summary = {}
        for other in ("reimplemented", "reference"):
            if "server" in results and other in results:
                summary[f"server_vs_{other}_throughput"] = round(speedup(results, other), 2)
        if "server" in results and "ideal" in results:
            summary["server_wall_over_ideal"] = round(results["server"]["wall_s"] / results["ideal"]["wall_s"], 3)
        atomic_write_json(args.out, {"settings": settings, "machine": machine(), "sides": results,
                                     "summary": summary})
    print_table(results)


if __name__ == "__main__":
    main()
