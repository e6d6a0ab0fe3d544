"""``medseg-agent evaluate-tool``: the standard interactive-segmentation benchmark of a tool."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medseg_agent.cli.common import (
    CheckpointOption,
    DeviceOption,
    ModelTypeOption,
    RandomWeightsOption,
    ToolOption,
    console,
    fail,
    say,
)


def _build_tool(spec: dict[str, Any]):
    from medseg_agent.cli.common import make_tool

    return make_tool(**spec)


def _curve_job(tool, sample, max_clicks: int) -> dict[str, Any]:
    from medseg_agent.evaluation.tool_eval import click_curve

    return click_curve(tool, sample, max_clicks).to_dict()


def evaluate_tool(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder or manifest (any supported layout).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: tool_eval.csv/json, curves.jsonl.")] = Path(
        "runs/evaluate-tool"
    ),
    tool: ToolOption = "classic",
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "cpu",
    model_type: ModelTypeOption = None,
    random_weights: RandomWeightsOption = False,
    clicks: Annotated[int, typer.Option("--clicks", min=1, help="Clicks per sample (NoC is capped here).")] = 20,
    split: Annotated[str | None, typer.Option("--split", help="Only this split (e.g. test).")] = None,
    data_format: Annotated[str, typer.Option("--format", help="Dataset layout; auto detects it.")] = "auto",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Local worker processes.")] = 1,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N samples.")] = None,
) -> None:
    """Click up to --clicks times on every sample with the RITM clicker (interior-most point of the
    larger error, from an empty mask); report mIoU@1/3/5, NoC@80/85/90 and the share of clicks that
    lowered IoU by > 0.02 per dataset and modality. Resumes from OUT/curves.jsonl when rerun.

    Example: medseg-agent evaluate-tool --data ~/.cache/medseg-agent/demo --tool classic --clicks 20
    """
    from medseg_agent.data.readers import open_dataset, summarize_skipped
    from medseg_agent.evaluation.tool_eval import ClickCurve, summarize_curves, write_tables
    from medseg_agent.runs.parallel import run_jobs
    from medseg_agent.runs.store import ResultStore

    try:
        dataset = open_dataset(data, format=data_format, split=split)
        samples = dataset.load()
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if dataset.skipped:
        say((f"skipped {len(dataset.skipped)} sample(s):", "yellow"), f"\n{summarize_skipped(dataset)}", err=True)
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        fail(f"no usable samples in {data}")
    spec = {
        "tool": tool,
        "checkpoint": checkpoint,
        "device": device,
        "model_type": model_type,
        "random_weights": random_weights,
    }
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "curves.jsonl")
    jobs = [(f"{s.dataset}/{s.sample_id}@{clicks}", s) for s in samples]
    ran = run_jobs(
        jobs,
        functools.partial(_build_tool, spec),
        functools.partial(_curve_job, max_clicks=clicks),
        store,
        workers=workers,
        description=f"{tool}: {clicks} clicks",
    )
    wanted = {key for key, _ in jobs}
    curves = [
        ClickCurve(**{k: v for k, v in row.items() if k != "key"}) for row in store.rows() if row["key"] in wanted
    ]
    rows = summarize_curves(curves, clicks)
    csv_path, json_path = write_tables(rows, curves, out)
    print_summary(rows, f"{tool} — {len(curves)} samples ({ran} new), {clicks} clicks")
    console.print(f"wrote {csv_path} and {json_path}")


def print_summary(rows: list[dict[str, Any]], title: str) -> None:
    """One line per group; numbers with 3 decimals (NoC with 2, the share of clicks that lowered IoU
    in %), failures as counts."""
    table = Table(title=title)
    metrics = [c for c in rows[0] if c not in ("group", "name", "samples")]
    table.add_column("group")
    table.add_column("n", justify="right")
    for column in metrics:
        table.add_column(column.replace(">=", "fail"), justify="right")
    for row in rows:
        label = "all" if row["group"] == "all" else f"{row['group']}: {row['name']}"
        cells = [f"{row[c]:.2f}" if c.startswith("NoC") else f"{100 * row[c]:.1f} %" if c.startswith("lowered")
                 else f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in metrics]
        table.add_row(label, str(row["samples"]), *cells)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("evaluate-tool")(evaluate_tool)
