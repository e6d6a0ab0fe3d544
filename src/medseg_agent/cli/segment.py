"""``medseg-agent segment``: one image, one target, one episode, everything written to --out."""

from __future__ import annotations

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
    make_tool,
)


def segment(
    image: Annotated[Path, typer.Argument(help="Image file (PNG, JPEG, TIFF; 8 or 16 bit).", exists=True)],
    target: Annotated[str, typer.Option("--target", "-t", help='What to segment, e.g. "right kidney in abdomen CT".')],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (mask.png, overlays, trajectory.json).")],
    tool: ToolOption = "classic",
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "cpu",
    model_type: ModelTypeOption = None,
    random_weights: RandomWeightsOption = False,
    gt: Annotated[
        Path | None, typer.Option("--gt", help="Ground-truth mask (non-zero = target): per-turn IoU.")
    ] = None,
    policy: Annotated[
        str, typer.Option("--policy", help="clicker or expert (need --gt), openai (served MLLM), hf (local model).")
    ] = "clicker",
    protocol: Annotated[
        str, typer.Option("--protocol", help="medsam (tool calls) or ibis (click actions).")
    ] = "medsam",
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, help="Interaction turns (boxes and clicks).")] = 5,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="openai: server URL, e.g. http://localhost:8000/v1")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="openai: served model name.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="openai: key (default $OPENAI_API_KEY).")] = None,
    native_tools: Annotated[bool, typer.Option("--native-tools", help="openai: use tools= function calling.")] = False,
    model_path: Annotated[Path | None, typer.Option("--model-path", help="hf: local checkpoint folder.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for stochastic policies.")] = 0,
) -> None:
    """Segment TARGET in IMAGE with a policy driving a tool; writes the final mask, one overlay per
    turn and the trajectory record, and prints the IoU after every turn when --gt is given.

    Example: medseg-agent segment scan.png -t "left hippocampus in brain MRI" --gt gt.png -o runs/one
    """
    from medseg_agent.data.sample import Sample
    from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
    from medseg_agent.environment.record import save_record
    from medseg_agent.environment.runner import run_episode
    from medseg_agent.io.masks import read_image_rgb, read_mask_png, write_image_png, write_mask_png
    from medseg_agent.policies.registry import build_policy

    try:
        pixels = read_image_rgb(image)
        gt_mask = read_mask_png(gt) if gt else None
    except OSError as exc:
        fail(str(exc))
    if gt_mask is not None and gt_mask.shape != pixels.shape[:2]:
        fail(f"--gt {gt} has shape {gt_mask.shape}, but {image} is {pixels.shape[:2]}")
    options = _policy_options(policy, base_url, model, api_key, native_tools, model_path)
    try:
        agent = build_policy(policy, **options)
    except (ValueError, TypeError) as exc:
        fail(str(exc))
    if agent.uses_ground_truth and gt_mask is None:
        fail(f"policy {policy!r} needs the ground truth: pass --gt MASK")
    tool_impl = make_tool(tool, checkpoint, device, model_type, random_weights)
    env = SegmentationEnv(tool_impl, EpisodeConfig(max_turns=max_turns, protocol=protocol))
    sample = Sample(pixels, gt_mask, target, "", "", image.stem, image_path=str(image))
    out.mkdir(parents=True, exist_ok=True)
    step = {"n": 0}

    def write_overlay(observation) -> None:
        write_image_png(out / f"overlay_{step['n']:02d}.png", observation.image)
        step["n"] += 1

    record = run_episode(env, agent, sample, seed=seed, on_step=write_overlay)
    write_mask_png(out / "mask.png", env.mask)
    save_record(record, out / "trajectory.json")
    _print_turns(record)
    console.print(f"wrote {out / 'mask.png'}, {step['n']} overlays and {out / 'trajectory.json'}")


def _policy_options(
    policy: str,
    base_url: str | None,
    model: str | None,
    api_key: str | None,
    native_tools: bool,
    model_path: Path | None,
) -> dict[str, Any]:
    if policy == "openai":
        if not base_url or not model:
            fail("--policy openai needs --base-url and --model")
        return {"base_url": base_url, "model": model, "api_key": api_key, "native_tools": native_tools}
    if policy == "hf":
        if model_path is None:
            fail("--policy hf needs --model-path (a local checkpoint folder)")
        return {"model_path": str(model_path)}
    return {}


def _print_turns(record) -> None:
    table = Table(title=f"{record.target} ({record.stop_reason}, {record.num_interactions} actions)")
    for column in ("turn", "action", "IoU", "Dice", "tool s"):
        table.add_column(column)
    for turn in record.turns:
        if turn.error:
            action = f"[red]error: {turn.error['kind']}[/]"
        else:
            action = f"{turn.action['name']} {turn.action['arguments'] or ''}".strip()
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
