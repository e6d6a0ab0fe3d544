"""Where the tool server's batched decode spends its time, piece by piece, on any device.

The server answers every action with one row of ``Sam2Tool.decode_encoded`` (the rows that wait
together go through one call). This runs that call outside the server, on the rollout benchmark's
images and prompts (``benchmarks/rollout_server.py``: the same synthetic scans, the same jittered
boxes, the same click rule, the same seed-0 random ``sam2.1_hiera_t`` checkpoint), so that a slow
server can be told apart from a slow model, a slow host path or a slow client:

* batches of ``--batches`` rows of two structures, as the workload sends them: a box (step 1) and
  a box, one click and the previous logits (step 2), the rows taken from all ``--images`` images
  in turn (one embedding per row, as the server batches them);
* per batch size and structure: the **first** call at that shape (a device may build kernels or
  plans per shape), all first calls timed in a pass of their own before anything is profiled (a
  profile leaves thousands of Python objects for the collector), and the median of ``--repeats``
  more: wall time and this thread's CPU time per
  batch (on a GPU a synchronisation spins, so waiting counts as CPU), then one call under
  ``torch.profiler``: CPU and device time of each piece (the ``medseg.decode.*`` ranges of
  :data:`medseg_agent.tools.sam_family.DECODE_RANGES`: prompts, model, upsample, runs, rows) and the
  number of operator calls (kernel launches, on a GPU);
* with ``--contend F``, the same calls again while another thread runs pure Python for a share F
  of every 2 ms, as the server's event loop does beside its model thread: a forward bound by
  launching operators needs the interpreter lock between them, so this shows what the event loop's
  work costs the model thread;
* per row: runs in the mask, characters of its RLE; the client's work per action (RLE decoding
  and the click rule), for these masks and for the zero-cost tool's;
* the ``ideal`` side's call: ``tool.decode`` of one prompt, the whole mask copied to the host;
* with ``--cuda-graphs``, every batch again with the prompt encoder and mask decoder replayed from
  CUDA graphs (one per shape, captured at the first call), and how far those answers are from the
  eager ones (pixels of each mask that differ, logits' largest difference).

    python benchmarks/decode_profile.py --device cuda                    # on a GPU (the issue-12 check)
    python benchmarks/decode_profile.py --images 2 --batches 1,8,32 --repeats 1   # on a CPU
    python benchmarks/decode_profile.py --device cuda --contend 0.5               # the event loop's share
    python benchmarks/decode_profile.py --device cuda --cuda-graphs               # graphs against eager
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # rollout_server, zero_cost_tool

import rollout_server  # noqa: E402
import zero_cost_tool  # noqa: E402

from medseg_agent.io.atomic import atomic_write_json  # noqa: E402
from medseg_agent.io.masks import decode_rle, run_boundaries  # noqa: E402
from medseg_agent.tools.base import EncodedPrediction, SegmentationTool  # noqa: E402
from medseg_agent.tools.sam_family import DECODE_RANGES  # noqa: E402
from medseg_agent.vocabulary.prompts import Prompt  # noqa: E402

DEFAULT_OUT = Path("runs/benchmarks/decode_profile.json")
STRUCTURES = ("box", "box+click+logits")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--images", type=int, default=8, help="distinct images the rows are taken from")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the square test images (pixels)")
    parser.add_argument("--batches", default="1,2,4,8,16,19,32", help="comma-separated batch sizes (rows per call)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size after the first")
    parser.add_argument("--precision", default=None, choices=["fp32", "tf32", "bf16"],
                        help="sam2 precision (default: the tool's own, bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--model-size", type=int, default=None, help="sam2 input size override (MedSAM2: 512)")
    parser.add_argument("--tool-max-batch", type=int, default=None,
                        help="rows per decoder call (default: the tool's own, 32 on CUDA, 16 on CPU)")
    parser.add_argument("--contend", type=float, default=0.0,
                        help="also time the calls beside a thread running pure Python this share (0-1) of "
                             "every 2 ms (default 0: not measured)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="also time every batch with the decoder replayed from CUDA graphs, and compare "
                             "their answers with the eager ones (needs --device cuda)")
    parser.add_argument("--trace", type=Path, default=None,
                        help="also write a Chrome trace of one call of the largest batch to this file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = sorted({int(b) for b in args.batches.split(",")})
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if args.batch_sizes[0] < 1 or args.images < 1 or args.repeats < 1:
        parser.error("--batches, --images and --repeats must be >= 1")
    if args.cuda_graphs and not args.device.startswith("cuda"):
        parser.error(f"--cuda-graphs needs --device cuda, got --device {args.device}")
    if not 0.0 <= args.contend < 1.0:
        parser.error(f"--contend is a share of the time in [0, 1), got {args.contend}")
    return args


def model_args(args: argparse.Namespace) -> argparse.Namespace:
    """The rollout benchmark's options for its sam2 model, so both load the same checkpoint."""
    return argparse.Namespace(tool="sam2", device=args.device, precision=args.precision,
                              model_size=args.model_size, mask_runs="device", tool_max_batch=args.tool_max_batch,
                              bucket_batches="off",  # every batch size as asked, unpadded
                              cuda_graphs=False)  # --cuda-graphs switches them on after the eager pass


def workload_prompts(tool: SegmentationTool, embeddings: list[Any], truths: list[np.ndarray],
                     rows: int) -> dict[str, list[tuple[Any, Prompt]]]:
    """``rows`` requests of each structure: row r is rollout r // images of image r % images, with
    the rollout benchmark's jittered box; its click comes from the click rule on its box's mask."""
    boxes = []
    for row in range(rows):
        index, rollout = row % len(embeddings), row // len(embeddings)
        boxes.append((embeddings[index], Prompt(box=rollout_server.jittered_box(truths[index], 97 * index + rollout))))
    first = tool.decode_many(boxes)
    clicks = []
    for row, ((embedding, prompt), prediction) in enumerate(zip(boxes, first, strict=True)):
        point, positive = rollout_server.next_point(prediction.mask, truths[row % len(truths)], [])
        clicks.append((embedding, Prompt(box=prompt.box, points=[point], labels=[1 if positive else 0],
                                         mask_input=prediction.logits)))
    return {"box": boxes, "box+click+logits": clicks}


def timed(call: Any) -> tuple[float, float, Any]:
    """(wall seconds, this thread's CPU seconds, result) of ``call()``."""
    wall, cpu = time.perf_counter(), time.thread_time()
    result = call()
    return time.perf_counter() - wall, time.thread_time() - cpu, result


def profiled(call: Any, device: str, trace: Path | None) -> dict[str, Any]:
    """CPU and device milliseconds of each decode range, and the operator calls, of one ``call()``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
    ranges: dict[str, dict[str, float]] = {}
    operators = 0
    for event in prof.key_averages():
        if event.key in DECODE_RANGES:
            device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)
            ranges[event.key] = {"cpu_ms": round(event.cpu_time_total / 1000, 3),
                                 "device_ms": round(device_us / 1000, 3)}
        elif event.key.startswith("aten::"):
            operators += event.count
    return {"ranges": ranges, "aten_calls": operators}


@contextlib.contextmanager
def python_load(share: float, period_s: float = 0.002) -> Iterator[None]:
    """A thread holding the interpreter in pure Python for ``share`` of every ``period_s``, as an
    event loop answering requests does beside the model thread; nothing with ``share`` 0."""
    if share <= 0:
        yield
        return
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            until = time.perf_counter() + share * period_s
            while time.perf_counter() < until:
                pass
            time.sleep((1 - share) * period_s)

    thread = threading.Thread(target=spin, name="python-load", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def median_call(call: Any, repeats: int) -> tuple[float, float]:
    """Median wall and thread-CPU seconds of ``repeats`` calls."""
    times = [timed(call)[:2] for _ in range(repeats)]
    return statistics.median(w for w, _ in times), statistics.median(c for _, c in times)


def measure_batches(tool: SegmentationTool, prompts: dict[str, list[Any]], args: argparse.Namespace) -> list[dict]:
    shapes = [(structure, size) for structure in STRUCTURES for size in args.batch_sizes]
    calls = {shape: (lambda r=prompts[shape[0]][: shape[1]]: tool.decode_encoded(r)) for shape in shapes}
    firsts = {}
    for shape in shapes:
        gc.collect()
        firsts[shape] = timed(calls[shape])[:2]
    rows = []
    for structure, size in shapes:
        call = calls[structure, size]
        wall, cpu = median_call(call, args.repeats)
        first_wall, first_cpu = firsts[structure, size]
        row = {"structure": structure, "rows": size, "first_call_ms": round(1000 * first_wall, 2),
               "first_call_cpu_ms": round(1000 * first_cpu, 2), "batch_ms": round(1000 * wall, 2),
               "batch_cpu_ms": round(1000 * cpu, 2), "ms_per_row": round(1000 * wall / size, 3),
               "cpu_ms_per_row": round(1000 * cpu / size, 3)}
        if args.contend:
            with python_load(args.contend):
                row["contended_batch_ms"] = round(1000 * median_call(call, args.repeats)[0], 2)
        trace = args.trace if args.trace and size == args.batch_sizes[-1] and structure == STRUCTURES[-1] else None
        rows.append({**row, **profiled(call, args.device, trace)})
        contended = f", beside Python load {row['contended_batch_ms']:.1f} ms" if args.contend else ""
        print(f"{structure:17s} x{size:3d}: first {1000 * first_wall:8.1f} ms, then {1000 * wall:8.1f} ms "
              f"({1000 * wall / size:.2f} ms/row, CPU {1000 * cpu / size:.2f} ms/row){contended}", file=sys.stderr)
    return rows


def graphs_against_eager(tool: Any, prompts: dict[str, list[Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The batches again with the tool's decoder replayed from CUDA graphs, and how far the graphs'
    answers are from the eager ones for the largest batch of each structure."""
    size = args.batch_sizes[-1]
    eager = {structure: tool.decode_encoded(prompts[structure][:size]) for structure in STRUCTURES}
    tool.decoder.enabled = True
    try:  # what runs after this pass (the masks' costs, the ideal side's call) runs eagerly again
        batches = measure_batches(tool, prompts, args)
        graphed = {structure: tool.decode_encoded(prompts[structure][:size]) for structure in STRUCTURES}
    finally:
        tool.decoder.enabled = False
    worst_pixels, worst_logits = 0.0, 0.0
    for structure in STRUCTURES:
        for a, b in zip(eager[structure], graphed[structure], strict=True):
            # as a share of the eager mask's area (of one pixel when it is empty: a difference still shows)
            differ = np.count_nonzero(decode_rle(a.rle) != decode_rle(b.rle)) / max(a.area, 1)
            worst_pixels = max(worst_pixels, differ)
            worst_logits = max(worst_logits, float(np.abs(a.logits - b.logits).max()))
    return {"batches": batches, "graphs": tool.decoder.graphs, "eager_calls": tool.decoder.eager_calls,
            "agreement": {"rows": len(STRUCTURES) * size, "mask_pixels_differing_max_fraction": round(worst_pixels, 5),
                          "logits_abs_diff_max": round(worst_logits, 4)}}


def mask_costs(answers: list[EncodedPrediction], truths: list[np.ndarray]) -> dict[str, float]:
    """Runs and RLE size of each answer's mask, and what a client spends per answer: RLE decoding
    and the click rule (thread CPU milliseconds)."""
    runs, chars, decoding, clicking = [], [], 0.0, 0.0
    for row, answer in enumerate(answers):
        _, cpu, mask = timed(lambda a=answer: decode_rle(a.rle))
        decoding += cpu
        _, cpu, _ = timed(lambda m=mask, r=row: rollout_server.next_point(m, truths[r % len(truths)], []))
        clicking += cpu
        runs.append(len(run_boundaries(mask)))
        chars.append(len(json.dumps(answer.rle)))
    count = len(answers)
    pixels = float(np.prod(answers[0].rle["size"]))
    return {"masks": count, "runs_median": int(statistics.median(runs)), "runs_max": int(max(runs)),
            "rle_json_chars_median": int(statistics.median(chars)), "rle_json_chars_max": int(max(chars)),
            "area_fraction_median": round(statistics.median(a.area for a in answers) / pixels, 4),
            "client_rle_decode_cpu_ms": round(1000 * decoding / count, 3),
            "client_click_rule_cpu_ms": round(1000 * clicking / count, 3)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    options = model_args(args)
    rollout_server.ensure_weights(options)
    tool = rollout_server.build_model(options)
    images = [rollout_server.make_image(i, args.image_size) for i in range(args.images)]
    truths = [gt for _, gt in images]
    embeddings = []
    encode_seconds = []
    for image, _ in images:
        wall, _, embedding = timed(lambda i=image: tool.encode(i))
        embeddings.append(embedding)
        encode_seconds.append(wall)
    prompts = workload_prompts(tool, embeddings, truths, args.batch_sizes[-1])
    # the process's own first-call costs (a lone click: a structure the batches below never use)
    tool.decode_encoded([(embeddings[0], Prompt(points=[[5.0, 5.0]], labels=[1]))])
    batches = measure_batches(tool, prompts, args)
    graphs = graphs_against_eager(tool, prompts, args) if args.cuda_graphs else None

    largest = prompts["box+click+logits"]
    answers = tool.decode_encoded(largest)
    zero = zero_cost_tool.ZeroCostTool()
    zero_embedding = zero.encode(images[0][0])
    zero_answers = zero.decode_encoded([(zero_embedding, prompt) for _, prompt in largest])
    ideal = [timed(lambda r=request: tool.decode(*r)) for request in largest[: max(1, args.repeats)] * 2]
    ideal = ideal[len(ideal) // 2:]  # the second round: shapes seen once already
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "trace")},
        "machine": rollout_server.machine(),
        "encode_ms_median": round(1000 * statistics.median(encode_seconds[1:] or encode_seconds), 1),
        "batches": batches,
        "masks": {"sam2": mask_costs(answers, truths), "zero-cost": mask_costs(zero_answers, truths)},
        "ideal_decode": {"ms": round(1000 * statistics.median(w for w, _, _ in ideal), 2),
                         "cpu_ms": round(1000 * statistics.median(c for _, c, _ in ideal), 2)},
        "command": " ".join(["python", *sys.argv]),
    }
    if graphs is not None:
        result["cuda_graphs"] = graphs
    atomic_write_json(args.out, result)
    print_table(result)
    if graphs is not None:
        print_table({**result, "batches": graphs["batches"]}, "with the decoder replayed from CUDA graphs")
        print(f"CUDA graphs against eager: {graphs['agreement']}; graphs {graphs['graphs']}, "
              f"eager calls {graphs['eager_calls']}")


def print_table(result: dict[str, Any], how: str = "eager") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Sam2Tool.decode_encoded, piece by piece (ms per batch; profiled call), {how}")
    contended = any("contended_batch_ms" in row for row in result["batches"])
    titles = ("rows", "structure", "first call", "batch", "CPU", "per row", *(("beside load",) if contended else ()),
              *DECODE_RANGES, "aten calls")
    for title in titles:
        table.add_column(title.replace("medseg.decode.", ""), justify="right")
    for row in result["batches"]:
        pieces = [f"{row['ranges'].get(name, {}).get('cpu_ms', 0):.1f} / "
                  f"{row['ranges'].get(name, {}).get('device_ms', 0):.1f}" for name in DECODE_RANGES]
        loaded = (f"{row['contended_batch_ms']:.1f}",) if contended else ()
        table.add_row(str(row["rows"]), row["structure"], f"{row['first_call_ms']:.1f}", f"{row['batch_ms']:.1f}",
                      f"{row['batch_cpu_ms']:.1f}", f"{row['ms_per_row']:.2f}", *loaded, *pieces,
                      str(row["aten_calls"]))
    console = Console(width=220)
    console.print(table)
    console.print("pieces: CPU ms / device ms inside each range (device time is 0 on a CPU)")
    if how != "eager":
        return
    for name, costs in result["masks"].items():
        console.print(f"{name} masks: {costs}")
    console.print(f"ideal side's decode (one prompt, whole mask to the host): {result['ideal_decode']}; "
                  f"encode: {result['encode_ms_median']} ms")


if __name__ == "__main__":
    main()
