"""The demo's ablation table (Markdown, CSV, JSON; one seed or mean +- spread over seeds) and its
learning-curve plot (GRPO training reward and validation Dice over steps).

Column definitions (the evaluation summary's, :mod:`medseg_agent.evaluation.summary`):

- valid actions: share of replies the environment accepted (1 - format-error rate);
- reward: mean reward of the episodes under the run's reward (preset or YAML);
- Dice, IoU: of the final mask; turns: tool actions per episode; replies: model replies per episode
  (stop and invalid replies included);
- wasted: replies per episode that did not improve the mask (invalid replies, refused stops and
  actions raising IoU by less than 0.01);
- stop rate: share of episodes the policy ended with ``stop_action``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.io.atomic import atomic_write_json, atomic_write_text
from medseg_agent.vocabulary.actions import Stop

COLUMNS = (
    ("valid_action_rate", "valid actions"),
    ("reward", "reward"),
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("turns", "turns"),
    ("replies", "replies"),
    ("wasted", "wasted"),
    ("stop_rate", "stop rate"),
)
ROW_TITLES = {
    "base": "base (untrained)",
    "sft": "SFT",
    "rl": "SFT + RL",
    "expert": "expert (reference)",
    "box-only": "box-only (reference)",
    "clicker": "clicker (reference)",
}
USEFUL_GAIN = 0.01  # an action that raises IoU by less than this is a wasted turn


def wasted_turns(record: Any) -> int:
    """Replies of one episode that did not improve the mask (see the module docstring)."""
    wasted = 0
    previous = 0.0
    for turn in record.turns:
        if turn.error is not None:
            wasted += 1
        elif turn.action is not None and not isinstance(turn.action, Stop):
            current = turn.iou if turn.iou is not None else previous
            if current - previous < USEFUL_GAIN:
                wasted += 1
            previous = current
    return wasted


def row_metrics(name: str, records: Sequence[Any], reward: str) -> dict[str, Any]:
    """One table row from a policy's trajectory records."""
    from medseg_agent.evaluation.summary import aggregate, result_from_record
    from medseg_agent.rewards import score_record

    results = [result_from_record(f"{i}", record) for i, record in enumerate(records)]
    summary = aggregate(results)
    error_rate = summary["format_error_rate"]
    return {
        "row": name,
        "n": summary["n"],
        "valid_action_rate": None if error_rate is None else 1.0 - error_rate,
        "reward": float(np.mean([score_record(r, reward).total for r in records])) if records else None,
        "dice": summary["dice"],
        "iou": summary["iou"],
        "turns": summary["turns"],
        "replies": summary["replies"],
        "wasted": float(np.mean([wasted_turns(r) for r in records])) if records else None,
        "stop_rate": summary["stop_rate"],
    }


def format_value(value: float | None, spread: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if spread is None else f"{value:.3f} ± {spread:.3f}"


def row_title(row: dict[str, Any]) -> str:
    """A row's own ``title`` (a base model given with ``--base-model`` is not untrained), else its name's."""
    return row.get("title") or ROW_TITLES.get(row["row"], row["row"])


def markdown_table(rows: Sequence[dict[str, Any]], spread: bool = False) -> str:
    """Rows with plain values, or with ``<column>_std`` spreads when ``spread``."""
    head = ["stage", *[label for _, label in COLUMNS], "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [format_value(row[key], row.get(f"{key}_std") if spread else None) for key, _ in COLUMNS]
        lines.append(f"| {row_title(row)} | " + " | ".join(cells) + f" | {row['n']} |")
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    keys = list(rows[0]) if rows else []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_tables(rows: Sequence[dict[str, Any]], folder: Path, meta: dict[str, Any]) -> dict[str, Path]:
    """``table.md``, ``table.csv`` and ``table.json`` of one seed in ``folder``."""
    folder = Path(folder)
    paths = {"markdown": folder / "table.md", "csv": folder / "table.csv", "json": folder / "table.json"}
    atomic_write_text(paths["markdown"], markdown_table(rows))
    atomic_write_text(paths["csv"], _csv(rows))
    atomic_write_json(paths["json"], {"rows": list(rows), "meta": meta})
    return paths


def seed_rows(per_seed: dict[int, Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Mean and spread (population standard deviation) over seeds, row by row, in first-seed order."""
    names: list[str] = []
    for rows in per_seed.values():
        names += [r["row"] for r in rows if r["row"] not in names]
    out = []
    for name in names:
        members = [r for rows in per_seed.values() for r in rows if r["row"] == name]
        row: dict[str, Any] = {"row": name, "n": members[0]["n"], "seeds": len(members)}
        if "title" in members[0]:
            row["title"] = members[0]["title"]
        for key, _ in COLUMNS:
            values = [m[key] for m in members if m[key] is not None]
            row[key] = float(np.mean(values)) if values else None
            row[f"{key}_std"] = float(np.std(values)) if values else None
        out.append(row)
    return out


def write_seed_tables(
    per_seed: dict[int, Sequence[dict[str, Any]]], folder: Path, timings: dict[int, dict[str, float]]
) -> dict[str, Path]:
    """The over-seeds table (mean ± spread) in ``folder``: ``table.md``, ``.csv``, ``.json``."""
    rows = seed_rows(per_seed)
    folder = Path(folder)
    paths = {"markdown": folder / "table.md", "csv": folder / "table.csv", "json": folder / "table.json"}
    seeds = ", ".join(str(s) for s in per_seed)
    atomic_write_text(paths["markdown"], f"Mean ± spread (std) over seeds {seeds}\n\n" + markdown_table(rows, True))
    atomic_write_text(paths["csv"], _csv(rows))
    atomic_write_json(paths["json"], {"rows": rows, "per_seed": {str(s): r for s, r in per_seed.items()},
                                      "timings_s": {str(s): t for s, t in timings.items()}})
    return paths


def write_curve_plot(curves: dict[int, dict[str, Any]], path: Path) -> Path:
    """Two panels over GRPO steps: training reward (rollouts, and their Dice dashed) and validation Dice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for seed, curve in sorted(curves.items()):
        train = curve.get("train", [])
        if train:
            line = left.plot([p["step"] for p in train], [p["reward"] for p in train], label=f"reward, seed {seed}")
            dice = [(p["step"], p["dice"]) for p in train if p.get("dice") is not None]
            if dice:
                left.plot(*zip(*dice, strict=True), linestyle="--", color=line[0].get_color(), alpha=0.6,
                          label=f"rollout Dice, seed {seed}")
        val = curve.get("val", [])
        if val:
            right.plot([p["step"] for p in val], [p["dice"] for p in val], marker="o", label=f"seed {seed}")
    left.set(title="GRPO rollouts (train split)", xlabel="step", ylabel="mean per step")
    right.set(title="validation Dice (greedy, hf policy)", xlabel="step (0 = SFT model)", ylabel="Dice")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
