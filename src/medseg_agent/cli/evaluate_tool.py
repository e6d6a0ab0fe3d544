"""``medseg-agent evaluate-tool``: the standard interactive-segmentation benchmark of a tool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medseg_agent.cli.common import console, fail, load_samples
from medseg_agent.cli.options import ToolOptions, expand_options


@expand_options
def evaluate_tool(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder or manifest (any supported layout).")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                      help="Output folder: tool_eval.csv/json, curves.jsonl.")] = Path(
        "runs/evaluate-tool"
    ),
    *,  # option group: see medseg_agent.cli.options
    tool: ToolOptions,
    clicks: Annotated[int, typer.Option("--clicks", min=1, help="Clicks per sample (NoC is capped here).")] = 20,
    split: Annotated[str | None, typer.Option("--split", help="Only this split (e.g. test).")] = None,
    data_format: Annotated[str, typer.Option("--format", help="Dataset layout; auto detects it.")] = "auto",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Local worker processes.")] = 1,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Evaluate only the first N samples.")] = None,
) -> None:
    """Click up to --clicks times on every sample with the RITM clicker (interior-most point of the
    larger error, from an empty mask); report mIoU@1/3/5, NoC@80/85/90 and the share of clicks that
    lowered IoU by > 0.02 per dataset and modality. Resumes from OUT/curves.jsonl when rerun.

    Example: medseg-agent evaluate-tool --data ~/.cache/medseg-agent/demo --tool classic --clicks 20
    """
    from medseg_agent.evaluation.tool_eval import evaluate_tool_to_folder

    samples = load_samples([data], data_format=data_format, split=split, limit=limit)
    try:
        run = evaluate_tool_to_folder(samples, tool.factory(), out, max_clicks=clicks, workers=workers,
                                      description=f"{tool.tool}: {clicks} clicks")
    except ValueError as exc:  # a stored curve that cannot be read back
        fail(str(exc))
        return
    print_summary(run.rows, f"{tool.tool} — {len(run.curves)} samples ({run.ran} new), {clicks} clicks")
    console.print(f"wrote {run.csv_path} and {run.json_path}")


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
