"""Measure the simulated expert against two naive baselines, and choose its defaults (delta, epsilon, tau).

Policies, all on the same samples with the same tool (default: the demo dataset, ``classic`` tool):

* ``box only``: one box from the tight ground-truth bounding box, then stop (1 action);
* ``clicker x5``: the plain RITM clicker (:class:`~medseg_agent.policies.clicker.ClickerPolicy`),
  5 clicks from an empty mask, never stopping early;
* ``expert``: the hybrid expert with its defaults (5-action limit, the seed the generator gives a
  sample's first trajectory, the random share of the other first strategy included); ``expert (no
  random share)``: the same with the rule's first strategy always;
* ``expert (clicks mode)``: the IBISAgent recipe (empty start, clicker rule, stop at IoU >= 0.8,
  at most 20 clicks), for comparison of the two published recipes;
* with ``--sweep``: the hybrid expert (no random share) for every (delta, epsilon, tau) of a small
  grid, ``first_min_iou`` 0 and 0.3 besides its default 0.5, and the expert without its two-step
  look-ahead.

Reported per policy: mean final Dice and IoU, mean turns (tool-running actions; a stop is not
counted), NoC@85 / NoC@90 (1-based index of the first action whose mask reaches the IoU; an
episode that never reaches it counts as its turn limit, as RITM counts 20) and how many samples
never reach it. Default selection rule: among the sweep's settings whose mean final IoU is within
0.005 of the best one, the one with the fewest mean turns.

Results go to a resumable store (``--out``, one line per policy x sample), so a killed run continues
where it stopped; the tables are printed as Markdown and written next to it.

    python benchmarks/expert_vs_baselines.py --sweep --workers 2 --out runs/expert_vs_baselines
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from medseg_agent.data import open_dataset
from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.experts.generate import run_expert_episode, trajectory_seed
from medseg_agent.policies.box import BoxOnlyPolicy
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.runner import run_episode
from medseg_agent.runs.parallel import run_jobs
from medseg_agent.runs.store import ResultStore
from medseg_agent.tools.registry import build_tool
from medseg_agent.vocabulary.sample import Sample

DELTAS = (0.02, 0.05, 0.1, 0.2)
EPSILONS = (0.0, 0.005, 0.01)
TAUS = (0.85, 0.9)
FIRST_MIN_IOUS = (0.0, 0.3)  # ablation around the default 0.5, at the default delta, epsilon, tau


def policies(sweep: bool) -> dict[str, dict[str, Any]]:
    """name -> {"kind": box|clicker|expert, "turns": episode limit, "options": expert options}."""
    out: dict[str, dict[str, Any]] = {
        "box only": {"kind": "box", "turns": 5},
        "clicker x5": {"kind": "clicker", "turns": 5},
        "expert": {"kind": "expert", "turns": 5, "options": {}},
        "expert (no random share)": {"kind": "expert", "turns": 5, "options": {"other_share": 0.0}},
        "expert (clicks mode)": {"kind": "expert", "turns": 20, "options": {"mode": "clicks"}},
    }
    if sweep:  # without the random share of the other strategy, so that only the thresholds vary
        for delta, epsilon, tau in itertools.product(DELTAS, EPSILONS, TAUS):
            options = {"delta": delta, "epsilon": epsilon, "tau": tau, "other_share": 0.0}
            out[f"sweep d={delta} e={epsilon} t={tau}"] = {"kind": "expert", "turns": 5, "options": options}
        for first in FIRST_MIN_IOUS:
            options = {"first_min_iou": first, "other_share": 0.0}
            out[f"first_min_iou={first}"] = {"kind": "expert", "turns": 5, "options": options}
        options = {"lookahead": False, "other_share": 0.0}
        out["no two-step look-ahead"] = {"kind": "expert", "turns": 5, "options": options}
    return out


def _setup(data: str, tool: str) -> dict[str, Any]:
    samples = {f"{s.dataset}/{s.sample_id}": s for s in open_dataset(data)}
    return {"tool": build_tool(tool), "samples": samples}


def _work(specs: dict[str, dict[str, Any]], state: dict[str, Any], job: tuple[str, str]) -> dict[str, Any]:
    name, key = job
    spec = specs[name]
    sample: Sample = state["samples"][key]
    env = SegmentationEnv(state["tool"], EpisodeConfig(max_turns=spec["turns"]))
    if spec["kind"] == "expert":
        from medseg_agent.experts.expert import ExpertPolicy

        options = dict(spec["options"])
        expert = ExpertPolicy(options.pop("mode", "hybrid"), **options)
        record = run_expert_episode(env, expert, sample, seed=trajectory_seed(0, key, 0))
    else:
        policy = BoxOnlyPolicy() if spec["kind"] == "box" else ClickerPolicy(stop_iou=None)
        record = run_episode(env, policy, sample)
    return {
        "policy": name,
        "sample": key,
        "modality": sample.modality,
        "trace": record.iou_trace(),
        "iou": record.final_metrics["iou"],
        "dice": record.final_metrics["dice"],
        "turns": record.num_interactions,
        "limit": spec["turns"],
        "stop": record.stop_reason,
    }


def noc(trace: list[float], threshold: float, limit: int) -> tuple[int, bool]:
    """(NoC, reached): first 1-based action reaching ``threshold``, else ``limit``."""
    for index, value in enumerate(trace, start=1):
        if value >= threshold:
            return index, True
    return limit, False


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    n85 = [noc(r["trace"], 0.85, r["limit"]) for r in rows]
    n90 = [noc(r["trace"], 0.90, r["limit"]) for r in rows]
    return {
        "samples": len(rows),
        "dice": statistics.fmean(r["dice"] for r in rows),
        "iou": statistics.fmean(r["iou"] for r in rows),
        "turns": statistics.fmean(r["turns"] for r in rows),
        "noc85": statistics.fmean(v for v, _ in n85),
        "noc90": statistics.fmean(v for v, _ in n90),
        "fail85": sum(not ok for _, ok in n85),
        "fail90": sum(not ok for _, ok in n90),
    }


def markdown(table: dict[str, dict[str, float]]) -> str:
    lines = [
        "| policy | Dice | IoU | turns | NoC@85 | NoC@90 | never 85 | never 90 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in table.items():
        lines.append(
            f"| {name} | {s['dice']:.3f} | {s['iou']:.3f} | {s['turns']:.2f} | {s['noc85']:.2f} | "
            f"{s['noc90']:.2f} | {s['fail85']}/{s['samples']} | {s['fail90']}/{s['samples']} |"
        )
    return "\n".join(lines)


def choose(table: dict[str, dict[str, float]], names: list[str], tolerance: float = 0.005) -> str | None:
    """Among ``names``, the fewest mean turns of those within ``tolerance`` of the best mean IoU."""
    rows = {k: table[k] for k in names if k in table}
    if not rows:
        return None
    best = max(v["iou"] for v in rows.values())
    close = [k for k, v in rows.items() if v["iou"] >= best - tolerance]
    return min(close, key=lambda k: (rows[k]["turns"], -rows[k]["iou"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=None, help="dataset folder (default: the demo dataset, built if needed)"
    )
    parser.add_argument("--tool", default="classic")
    parser.add_argument("--out", default="runs/expert_vs_baselines", help="folder for results (resumable)")
    parser.add_argument("--sweep", action="store_true", help="also sweep delta, epsilon, tau")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    data = args.data
    if data is None:
        from medseg_agent.data.demo import build_demo_dataset, default_demo_dir

        data = str(build_demo_dataset(default_demo_dir()))
    specs = policies(args.sweep)
    keys = [f"{s.dataset}/{s.sample_id}" for s in open_dataset(data)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "results.jsonl")
    jobs = [(f"{name}|{key}", (name, key)) for name in specs for key in keys]
    run_jobs(
        jobs,
        partial(_setup, data, args.tool),
        partial(_work, specs),
        store,
        workers=args.workers,
        description="expert vs baselines",
    )
    by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in store.rows():
        if row["policy"] in specs and row["sample"] in keys:
            by_policy[row["policy"]].append(row)
    table = {name: summarize(by_policy[name]) for name in specs if by_policy[name]}
    by_modality = {
        f"{name} — {modality}": summarize([r for r in by_policy[name] if r["modality"] == modality])
        for name in ("box only", "clicker x5", "expert")
        for modality in sorted({r["modality"] for r in by_policy[name]})
    }
    chosen = choose(table, [k for k in table if k.startswith("sweep ")])  # the (delta, epsilon, tau) grid
    first = choose(table, [f"first_min_iou={v}" for v in FIRST_MIN_IOUS] + ["expert (no random share)"])
    text = (
        f"## {args.tool} tool, {len(keys)} samples\n\n{markdown(table)}\n\n"
        f"### per modality\n\n{markdown(by_modality)}\n"
    )
    if chosen:
        text += f"\nchosen (delta, epsilon, tau) (best IoU within 0.005, then fewest turns): {chosen}\n"
        text += f"chosen first_min_iou (same rule; 'expert (no random share)' is the default): {first}\n"
    print(text)
    (out / "table.md").write_text(text)
    summary = {"table": table, "by_modality": by_modality, "chosen": chosen, "first_min_iou": first}
    (out / "table.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
