"""What a generation run produced: counts, turns, final IoU/Dice and actions, overall and per group."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from medseg_agent.environment.record import TrajectoryRecord
from medseg_agent.experts.generate import StoredSample
from medseg_agent.vocabulary.actions import Action, AddPoint


def action_label(action: Action) -> str:
    """``add_bbox``, ``add_point:positive``, ``add_point:negative`` or ``stop_action``."""
    if isinstance(action, AddPoint):
        return f"{action.name}:{action.point_type}"
    return action.name


def _mean(values: Iterable[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.fmean(clean) if clean else None


def group_stats(samples: list[StoredSample]) -> dict[str, Any]:
    records: list[TrajectoryRecord] = [r for s in samples for r in s.records]
    actions = Counter(action_label(t.action) for r in records for t in r.turns if t.action and not t.error)
    first = Counter(action_label(r.turns[0].action) for r in records if r.turns and r.turns[0].action)
    return {
        "samples": len(samples),
        "samples_without_trajectory": sum(not s.records for s in samples),
        "trajectories": len(records),
        "mean_turns": _mean(r.num_interactions for r in records),  # tool-running actions
        "mean_replies": _mean(len(r.turns) for r in records),  # assistant turns, stop included
        "mean_final_iou": _mean(r.final_metrics.get("iou") for r in records),
        "mean_final_dice": _mean(r.final_metrics.get("dice") for r in records),
        "actions": dict(sorted(actions.items())),
        "first_action": dict(sorted(first.items())),
        "stop_reasons": dict(sorted(Counter(r.stop_reason for r in records).items())),
    }


def summarize(samples: list[StoredSample]) -> dict[str, Any]:
    """Overall, per dataset and per modality statistics of a generation folder's samples."""

    def by(attribute: str) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[StoredSample]] = {}
        for sample in samples:
            groups.setdefault(getattr(sample, attribute), []).append(sample)
        return {name: group_stats(group) for name, group in sorted(groups.items())}

    return {"overall": group_stats(samples), "per_dataset": by("dataset"), "per_modality": by("modality")}


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, stats) rows in display order: overall, then datasets, then modalities."""
    rows = [("all", summary["overall"])]
    rows += [(f"dataset={name}", stats) for name, stats in summary["per_dataset"].items()]
    rows += [(f"modality={name}", stats) for name, stats in summary["per_modality"].items()]
    return rows
