"""``medseg-agent demo``: the main job on embedded defaults, no weights, no GPU, no model hub.

Builds the real demo dataset (brain MRI + fluorescence microscopy, from Debian/PyPI packages), runs
the RITM clicker with the ``classic`` tool through the full agent environment on every sample and
prints the table, writing every turn's overlay and every trajectory record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medseg_agent.cli.common import console, err_console, fail, load_samples

DEMO_CLICKS = 10
DEMO_STOP_IOU = 0.9


def demo(
    data: Annotated[Path | None, typer.Option("--data", help="Where to build/cache the demo dataset.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                      help="Output folder for overlays and records.")] = Path(
        "runs/demo"
    ),
    tool: Annotated[str, typer.Option("--tool", help="Tool to drive (classic needs no weights).")] = "classic",
    clicks: Annotated[int, typer.Option("--clicks", min=1, help="Clicks at most per sample.")] = DEMO_CLICKS,
) -> None:
    """Build the demo dataset and segment every sample with the clicker driving the tool.

    The clicker stops once IoU >= 0.90; NoC is capped at --clicks.
    """
    from medseg_agent.cli.evaluate_tool import print_summary
    from medseg_agent.data.demo import build_demo_dataset, default_demo_dir
    from medseg_agent.evaluation.demo_run import run_clicker_demo
    from medseg_agent.evaluation.tool_eval import summarize_curves, write_tables
    from medseg_agent.runs.parallel import progress_bar
    from medseg_agent.tools.registry import build_tool

    data_dir = data or default_demo_dir()
    try:
        root = build_demo_dataset(data_dir)
    except (OSError, RuntimeError) as exc:
        fail(f"could not build the demo dataset in {data_dir}: {exc}")
    samples = load_samples([root])
    segmenter = build_tool(tool)
    with progress_bar() as progress:
        task = progress.add_task(f"{tool} + clicker", total=len(samples))
        curves = run_clicker_demo(samples, segmenter, out, clicks=clicks, stop_iou=DEMO_STOP_IOU,
                                  on_sample=lambda: progress.advance(task))
    rows = summarize_curves(curves, clicks)
    write_tables(rows, curves, out)
    print_summary(rows, f"demo: {tool} tool + clicker on {len(samples)} real samples (stop at IoU >= {DEMO_STOP_IOU})")
    stats = segmenter.stats()
    err_console.print(
        f"image encodes: {stats['encode_count']} for {len(samples)} episodes; "
        f"mean tool time per action {stats['decode_seconds'] / max(stats['decode_count'], 1):.3f} s"
    )
    console.print(f"overlays: {(out / 'overlays').resolve()}\nrecords:  {(out / 'records').resolve()}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
