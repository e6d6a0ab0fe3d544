"""Options and helpers shared by several commands, so every command spells them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from medseg_agent.tools.base import SegmentationTool

console = Console()
err_console = Console(stderr=True)

ToolOption = Annotated[
    str,
    typer.Option(
        "--tool",
        help="Segmentation tool: classic (no weights), sam, medsam, sam2, or a server URL http://host:port.",
    ),
]
CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Local checkpoint file for sam/medsam/sam2 (e.g. sam_vit_b_01ec64.pth, MedSAM2_latest.pt).",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu or cuda (or cuda:N).")]
ModelTypeOption = Annotated[
    str | None,
    typer.Option(
        "--model-type",
        help="sam: vit_b|vit_l|vit_h. sam2: a config such as configs/sam2.1/sam2.1_hiera_t.yaml (MedSAM2).",
    ),
]
RandomWeightsOption = Annotated[
    bool,
    typer.Option(
        "--random-weights",
        help="Build sam/sam2 with random weights from the official config (smoke tests, benchmarks only).",
    ),
]


def make_tool(
    tool: str,
    checkpoint: Path | None = None,
    device: str = "cpu",
    model_type: str | None = None,
    random_weights: bool = False,
) -> SegmentationTool:
    """Build a tool from CLI options, turning ToolError into a clean exit with the message."""
    from medseg_agent.tools.base import ToolError
    from medseg_agent.tools.registry import build_tool

    options: dict[str, Any] = {}
    if model_type:
        options["config" if tool == "sam2" else "model_type"] = model_type
    if random_weights:
        options["allow_random_weights"] = True
    try:
        return build_tool(tool, checkpoint=checkpoint, device=device, **options)
    except ToolError as exc:
        fail(str(exc))
        raise  # unreachable


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
