"""Grid search over the process weights of the ``medseg`` reward, on records of known quality.

How the ``medseg`` preset's weights were chosen (docs/training.md, "Choosing the weights"):
records from ``reward_sandbox_records.py`` are split by modality; every grid point is scored on
the selection split by J = (outcome-pair agreement + process-pair agreement) / 2 (see
:mod:`medseg_agent.rewards.compare`), and the best points are re-scored on the held-out split.
Every candidate shares the outcome block (0.8·Dice + 0.2·IoU, or 0.6·Dice + 0.2·IoU + 0.2·NSD)
and 0.1·format_valid + 0.9·max(..., 0) (no upper clip: a clip at 1 hides the process terms
exactly when the mask is perfect).

    python scripts/train/reward_weight_search.py --records runs/reward_sandbox --select MRI [--top 10]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from scipy.stats import spearmanr

from medseg_agent.rewards.compare import ScoredRecord, load_records, pair_agreement
from medseg_agent.rewards.facts import EpisodeFacts, episode_facts
from medseg_agent.rewards.presets import PRESETS, RewardSpec, TermGroup, score_facts

GRID = {
    "boundary_nsd": [0.0, 0.2],
    "improvement": [0.0, 0.1],
    "overshoot": [-0.5, -1.0],
    "turn_fraction": [0.0, -0.05, -0.1, -0.2],
    "redundant": [0.0, -0.03, -0.05],
    "click_correctness": [0.0, 0.02, 0.05],
    "stopping": [0.0, 0.03, 0.05, 0.1],
}


def candidate(weights: dict[str, float]) -> RewardSpec:
    outcome = {"outcome_dice": 0.8, "outcome_iou": 0.2}
    if weights["boundary_nsd"]:
        outcome = {"outcome_dice": 0.6, "outcome_iou": 0.2, "boundary_nsd": weights["boundary_nsd"]}
    process = {k: v for k, v in weights.items() if k != "boundary_nsd" and v}
    return RewardSpec(
        "candidate",
        terms={"format_valid": 0.1},
        groups={"quality": TermGroup(0.9, {**outcome, **process}, (0.0, None))},
    )


def evaluate(spec: RewardSpec, items: list[tuple[str, str, EpisodeFacts]]) -> tuple[float, float, float]:
    scored = [
        ScoredRecord(str(i), key, policy, f.final_dice, f.num_tool_turns, {spec.name: score_facts(f, spec).total})
        for i, (key, policy, f) in enumerate(items)
    ]
    outcome, _, process, _ = pair_agreement(scored, spec.name, 0.01)
    rho = spearmanr([s.rewards[spec.name] for s in scored], [s.dice for s in scored]).statistic
    return outcome, process, float(rho)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--select", default="MRI", help="modality whose records choose the weights")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    loaded = load_records(args.records)
    select, held_out = [], []
    for _, record, base in loaded.records:
        item = (f"{record.sample_id}/{record.target}", record.policy, episode_facts(record, base))
        (select if record.modality == args.select else held_out).append(item)
    print(f"{len(select)} selection records ({args.select}), {len(held_out)} held-out records")
    print("| reward | select: outcome / process / Spearman | held-out: outcome / process / Spearman |")
    print("|---|---|---|")

    def row(label: str, spec: RewardSpec) -> None:
        s, h = evaluate(spec, select), evaluate(spec, held_out)
        print(f"| {label} | " + " / ".join(f"{v:.3f}" for v in s) + " | " + " / ".join(f"{v:.3f}" for v in h) + " |")

    for name, spec in PRESETS.items():
        row(f"preset {name}", spec)
    results = []
    for values in itertools.product(*GRID.values()):
        weights = dict(zip(GRID, values, strict=True))
        o, p, rho = evaluate(candidate(weights), select)
        results.append(((o + p) / 2, rho, weights))
    results.sort(key=lambda r: (-r[0], -r[1]))
    for _, _, weights in results[: args.top]:
        row(", ".join(f"{k}={v:g}" for k, v in weights.items() if v), candidate(weights))


if __name__ == "__main__":
    main()
