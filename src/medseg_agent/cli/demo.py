"""``medseg-agent demo``: the main job on embedded defaults, no weights, no GPU, no model hub.

Builds the real demo dataset (brain MRI + fluorescence microscopy, from Debian/PyPI packages), runs
the RITM clicker with the ``classic`` tool through the full agent environment on every sample and
prints the table, writing every turn's overlay and every trajectory record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medseg_agent.cli.common import console, err_console, fail

DEMO_CLICKS = 10
DEMO_STOP_IOU = 0.9


def demo(
    data: Annotated[Path | None, typer.Option("--data", help="Where to build/cache the demo dataset.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for overlays and records.")] = Path(
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
    from medseg_agent.data.readers import open_dataset
    from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
    from medseg_agent.environment.record import save_record
    from medseg_agent.evaluation.tool_eval import ClickCurve, summarize_curves, write_tables
    from medseg_agent.io.masks import write_image_png
    from medseg_agent.policies.clicker import ClickerPolicy
    from medseg_agent.policies.runner import run_episode
    from medseg_agent.runs.parallel import progress_bar
    from medseg_agent.tools.registry import build_tool

    data_dir = data or default_demo_dir()
    try:
        root = build_demo_dataset(data_dir)
    except (OSError, RuntimeError) as exc:
        fail(f"could not build the demo dataset in {data_dir}: {exc}")
    samples = open_dataset(root).load()
    if not samples:
        fail(f"the demo dataset in {root} has no usable samples")
    segmenter = build_tool(tool)
    env = SegmentationEnv(segmenter, EpisodeConfig(max_turns=clicks))
    curves = []
    overlays = out / "overlays"
    with progress_bar() as progress:
        task = progress.add_task(f"{tool} + clicker", total=len(samples))
        for sample in samples:
            folder = overlays / sample.sample_id
            views: list = []
            policy = ClickerPolicy(stop_iou=DEMO_STOP_IOU)
            record = run_episode(env, policy, sample, on_step=lambda o, views=views: views.append(o.image))
            for index, view in enumerate(views):
                write_image_png(folder / f"turn_{index:02d}.png", view)
            save_record(record, out / "records" / f"{sample.sample_id}.json")
            trace = record.iou_trace() or [0.0]
            curves.append(
                ClickCurve(sample.sample_id, sample.dataset, sample.modality, sample.target,
                           trace + [trace[-1]] * (clicks - len(trace)))
            )
            progress.advance(task)
    rows = summarize_curves(curves, clicks)
    write_tables(rows, curves, out)
    print_summary(rows, f"demo: {tool} tool + clicker on {len(samples)} real samples (stop at IoU >= {DEMO_STOP_IOU})")
    stats = segmenter.stats()
    err_console.print(
        f"image encodes: {stats['encode_count']} for {len(samples)} episodes; "
        f"mean tool time per action {stats['decode_seconds'] / max(stats['decode_count'], 1):.3f} s"
    )
    console.print(f"overlays: {overlays.resolve()}\nrecords:  {(out / 'records').resolve()}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
