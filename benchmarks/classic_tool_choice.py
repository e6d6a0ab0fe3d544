"""Choose the classic tool's algorithm by measurement.

Every candidate configuration of :class:`medseg_agent.tools.classic.ClassicTool` is run with the
project's simulated clicker (:func:`medseg_agent.policies.clicks.next_click`, RITM's rule: the
interior-most point of the larger error region, positive on a miss, negative on a leak, never an
earlier click), on the same cases:

* ``box`` protocol: the ground-truth bounding box, then up to ``--clicks`` corrective clicks; every
  turn sends the box, all clicks so far and the previous turn's ``logits`` as ``mask_input``.
* ``clicks`` protocol (no box): ``--point-clicks`` clicks from an empty mask (the first one at the
  object's interior-most point), as ``medseg-agent evaluate-tool`` does.

Reported per candidate and modality: mean IoU after the box and each click, after 1..5 clicks of the
clicks protocol, NoC@90 (clicks to IoU >= 0.9, capped at ``--point-clicks``), and the share of clicks
that lowered IoU by more than 0.02. Lesion cases are also grouped by size and contrast band, with the
IoU of the box itself used as the mask for reference. Latency: seconds per action (encode excluded:
paid once per image) on synthetic 512 and 1024 px images, mean and p95, wall and process CPU seconds.

Data (``--data``, several allowed): ``demo`` (the real demo dataset, built first when missing),
``synthetic`` (organ-like images, :mod:`classic_cases`), ``lesions`` (small synthetic lesions in real
MRI and CT-like backgrounds, and real DSB nuclei, :mod:`lesion_cases`); ``both`` = demo + synthetic.

    MEDSEG_AGENT_CACHE=/path/to/cache python benchmarks/classic_tool_choice.py --data demo synthetic lesions \\
        --out runs/classic_choice.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from classic_cases import Case, default_demo_dir, demo_cases, ensure_demo, synth_ct, synth_dermoscopy, synthetic_cases
from lesion_cases import lesion_cases, nuclei_cases

from medseg_agent.policies.clicks import next_click
from medseg_agent.tools.classic import ClassicTool
from medseg_agent.vocabulary.prompts import Prompt

# name -> ClassicTool options. Pure candidates use one algorithm for every turn; hybrids initialise
# from the box with one and refine (turns with a previous mask) with another.
CANDIDATES: dict[str, dict] = {
    "grabcut": {"method": "grabcut"},
    "random_walker": {"method": "random_walker"},
    "watershed": {"method": "watershed"},
    "grabcut>random_walker": {"method": "grabcut", "refine_method": "random_walker",
                              "click_method": "random_walker", "box_fallback": "watershed"},
    "grabcut>watershed, rw clicks": {"method": "grabcut", "refine_method": "watershed",
                                     "click_method": "random_walker", "box_fallback": "watershed"},
    "default": {},
}
DROP = 0.02  # a click "lowers IoU" when IoU falls by more than this


@dataclass
class Episode:
    """One case under one candidate: IoU after each turn of both protocols, seconds per action."""

    case: Case
    box: list[float]  # after the box, +1, ..., +clicks
    clicks: list[float]  # after click 1..point_clicks
    seconds: list[float]

    def drops(self) -> list[float]:
        """IoU lost by each corrective click (negative: gained)."""
        return [a - b for a, b in zip(self.box, self.box[1:], strict=False)] + [
            a - b for a, b in zip(self.clicks, self.clicks[1:], strict=False)
        ]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def gt_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def box_itself(mask: np.ndarray) -> float:
    """IoU of the ground-truth box used as the mask: what a box answer must not fall much below."""
    x1, y1, x2, y2 = gt_box(mask).astype(int)
    return float(mask.sum() / ((x2 - x1 + 1) * (y2 - y1 + 1)))


def run_protocol(
    tool: ClassicTool, emb, case: Case, protocol: str, n_clicks: int, cpu: list[float] | None = None
) -> tuple[list[float], list[float]]:
    """IoU after each turn (box then clicks, or clicks only) and the wall seconds of each action (its
    process CPU seconds appended to ``cpu`` when given)."""
    points: list[tuple[int, int]] = []
    labels: list[int] = []
    box = gt_box(case.mask) if protocol == "box" else None
    ious: list[float] = []
    seconds: list[float] = []
    pred = np.zeros(case.mask.shape, bool)
    logits = None
    turns = n_clicks + 1 if protocol == "box" else n_clicks
    for turn in range(turns):
        if protocol == "clicks" or turn > 0:
            click = next_click(pred, case.mask, points)
            if click is None:  # nothing left to correct: the score stays
                ious.append(ious[-1])
                continue
            points.append((click.x, click.y))
            labels.append(int(click.positive))
        prompt = Prompt(box=box, points=np.array(points, np.float32).reshape(-1, 2),
                        labels=np.array(labels, np.int64), mask_input=logits)
        t, c = time.perf_counter(), time.process_time()
        out = tool.decode(emb, prompt)
        seconds.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.process_time() - c)
        pred, logits = out.mask, out.logits
        ious.append(iou(pred, case.mask))
    return ious, seconds


def run_case(tool: ClassicTool, case: Case, n_clicks: int, point_clicks: int) -> Episode:
    emb = tool.encode(case.image)
    box, t1 = run_protocol(tool, emb, case, "box", n_clicks)
    clicks, t2 = run_protocol(tool, emb, case, "clicks", point_clicks)
    return Episode(case, box, clicks, t1 + t2)


def latency(tool: ClassicTool, size: int, n: int = 4, seed: int = 7) -> dict[str, float]:
    """Encode and per-action seconds on synthetic CT-like and RGB images of ``size`` x ``size``,
    both protocols, 4 clicks each: wall seconds, and the process's CPU seconds (the better estimate
    on a shared machine)."""
    rng = np.random.default_rng(seed)
    acts, encs, cpu = [], [], []
    for i in range(n):
        img, mask = (synth_ct if i % 2 == 0 else synth_dermoscopy)(rng, size)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        case = Case(img, mask, "latency", f"lat{i}")
        t = time.perf_counter()
        emb = tool.encode(img)
        encs.append(time.perf_counter() - t)
        acts += run_protocol(tool, emb, case, "box", 4, cpu)[1] + run_protocol(tool, emb, case, "clicks", 5, cpu)[1]
    return {
        "encode_s": round(statistics.mean(encs), 4),
        "mean_s": round(statistics.mean(acts), 4),
        "p95_s": round(float(np.percentile(acts, 95)), 4),
        "max_s": round(max(acts), 4),
        "cpu_mean_s": round(statistics.mean(cpu), 4),
        "cpu_p95_s": round(float(np.percentile(cpu, 95)), 4),
    }


# -- summaries -------------------------------------------------------------------------------------
def noc(ious: list[float], threshold: float) -> int:
    return next((i for i, v in enumerate(ious, start=1) if v >= threshold), len(ious))


def summarize(episodes: list[Episode]) -> dict:
    """Means over a group of episodes."""
    drops = [d for e in episodes for d in e.drops()]
    lowered = [d for d in drops if d > DROP]
    return {
        "n": len(episodes),
        "box_itself": round(float(np.mean([box_itself(e.case.mask) for e in episodes])), 4),
        "box": np.mean([e.box for e in episodes], axis=0).round(4).tolist(),
        "clicks": np.mean([e.clicks for e in episodes], axis=0).round(4).tolist(),
        "noc90": round(float(np.mean([noc(e.clicks, 0.9) for e in episodes])), 2),
        "fail90": int(sum(max(e.clicks) < 0.9 for e in episodes)),
        "lowered_share": round(len(lowered) / max(1, len(drops)), 4),
        "lowered_mean": round(float(np.mean(lowered)), 4) if lowered else 0.0,
        "action_s": round(float(np.mean([s for e in episodes for s in e.seconds])), 4),
    }


def groups(episodes: list[Episode], key: Callable[[Case], Iterable[str]]) -> dict[str, dict]:
    by: dict[str, list[Episode]] = defaultdict(list)
    for e in episodes:
        for k in key(e.case):
            by[k].append(e)
    return {k: summarize(v) for k, v in sorted(by.items())}


def lesion_keys(case: Case) -> list[str]:
    """A lesion case counts in its modality, its size band, its contrast band and the whole set."""
    if not case.tags:
        return []
    keys = ["all lesion cases", f"{case.modality}", f"size {case.tags['size']}"]
    if case.tags["contrast"] != "real":
        keys.append(f"contrast {case.tags['contrast']}")
    if case.modality == "MRI lesion*" and case.tags["size"] in ("5-10px", "10-20px"):
        keys.append("MRI lesion* < 20px")
    return keys


def evaluate(name: str, options: dict, cases: list[Case], n_clicks: int, point_clicks: int,
             sizes: list[int]) -> dict:
    tool = ClassicTool(**options)
    episodes = [run_case(tool, c, n_clicks, point_clicks) for c in cases]
    choice = [e for e in episodes if not e.case.tags]
    return {
        "name": name,
        "options": options,
        "modalities": groups(choice, lambda c: [c.modality]),
        "all choice cases": summarize(choice) if choice else None,
        "lesions": groups(episodes, lesion_keys),
        "latency": {str(s): latency(tool, s) for s in sizes},
    }


def _f(values: Iterable[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def tables(results: list[dict], n_clicks: int) -> str:
    lines: list[str] = []
    if any(r["modalities"] for r in results):
        lines += [f"| candidate | modality (n) | box protocol: box, +1..+{n_clicks} | clicks protocol: 1..5 clicks "
                  "| NoC@90 | clicks lowering IoU |", "|---|---|---|---|---|---|"]
        for r in results:
            rows = list(r["modalities"].items())
            if len(rows) > 1:
                rows.append(("**mean of modalities**", _mean_of(r["modalities"].values())))
            for label, m in rows:
                n = f" ({m['n']})" if "n" in m else ""
                lines.append(f"| {r['name']} | {label}{n} | {_f(m['box'])} | {_f(m['clicks'][:5])} | {m['noc90']:.2f} "
                             f"| {100 * m['lowered_share']:.1f} % |")
        lines.append("")
    if any(r["lesions"] for r in results):
        lines += [f"| candidate | group (n) | box itself | box, +1..+{n_clicks} | clicks only: mIoU@5, NoC@90 "
                  "(fail) | clicks lowering IoU > 0.02: share, mean drop |", "|---|---|---|---|---|---|"]
        for r in results:
            for label, m in r["lesions"].items():
                lines.append(f"| {r['name']} | {label} ({m['n']}) | {m['box_itself']:.3f} | {_f(m['box'])} | "
                             f"{m['clicks'][min(4, len(m['clicks']) - 1)]:.3f}, {m['noc90']:.2f} ({m['fail90']}) | "
                             f"{100 * m['lowered_share']:.1f} %, {m['lowered_mean']:.3f} |")
        lines.append("")
    if any(r["latency"] for r in results):
        sizes = list(results[0]["latency"])
        lines += ["| candidate | " + " | ".join(f"{s} px: action s mean / p95 / max (CPU s mean / p95); encode s"
                                              for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for r in results:
            lines.append(f"| {r['name']} | " + " | ".join(
                f"{v['mean_s']:.3f} / {v['p95_s']:.3f} / {v['max_s']:.3f} ({v['cpu_mean_s']:.3f} / "
                f"{v['cpu_p95_s']:.3f}); {v['encode_s']:.3f}" for v in r["latency"].values()) + " |")
    return "\n".join(lines)


def _mean_of(rows: Iterable[dict]) -> dict:
    rows = list(rows)
    return {
        "box": np.mean([m["box"] for m in rows], axis=0),
        "clicks": np.mean([m["clicks"] for m in rows], axis=0),
        "noc90": float(np.mean([m["noc90"] for m in rows])),
        "lowered_share": float(np.mean([m["lowered_share"] for m in rows])),
    }


def load_cases(args: argparse.Namespace) -> list[Case]:
    wanted = set(args.data)
    if "both" in wanted:
        wanted |= {"demo", "synthetic"}
    cases: list[Case] = []
    if "demo" in wanted:
        root = ensure_demo(args.demo_dir)
        if root is None:
            print(f"demo data not available at {args.demo_dir}: going on without it", file=sys.stderr)
        else:
            cases.extend(demo_cases(root, args.demo_limit))
    if "synthetic" in wanted:
        cases.extend(synthetic_cases(args.per_modality))
    if "lesions" in wanted:
        cases.extend(lesion_cases(args.per_band, seed=args.seed))
        cases.extend(nuclei_cases(args.nuclei, seed=args.seed))
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", choices=("demo", "synthetic", "lesions", "both"), default=["both"])
    ap.add_argument("--demo-dir", type=Path, default=None, help="demo folder (default: the cache's)")
    ap.add_argument("--per-modality", type=int, default=12, help="synthetic cases per modality")
    ap.add_argument("--demo-limit", type=int, default=None, help="at most this many demo cases per modality")
    ap.add_argument("--per-band", type=int, default=4, help="lesion cases per (kind, size band, contrast band)")
    ap.add_argument("--nuclei", type=int, default=24, help="real DSB nuclei among the lesion cases")
    ap.add_argument("--seed", type=int, default=0, help="seed of the lesion cases")
    ap.add_argument("--clicks", type=int, default=4, help="corrective clicks after the box")
    ap.add_argument("--point-clicks", type=int, default=20, help="clicks of the clicks-only protocol")
    ap.add_argument("--sizes", type=int, nargs="*", default=[512, 1024], help="image sides of the latency run")
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES),
                    help="names from CANDIDATES, or LABEL=JSON options for an ad-hoc candidate")
    ap.add_argument("--out", type=Path, default=None, help="JSON with every number of the tables")
    args = ap.parse_args(argv)
    if args.demo_dir is None:
        args.demo_dir = default_demo_dir()

    cases = load_cases(args)
    print(f"{len(cases)} cases: " + ", ".join(
        f"{m} {sum(c.modality == m for c in cases)}" for m in sorted({c.modality for c in cases})), file=sys.stderr)
    results = []
    for name in args.candidates:
        if "=" in name:
            name, spec = name.split("=", 1)
            options = json.loads(spec)
        else:
            options = CANDIDATES[name]
        t = time.perf_counter()
        results.append(evaluate(name, options, cases, args.clicks, args.point_clicks, args.sizes))
        print(f"{name}: done in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
    print(tables(results, args.clicks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
