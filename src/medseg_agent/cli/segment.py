"""``medseg-agent segment``: one image, one target, one episode, everything written to --out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from medseg_agent.cli.common import console, fail
from medseg_agent.cli.options import EpisodeOptions, PolicyOptions, ToolOptions, expand_options


@expand_options
def segment(
    image: Annotated[Path, typer.Argument(help="Image file (PNG, JPEG, TIFF; 8 or 16 bit).", exists=True)],
    target: Annotated[str, typer.Option("--target", "-t", help='What to segment, e.g. "right kidney in abdomen CT".')],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                      help="Output folder (mask.png, overlays, trajectory.json).")],
    *,  # option groups: see medseg_agent.cli.options
    tool: ToolOptions,
    gt: Annotated[
        Path | None, typer.Option("--gt", help="Ground-truth mask (non-zero = target): per-turn IoU.")
    ] = None,
    policy: PolicyOptions,
    episode: EpisodeOptions,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed for stochastic policies.")] = 0,
) -> None:
    """Segment TARGET in IMAGE with a policy driving a tool; writes the final mask, one overlay per
    turn and the trajectory record, and prints the IoU after every turn when --gt is given.

    Example: medseg-agent segment scan.png -t "left hippocampus in brain MRI" --gt gt.png -o runs/one
    """
    from medseg_agent.evaluation.single import load_case, segment_image
    from medseg_agent.io.images import ImageLoadError
    from medseg_agent.policies.chat import PolicyError

    try:
        sample = load_case(image, target, gt)
        config = episode.config()
    except (ImageLoadError, ValueError) as exc:
        fail(str(exc))
    agent = policy.build()
    try:
        result = segment_image(sample, out, tool=tool.build(), policy=agent, episode=config, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    except PolicyError as exc:
        fail(f"the {policy.policy} policy failed: {exc}")
    _print_turns(result.record)
    console.print(f"wrote {result.mask_path}, {len(result.overlays)} overlays and {result.record_path}")


def _print_turns(record) -> None:
    table = Table(title=f"{record.target} ({record.stop_reason}, {record.num_interactions} actions)")
    for column in ("turn", "action", "IoU", "Dice", "tool s"):
        table.add_column(column)
    for turn in record.turns:
        if turn.error:
            action = Text(f"error: {turn.error.kind}", style="red")
        else:
            action = f"{turn.action.name} {turn.action.arguments() or ''}".strip()
        table.add_row(
            str(turn.turn),
            action,
            "" if turn.iou is None else f"{turn.iou:.3f}",
            "" if turn.dice is None else f"{turn.dice:.3f}",
            f"{turn.tool_seconds:.2f}",
        )
    console.print(table)
    if record.final_metrics:
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in record.final_metrics.items() if v is not None)
        console.print(f"final: {metrics}")


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
