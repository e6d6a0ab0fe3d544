"""``medseg-agent segment``: one image, one target, one episode, everything written to --out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from medseg_agent.cli.common import (
    ApiKeyOption,
    BaseUrlOption,
    CheckpointOption,
    DeviceOption,
    DtypeOption,
    HistoryOption,
    MaxTokensOption,
    ModelOption,
    ModelPathOption,
    ModelTypeOption,
    NativeToolsOption,
    PolicyDeviceOption,
    PolicyName,
    PolicyOptionOption,
    RandomWeightsOption,
    RetriesOption,
    StopIouOption,
    TemperatureOption,
    TimeoutOption,
    ToolOption,
    console,
    fail,
    make_tool,
    parse_key_values,
    policy_options,
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
    policy: PolicyName = "clicker",
    protocol: Annotated[
        str, typer.Option("--protocol", help="medsam (tool calls) or ibis (click actions).")
    ] = "medsam",
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, help="Interaction turns (boxes and clicks).")] = 5,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    model_path: ModelPathOption = None,
    native_tools: NativeToolsOption = False,
    max_history_images: HistoryOption = None,
    temperature: TemperatureOption = 0.0,
    max_tokens: MaxTokensOption = 512,
    timeout: TimeoutOption = 120.0,
    max_retries: RetriesOption = 3,
    policy_device: PolicyDeviceOption = "auto",
    dtype: DtypeOption = "auto",
    stop_iou: StopIouOption = None,
    policy_option: PolicyOptionOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for stochastic policies.")] = 0,
) -> None:
    """Segment TARGET in IMAGE with a policy driving a tool; writes the final mask, one overlay per
    turn and the trajectory record, and prints the IoU after every turn when --gt is given.

    Example: medseg-agent segment scan.png -t "left hippocampus in brain MRI" --gt gt.png -o runs/one
    """
    from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
    from medseg_agent.environment.record import save_record
    from medseg_agent.io.images import ImageLoadError, load_image, load_mask
    from medseg_agent.io.masks import write_image_png, write_mask_png
    from medseg_agent.policies.registry import build_policy
    from medseg_agent.policies.runner import run_episode
    from medseg_agent.vocabulary.sample import Sample

    try:
        pixels = load_image(image)
        gt_mask = load_mask(gt) if gt else None
    except ImageLoadError as exc:
        fail(str(exc))
    if gt_mask is not None and gt_mask.shape != pixels.shape[:2]:
        fail(f"--gt {gt} has shape {gt_mask.shape}, but {image} is {pixels.shape[:2]}")
    from medseg_agent.policies.chat import PolicyError

    try:
        options = policy_options(
            policy,
            base_url=base_url,
            model=model,
            api_key=api_key,
            model_path=model_path,
            native_tools=native_tools,
            max_history_images=max_history_images,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=max_retries,
            policy_device=policy_device,
            dtype=dtype,
            stop_iou=stop_iou,
            extra=parse_key_values(policy_option),
        )
        agent = build_policy(policy, **options)
    except (ValueError, TypeError, OSError, PolicyError) as exc:
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

    try:
        record = run_episode(env, agent, sample, seed=seed, on_step=write_overlay)
    except PolicyError as exc:
        fail(f"the {policy} policy failed: {exc}")
    write_mask_png(out / "mask.png", env.mask)
    save_record(record, out / "trajectory.json")
    _print_turns(record)
    console.print(f"wrote {out / 'mask.png'}, {step['n']} overlays and {out / 'trajectory.json'}")


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
