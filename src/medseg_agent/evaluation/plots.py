"""Evaluation plots (matplotlib, no display needed): IoU after each action, Dice per modality."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from medseg_agent.evaluation.summary import SampleResult, iou_by_action


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works on headless machines and in workers
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write to a temporary name in the same folder, then rename: no half-written PNG after a kill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    return path


def plot_iou_per_action(results: Sequence[SampleResult], max_actions: int, path: str | Path) -> Path:
    """Mean IoU after action k, one curve per modality, the overall mean dashed."""
    plt = pyplot()
    curves = iou_by_action(results, max_actions)
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = list(range(1, max_actions + 1))
    for name, values in curves.items():
        if name == "all":
            ax.plot(steps, values, "k--", linewidth=2, label="all")
        else:
            ax.plot(steps, values, marker="o", label=name)
    ax.set_xlabel("action")
    ax.set_ylabel("mean IoU")
    ax.set_xticks(steps)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title("IoU after each action")
    if curves:
        ax.legend(fontsize=8)
    path = save_figure(fig, Path(path))
    plt.close(fig)
    return path


def plot_dice_by_modality(results: Sequence[SampleResult], path: str | Path) -> Path:
    """Dice distribution per modality: box plot with every sample drawn on top."""
    plt = pyplot()
    import numpy as np

    groups: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.scored:
            groups[r.modality].append(float(r.dice))
    names = sorted(groups)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 4))
    if names:
        ax.boxplot([groups[n] for n in names], showfliers=False)
        rng = np.random.default_rng(0)
        for index, name in enumerate(names, start=1):
            values = groups[name]
            ax.scatter(index + rng.uniform(-0.12, 0.12, len(values)), values, s=10, alpha=0.6)
        ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(groups[n])})" for n in names])
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Dice per modality")
    path = save_figure(fig, Path(path))
    plt.close(fig)
    return path
