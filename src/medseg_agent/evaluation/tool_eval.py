"""Evaluate a segmentation tool with the standard interactive protocol (RITM / SimpleClick).

The clicker policy clicks up to ``max_clicks`` times from an empty mask through the same
environment every other policy uses (exact pixel coordinates, no early stop). Reported: mIoU after
k clicks and NoC@X = the first click (1-based) at which IoU >= X, or ``max_clicks`` if never
reached, with the number of samples that never reach X; and whether clicks help monotonically: the
share of clicks (after the first) that lowered IoU by more than ``DEFAULT_DROP`` and the mean IoU
those clicks lost.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import Count, Overlap
from medseg_agent.io.atomic import atomic_write_json, atomic_write_text
from medseg_agent.io.validation import first_problem
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.runner import run_episode
from medseg_agent.runs.parallel import run_jobs
from medseg_agent.runs.store import ResultStore
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.actions import CoordinateSpace
from medseg_agent.vocabulary.sample import Sample

DEFAULT_THRESHOLDS = (0.80, 0.85, 0.90)
DEFAULT_KS = (1, 3, 5)
DEFAULT_DROP = 0.02


@dataclass
class ClickCurve:
    sample_id: str
    dataset: str
    modality: str
    target: str
    ious: list[Overlap]  # IoU after click 1..n (padded with the last value to max_clicks)
    clicks: Count | None = None  # clicks actually made (the rest of ``ious`` is padding); None: unknown

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


_CURVE = TypeAdapter(ClickCurve)


def curve_from_row(row: dict[str, Any], where: str) -> ClickCurve:
    """A stored curve, checked: a row edited by hand or by another tool is named by ``where`` instead of
    failing later inside a numpy mean."""
    try:
        return _CURVE.validate_python({k: v for k, v in row.items() if k != "key"})
    except ValidationError as exc:
        raise ValueError(f"{where} (curve {row.get('key')!r}): {first_problem(exc)}; delete the line and rerun "
                         "to redo it") from None


def click_curve(tool: SegmentationTool, sample: Sample, max_clicks: int = 20) -> ClickCurve:
    """IoU after each of ``max_clicks`` clicker clicks on one sample."""
    env = SegmentationEnv(
        tool,
        EpisodeConfig(
            max_turns=max_clicks,
            coordinate_space=CoordinateSpace.PIXEL,
            view_longest_side=None,
            keep_masks=False,
        ),
    )
    record = run_episode(env, ClickerPolicy(stop_iou=None), sample)
    ious = record.iou_trace()
    if not ious:
        ious = [0.0]
    # The clicker stops early only when no error is left: IoU stays where it is.
    made = len(ious)
    ious = ious + [ious[-1]] * (max_clicks - len(ious))
    return ClickCurve(sample.sample_id, sample.dataset, sample.modality, sample.target, ious, made)


def noc(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    for index, value in enumerate(ious[:max_clicks], start=1):
        if value >= threshold:
            return index
    return max_clicks


def click_changes(curve: ClickCurve, max_clicks: int) -> list[float]:
    """IoU gained by each click after the first (negative: lost), padding excluded."""
    made = min(curve.clicks if curve.clicks is not None else max_clicks, max_clicks, len(curve.ious))
    return [b - a for a, b in zip(curve.ious[: made - 1], curve.ious[1:made], strict=True)]


def summarize_curves(
    curves: Iterable[ClickCurve],
    max_clicks: int = 20,
    ks: Sequence[int] = DEFAULT_KS,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    drop: float = DEFAULT_DROP,
) -> list[dict[str, Any]]:
    """One row per group (overall, each dataset, each modality) with mIoU@k, NoC@X, the share of
    clicks that lowered IoU by more than ``drop`` (``lowered>0.02``) and the mean IoU they lost."""
    curves = list(curves)
    groups: dict[tuple[str, str], list[ClickCurve]] = defaultdict(list)
    for curve in curves:
        groups[("all", "all")].append(curve)
        groups[("dataset", curve.dataset)].append(curve)
        groups[("modality", curve.modality)].append(curve)
    rows = []
    for (level, name), members in sorted(groups.items(), key=lambda kv: (kv[0][0] != "all", kv[0])):
        matrix = np.array([c.ious[:max_clicks] for c in members])
        row: dict[str, Any] = {"group": level, "name": name, "samples": len(members)}
        for k in ks:
            if k <= max_clicks:
                row[f"mIoU@{k}"] = float(matrix[:, k - 1].mean())
        for t in thresholds:
            label = f"{round(t * 100)}"
            nocs = [noc(c.ious, t, max_clicks) for c in members]
            row[f"NoC@{label}"] = float(np.mean(nocs))
            row[f">={max_clicks}@{label}"] = int(sum(1 for c in members if max(c.ious[:max_clicks]) < t))
        changes = [d for c in members for d in click_changes(c, max_clicks)]
        lost = [-d for d in changes if d < -drop]
        row[f"lowered>{drop:g}"] = len(lost) / len(changes) if changes else 0.0
        row["mean drop"] = float(np.mean(lost)) if lost else 0.0
        rows.append(row)
    return rows


def write_tables(rows: list[dict[str, Any]], curves: list[ClickCurve], out_dir: Path) -> tuple[Path, Path]:
    """CSV of the summary rows and JSON with rows + every per-sample curve (atomic writes)."""
    csv_path, json_path = out_dir / "tool_eval.csv", out_dir / "tool_eval.json"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_json(json_path, {"summary": rows, "curves": [c.to_dict() for c in curves]})
    return csv_path, json_path


@dataclass
class ToolEvalRun:
    """What ``evaluate_tool_to_folder`` leaves behind: the summary rows, every curve of the run, how
    many curves this call computed (the rest were resumed) and the tables it wrote."""

    rows: list[dict[str, Any]]
    curves: list[ClickCurve]
    ran: int
    csv_path: Path
    json_path: Path


def _curve_job(tool: SegmentationTool, sample: Sample, max_clicks: int) -> dict[str, Any]:
    return click_curve(tool, sample, max_clicks).to_dict()


def evaluate_tool_to_folder(
    samples: Sequence[Sample],
    tool_factory: Callable[[], SegmentationTool],
    out_dir: Path,
    *,
    max_clicks: int = 20,
    workers: int = 1,
    description: str = "click curves",
) -> ToolEvalRun:
    """Click curves of every sample, appended to ``out_dir/curves.jsonl`` as they finish so a killed
    run resumes where it stopped (keyed by sample and click budget), then the summary tables of this
    run's samples. ``tool_factory`` must be picklable when ``workers > 1`` (each worker builds its tool)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out_dir / "curves.jsonl")
    jobs = [(f"{s.dataset}/{s.sample_id}@{max_clicks}", s) for s in samples]
    ran = run_jobs(jobs, tool_factory, partial(_curve_job, max_clicks=max_clicks), store, workers=workers,
                   description=description)
    wanted = {key for key, _ in jobs}
    curves = [curve_from_row(row, f"{store.path} line {line}") for line, row in store.numbered_rows()
              if row["key"] in wanted]
    rows = summarize_curves(curves, max_clicks)
    csv_path, json_path = write_tables(rows, curves, out_dir)
    return ToolEvalRun(rows, curves, ran, csv_path, json_path)
