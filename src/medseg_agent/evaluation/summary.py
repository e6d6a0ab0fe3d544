"""Summary tables of an evaluation: per dataset, modality, target and overall, as Markdown/CSV/JSON.

Definitions (one place, used by every table):

- Dice, IoU, NSD, HD95: of the final mask, from :func:`medseg_agent.metrics.segmentation_metrics`.
  HD95 is averaged over samples where it is finite; ``hd95_inf`` counts the others (an empty
  prediction or reference). Means are sample means; the ``class mean`` row averages the per-target
  means, so every target class weighs the same.
- turns: interaction turns, the replies that ran the tool (boxes and clicks); the stop and invalid
  replies are not turns. The project's one definition: the benchmarks, the trajectory summaries and
  the reward sandbox count the same way (``TrajectoryRecord.num_interactions``).
- replies: every policy reply (turns, the stop, invalid replies).
- format_error_rate: invalid replies / replies (a refused first stop is not a format error).
- stop_rate: episodes the policy ended with ``stop_action`` (rather than the turn or error limit).
- failed: samples the tool could not process; they are left out of every mean.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.environment.record import TrajectoryRecord, record_from_dict
from medseg_agent.io.atomic import atomic_write_json, atomic_write_text
from medseg_agent.vocabulary.errors import ErrorKind
from medseg_agent.vocabulary.stop import StopReason

LEVELS = ("dataset", "modality", "target")
METRICS = ("dice", "iou", "nsd", "hd95")


@dataclass
class SampleResult:
    """One sample's outcome, flattened from its trajectory record (or its failure)."""

    key: str
    dataset: str
    modality: str
    target: str
    dice: float | None = None
    iou: float | None = None
    nsd: float | None = None
    hd95: float | None = None
    turns: int = 0
    replies: int = 0
    format_errors: int = 0
    stop_reason: str = ""
    iou_trace: list[float] = field(default_factory=list)
    policy_seconds: list[float] = field(default_factory=list)  # per reply
    tool_seconds: list[float] = field(default_factory=list)
    env_seconds: list[float] = field(default_factory=list)
    encode_seconds: float = 0.0
    wall_seconds: float = 0.0
    failure: str | None = None

    @property
    def scored(self) -> bool:
        return self.failure is None and self.dice is not None


def result_from_record(key: str, record: TrajectoryRecord) -> SampleResult:
    metrics = record.final_metrics or {}
    return SampleResult(
        key=key,
        dataset=record.dataset or "unknown",
        modality=record.modality or "unknown",
        target=record.target or "unknown",
        **{m: (None if metrics.get(m) is None else float(metrics[m])) for m in METRICS},
        turns=record.num_interactions,
        replies=len(record.turns),
        format_errors=sum(1 for t in record.turns if t.error and t.error.kind is not ErrorKind.REJECTED),
        stop_reason=record.stop_reason or "",
        iou_trace=record.iou_trace(),
        policy_seconds=[t.policy_seconds for t in record.turns],
        tool_seconds=[t.tool_seconds for t in record.turns],
        env_seconds=[t.env_seconds for t in record.turns],
        encode_seconds=float(record.meta.get("encode_seconds", 0.0)),
        wall_seconds=record.wall_seconds,
    )


def results_from_rows(
    rows: Iterable[tuple[int, dict[str, Any]]], key_field: str = "key", source: str = "records"
) -> list[SampleResult]:
    """Store rows (``record`` or ``failure``) with their line numbers in ``source`` -> results, in store order.
    A record that cannot be read is named by its file, line and key, with how to redo it."""
    results = []
    for line, row in rows:
        key = row[key_field]
        where = f"{source} line {line} (sample {key!r}; delete the line and rerun to redo it)"
        if "record" in row:
            results.append(result_from_record(key, record_from_dict(row["record"], where)))
        else:
            failure = row.get("failure")
            if not isinstance(failure, dict):
                raise ValueError(f"{where}: holds neither a record nor a failure {{type, message}}")
            results.append(
                SampleResult(
                    key,
                    row.get("dataset") or "unknown",
                    row.get("modality") or "unknown",
                    row.get("target") or "unknown",
                    failure=f"{failure.get('type', 'Error')}: {failure.get('message', '')}",
                )
            )
    return results


# -- aggregation ------------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def aggregate(members: Sequence[SampleResult]) -> dict[str, Any]:
    """Every table column for one group of samples."""
    scored = [r for r in members if r.scored]
    ran = [r for r in members if r.failure is None]
    row: dict[str, Any] = {"n": len(scored), "failed": len(members) - len(ran)}
    for metric in ("dice", "iou", "nsd"):
        values = [getattr(r, metric) for r in scored]
        row[metric] = _mean(values)
        row[f"{metric}_std"] = float(np.std(values)) if values else None
    finite = [r.hd95 for r in scored if r.hd95 is not None and math.isfinite(r.hd95)]
    row["hd95"] = _mean(finite)
    row["hd95_inf"] = len(scored) - len(finite)
    replies = sum(r.replies for r in ran)
    row["turns"] = _mean([r.turns for r in ran])
    row["replies"] = _mean([r.replies for r in ran])
    row["format_error_rate"] = sum(r.format_errors for r in ran) / replies if replies else None
    row["stop_rate"] = _mean([1.0 if r.stop_reason == StopReason.STOP_ACTION else 0.0 for r in ran])
    return row


def class_mean(results: Sequence[SampleResult]) -> dict[str, Any]:
    """The mean of per-target means: each target class counts once, whatever its size."""
    per_class = [aggregate(group) for group in _groups(results, "target").values()]
    per_class = [row for row in per_class if row["n"]]
    out: dict[str, Any] = {"n": len(per_class), "failed": sum(1 for r in results if r.failure)}
    for column in ("dice", "iou", "nsd", "hd95", "turns", "replies", "format_error_rate", "stop_rate"):
        values = [row[column] for row in per_class if row[column] is not None]
        out[column] = _mean(values)
        if column in ("dice", "iou", "nsd"):  # the spread between classes, not within them
            out[f"{column}_std"] = float(np.std(values)) if values else None
    out["hd95_inf"] = sum(row["hd95_inf"] for row in per_class)
    return out


def _groups(results: Iterable[SampleResult], level: str) -> dict[str, list[SampleResult]]:
    groups: dict[str, list[SampleResult]] = defaultdict(list)
    for result in results:
        groups[getattr(result, level)].append(result)
    return dict(sorted(groups.items()))


def summarize(results: Sequence[SampleResult]) -> list[dict[str, Any]]:
    """Rows: overall (sample mean, class mean), then each dataset, modality and target."""
    rows = [
        {"level": "all", "name": "sample mean", **aggregate(results)},
        {"level": "all", "name": "class mean", **class_mean(results)},
    ]
    for level in LEVELS:
        for name, members in _groups(results, level).items():
            rows.append({"level": level, "name": name, **aggregate(members)})
    return rows


def iou_by_action(results: Sequence[SampleResult], max_actions: int, level: str = "modality") -> dict[str, list[float]]:
    """Mean IoU after action 1..max_actions per group (and ``all``); an episode that ended keeps its
    last IoU (0 before any action), as in interactive-segmentation curves."""
    scored = [r for r in results if r.scored]

    def curve(members: Sequence[SampleResult]) -> list[float]:
        padded = [
            (r.iou_trace + [r.iou_trace[-1] if r.iou_trace else 0.0] * max_actions)[:max_actions] for r in members
        ]
        return np.mean(np.array(padded, dtype=float), axis=0).tolist() if padded else []

    out = {"all": curve(scored)} if scored else {}
    for name, members in _groups(scored, level).items():
        out[name] = curve(members)
    return out


def timing(results: Sequence[SampleResult]) -> dict[str, float | None]:
    """Wall time per reply split into policy / tool / environment, and per episode (seconds)."""
    ran = [r for r in results if r.failure is None]
    policy = [s for r in ran for s in r.policy_seconds]
    tool = [s for r in ran for s in r.tool_seconds]
    env = [s for r in ran for s in r.env_seconds]
    return {
        "replies": len(policy),
        "policy_per_reply": _mean(policy),
        "tool_per_reply": _mean(tool),
        "env_per_reply": _mean(env),
        "total_per_reply": _mean([p + t + e for p, t, e in zip(policy, tool, env, strict=True)]),
        "encode_per_episode": _mean([r.encode_seconds for r in ran]),
        "wall_per_episode": _mean([r.wall_seconds for r in ran]),
    }


# -- writing ----------------------------------------------------------------------------------
TABLE_COLUMNS = (
    ("n", "n"),
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("nsd", "NSD"),
    ("hd95", "HD95"),
    ("turns", "turns"),
    ("replies", "replies"),
    ("format_error_rate", "format err"),
    ("stop_rate", "stop rate"),
    ("failed", "failed"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(row: dict[str, Any], column: str) -> str:
    if column in ("dice", "iou", "nsd") and row.get(column) is not None and row.get(f"{column}_std") is not None:
        return f"{row[column]:.3f} ± {row[f'{column}_std']:.3f}"
    if column == "hd95" and row.get("hd95_inf"):
        return f"{_fmt(row['hd95'], 2)} ({row['hd95_inf']} ∞)"
    return _fmt(row.get(column), 2 if column in ("hd95", "turns", "replies") else 3)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(_md_cell, cells)) + " |" for cells in rows]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    """A cell that cannot break its row: a target such as ``cyst | left`` or one with a line break."""
    return " ".join(str(text).split()).replace("|", "\\|")


def summary_markdown(
    rows: Sequence[dict[str, Any]],
    curves: dict[str, list[float]],
    times: dict[str, float | None],
    title: str = "Evaluation",
    failures: Sequence[SampleResult] = (),
) -> str:
    header = ["group", "name", *(label for _, label in TABLE_COLUMNS)]
    body = [[row["level"], row["name"], *(_cell(row, c) for c, _ in TABLE_COLUMNS)] for row in rows]
    parts = [f"# {title}", "", markdown_table(header, body), ""]
    if curves:
        width = max(len(c) for c in curves.values())
        parts += [
            "## Mean IoU after each action (an ended episode keeps its last IoU)",
            "",
            markdown_table(["modality", *(str(k) for k in range(1, width + 1))],
                           [[name, *(_fmt(v) for v in values)] for name, values in curves.items()]),
            "",
        ]

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value * 1000:.1f}"

    parts += [
        f"## Wall time per reply, ms ({times['replies']} replies)",
        "",
        markdown_table(
            ["policy", "tool", "environment", "total", "encode / episode", "wall / episode"],
            [[ms(times["policy_per_reply"]), ms(times["tool_per_reply"]), ms(times["env_per_reply"]),
              ms(times["total_per_reply"]), ms(times["encode_per_episode"]), ms(times["wall_per_episode"])]],
        ),
        "",
    ]
    if failures:
        parts += [f"## Failed samples ({len(failures)})", ""]
        parts += [f"- `{r.key}`: {r.failure}" for r in failures[:50]]
        parts.append("")
    return "\n".join(parts)


def rows_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    columns = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def per_sample_rows(results: Sequence[SampleResult]) -> list[dict[str, Any]]:
    keep = ("key", "dataset", "modality", "target", *METRICS, "turns", "replies", "format_errors", "stop_reason",
            "failure")
    return [{k: asdict(r)[k] for k in keep} for r in results]


def write_summary(
    results: Sequence[SampleResult], out_dir: str | Path, *, max_actions: int, title: str = "Evaluation",
    meta: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """summary.md / summary.csv / summary.json and samples.csv in ``out_dir`` (atomic writes)."""
    out = Path(out_dir)
    rows = summarize(results)
    curves = iou_by_action(results, max_actions)
    times = timing(results)
    failures = [r for r in results if r.failure]
    paths = {
        "markdown": out / "summary.md",
        "csv": out / "summary.csv",
        "json": out / "summary.json",
        "samples": out / "samples.csv",
    }
    atomic_write_text(paths["markdown"], summary_markdown(rows, curves, times, title, failures))
    atomic_write_text(paths["csv"], rows_csv(rows))
    atomic_write_text(paths["samples"], rows_csv(per_sample_rows(results)))
    payload = {
        "meta": meta or {},
        "summary": rows,
        "iou_by_action": curves,
        "timing": times,
        "failures": [{"key": r.key, "reason": r.failure} for r in failures],
    }
    atomic_write_json(paths["json"], _json_safe(payload))
    return paths


def _json_safe(value: Any) -> Any:
    """Strict JSON: infinities and NaN become null (HD95 of empty masks is counted in hd95_inf)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
