"""Does the two-stage recipe learn? ``train demo`` over several seeds, and the claims checked on its table.

    python benchmarks/train_demo_seeds.py --out runs/train-demo-seeds            # seeds 0,1,2
    python benchmarks/train_demo_seeds.py --out runs/x --seeds 0,1 --set rl_steps=30

Each seed is a full ``medseg-agent train demo`` run (its own model init, SFT shuffling and GRPO
sampling; the synthetic data and the expert trajectories are shared). The claims, on the test split,
mean over seeds, "spread" = the standard deviation over seeds:

1. base model: Dice about 0 (< 0.05);
2. after SFT: valid-action rate >= 0.95 and Dice >= 0.5;
3. after GRPO: mean reward and Dice above the SFT model's by more than the larger of the two rows'
   spreads, and fewer wasted turns.

The table's columns (per stage): valid actions, reward, Dice, IoU, turns (tool actions), replies,
wasted (replies that did not raise IoU), stop rate, n (test images).

Writes ``claims.json`` and the tables (``table.md``, ``.csv``, ``.json``) into ``--out``; prints both.
A finished seed is skipped on a rerun (every stage of ``train demo`` resumes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from medseg_agent.io.atomic import atomic_write_json
from medseg_agent.recipes.train_demo import PRESETS, DemoOptions, run_demo_seeds, settings_with
from medseg_agent.recipes.train_demo_report import markdown_table, seed_rows


def check_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The learning claims as (claim, measured, holds) rows, from the over-seeds table."""
    by = {r["row"]: r for r in rows}
    base, sft, rl = by.get("base"), by.get("sft"), by.get("rl")
    claims = []

    def claim(text: str, measured: str, holds: bool) -> None:
        claims.append({"claim": text, "measured": measured, "holds": bool(holds)})

    if base:
        claim("base model Dice < 0.05", f"{base['dice']:.3f}", base["dice"] < 0.05)
    if sft:
        claim("SFT valid-action rate >= 0.95", f"{sft['valid_action_rate']:.3f}", sft["valid_action_rate"] >= 0.95)
        claim("SFT Dice >= 0.5", f"{sft['dice']:.3f} ± {sft['dice_std']:.3f}", sft["dice"] >= 0.5)
    if sft and rl:
        for key in ("reward", "dice"):
            spread = max(sft[f"{key}_std"], rl[f"{key}_std"])
            gain = rl[key] - sft[key]
            claim(f"GRPO {key} above SFT by more than the seed spread", f"{gain:+.3f} (spread {spread:.3f})",
                  gain > spread)
        claim("GRPO wastes fewer turns than SFT", f"{sft['wasted']:.2f} -> {rl['wasted']:.2f}",
              rl["wasted"] < sft["wasted"])
    return claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/train-demo-seeds"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--reward", default="medseg")
    parser.add_argument("--size", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--set", action="append", default=[], help="a demo setting, e.g. rl_steps=30")
    args = parser.parse_args()
    import yaml

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    options = DemoOptions(out=args.out, settings=settings_with(PRESETS[args.size], overrides), reward=args.reward)
    seeds = [int(s) for s in args.seeds.split(",")]
    outcome = run_demo_seeds(options, seeds)
    rows = seed_rows({s: r.rows for s, r in outcome["results"].items()})
    claims = check_claims(rows)
    timings = {str(s): r.timings for s, r in outcome["results"].items()}
    atomic_write_json(args.out / "claims.json", {"seeds": seeds, "claims": claims, "timings_s": timings})
    print(markdown_table(rows, spread=True))
    for c in claims:
        print(f"[{'x' if c['holds'] else ' '}] {c['claim']}: {c['measured']}")
    print(json.dumps({s: round(t["total"]) for s, t in timings.items()}),
          "seconds per seed in this invocation (finished stages are skipped; each stage's own time is "
          "`stage_seconds` in seed-N/demo.json)")


if __name__ == "__main__":
    main()
