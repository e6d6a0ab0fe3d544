"""``medseg-agent trajectories ...``: expert trajectories at dataset scale, their summary, and SFT/RL
exports that LLaMA-Factory, TRL and verl load unchanged."""

from __future__ import annotations

from functools import partial
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
    say,
    warn,
)
from medseg_agent.experts import defaults

trajectories_app = typer.Typer(
    help=(
        "Expert trajectories for supervised fine-tuning: generate them with a simulated expert, "
        "summarize them, export them for LLaMA-Factory, TRL and verl.\n\n"
        "Typical run: `medseg-agent trajectories generate --data DIR --out runs/traj --per-sample 2`, "
        "then `medseg-agent trajectories export runs/traj --out runs/sft`."
    ),
    no_args_is_help=True,
)

FORMATS = ("sharegpt", "hf", "verl-sft", "verl-rl")


@trajectories_app.command("generate")
def generate(
    data: Annotated[
        Path,
        typer.Option("--data", help="Dataset folder or file (any layout `medseg-agent data list` reads)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder; rerun with the same options to resume.")
    ],
    tool: ToolOption = "classic",
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "cpu",
    model_type: ModelTypeOption = None,
    random_weights: RandomWeightsOption = False,
    data_format: Annotated[
        str, typer.Option("--format", help="Dataset layout: auto, biomedparse, json, manifest, nifti, dicom.")
    ] = "auto",
    split: Annotated[str | None, typer.Option("--split", help="Only this split (e.g. train).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N samples.")] = None,
    per_sample: Annotated[
        int, typer.Option("--per-sample", min=1, help="Distinct trajectories per sample (seeds, strategies).")
    ] = 1,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes, each with its own tool.")
    ] = 1,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol", help="medsam (tool calls, boxes and points) or ibis (`<think>` + click actions)."
        ),
    ] = "medsam",
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="hybrid (box or point first, parsimonious corrections) or clicks "
            "(IBISAgent's generator: clicker rule, stop at IoU 0.8).",
        ),
    ] = "hybrid",
    max_turns: Annotated[
        int | None,
        typer.Option(
            "--max-turns",
            min=1,
            help=f"Action limit per episode (default {defaults.MAX_TURNS['hybrid']} hybrid, "
            f"{defaults.MAX_TURNS['clicks']} clicks).",
        ),
    ] = None,
    reasoning: Annotated[
        bool | None,
        typer.Option(
            "--reasoning/--no-reasoning",
            help="Write the rationale as `<think>` reasoning (default: on for ibis, off for medsam).",
        ),
    ] = None,
    delta: Annotated[
        float | None,
        typer.Option(
            "--delta",
            help=f"Keep an action only if it raises IoU by at least this (default {defaults.DELTA}).",
        ),
    ] = None,
    epsilon: Annotated[
        float | None,
        typer.Option(
            "--epsilon",
            help=f"Stop when the best candidate gains less than this (default {defaults.EPSILON}).",
        ),
    ] = None,
    tau: Annotated[
        float | None,
        typer.Option(
            "--tau",
            help=f"Stop when IoU reaches this (default {defaults.TAU['hybrid']} hybrid, "
            f"{defaults.TAU['clicks']} clicks).",
        ),
    ] = None,
    max_tries: Annotated[
        int | None,
        typer.Option(
            "--max-tries", min=1, help=f"Candidate actions tried per turn (default {defaults.MAX_TRIES})."
        ),
    ] = None,
    box_jitter: Annotated[
        float | None,
        typer.Option(
            "--box-jitter",
            help=f"Box side jitter as a fraction of the box size (default {defaults.BOX_JITTER}).",
        ),
    ] = None,
    other_share: Annotated[
        float | None,
        typer.Option(
            "--other-share",
            help="Share of episodes starting with the other strategy than the rule's "
            f"(default {defaults.OTHER_SHARE}).",
        ),
    ] = None,
    view_size: Annotated[
        int, typer.Option("--view-size", min=16, help="Longest side of the image the model sees.")
    ] = 512,
    seed: Annotated[
        int, typer.Option("--seed", help="Base seed; each trajectory's seed derives from it and the sample.")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Generate expert trajectories for every sample of a dataset.

    Writes OUT/trajectories.jsonl (one line per sample with its distinct trajectory records,
    appended atomically), OUT/images/ (each sample's image, for exports), OUT/generation.json
    (settings) and OUT/summary.json. Killed and rerun with the same options, it resumes at the first
    sample not yet stored.

    Example: medseg-agent trajectories generate --data ~/.cache/medseg-agent/demo --out runs/traj
    --per-sample 2
    """
    from medseg_agent.data import open_dataset
    from medseg_agent.experts.generate import GenerationConfig, generate_dataset
    from medseg_agent.protocols import PROTOCOLS

    if mode not in defaults.MODES:
        fail(f"--mode must be one of {', '.join(defaults.MODES)}, got {mode!r}")
    if protocol not in PROTOCOLS:
        fail(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    expert: dict[str, Any] = {
        name: value
        for name, value in {
            "delta": delta,
            "epsilon": epsilon,
            "tau": tau,
            "max_tries": max_tries,
            "box_jitter": box_jitter,
            "other_share": other_share,
        }.items()
        if value is not None
    }
    config = GenerationConfig(
        mode=mode,
        protocol=protocol,
        per_sample=per_sample,
        max_turns=max_turns,
        view_longest_side=view_size,
        reasoning=reasoning,
        seed=seed,
        expert=expert,
    )
    try:
        config.build_expert()  # validate the options before any work
        dataset = open_dataset(data, format=data_format, split=split)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    make_tool(tool, checkpoint, device, model_type, random_weights)  # fail fast on a bad tool/checkpoint
    samples = []
    for sample in dataset:
        samples.append(sample)
        if limit is not None and len(samples) == limit:
            break
    if dataset.skipped:
        say((f"{len(dataset.skipped)} sample(s) skipped", "yellow"), f"; see `medseg-agent data list {data}`",
            err=True)
    if not samples:
        fail(f"no usable sample in {data}")
    factory = partial(make_tool, tool, checkpoint, device, model_type, random_weights)
    tool_id = {
        "name": tool,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "model_type": model_type,
        "random_weights": random_weights,
    }
    try:
        ran = generate_dataset(
            samples,
            out,
            config,
            tool_factory=factory,
            tool_id=tool_id,
            workers=workers,
            show_progress=not quiet,
        )
    except ValueError as exc:
        fail(str(exc))
    console.print(f"{ran} sample(s) generated now, {len(samples) - ran} already in {out}")
    _write_and_print_summary(out)


@trajectories_app.command("summary")
def summary(
    folder: Annotated[
        Path,
        typer.Argument(help="A folder written by `trajectories generate`.", exists=True, file_okay=False),
    ],
) -> None:
    """Print the summary of a generation folder (samples, trajectories, mean turns, final IoU/Dice,
    actions, per dataset and modality) and write it to FOLDER/summary.json."""
    _write_and_print_summary(folder)


def _write_and_print_summary(folder: Path) -> None:
    from medseg_agent.experts.generate import SUMMARY_NAME, load_generation
    from medseg_agent.experts.summary import summarize, summary_rows
    from medseg_agent.io.atomic import atomic_write_json

    try:
        stats = summarize(load_generation(folder))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    atomic_write_json(folder / SUMMARY_NAME, stats)
    table = Table(title=f"expert trajectories in {folder}")
    headers = ("group", "samples", "traj", "turns", "IoU", "Dice", "box", "+pt", "-pt", "stop")
    for header in headers:
        table.add_column(header, justify="left" if header == "group" else "right", no_wrap=header == "group")
    for label, row in summary_rows(stats):
        actions = row["actions"]
        counts = (
            actions.get(k, 0) for k in ("add_bbox", "add_point:positive", "add_point:negative", "stop_action")
        )
        table.add_row(
            label,
            str(row["samples"]),
            str(row["trajectories"]),
            _fmt(row["mean_turns"], 2),
            _fmt(row["mean_final_iou"]),
            _fmt(row["mean_final_dice"]),
            *(str(c) for c in counts),
        )
    console.print(table)
    console.print(f"wrote {folder / SUMMARY_NAME}")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@trajectories_app.command("export")
def export(
    folder: Annotated[
        Path,
        typer.Argument(help="A folder written by `trajectories generate`.", exists=True, file_okay=False),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Export folder (data files + images/).")],
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            "-f",
            help="sharegpt (LLaMA-Factory), hf (TRL SFTTrainer), verl-sft, verl-rl; "
            "repeat for several (default: all).",
        ),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", help="Dataset name (file names, dataset_info.json entry).")
    ] = "medseg_expert",
    min_final_iou: Annotated[
        float, typer.Option("--min-final-iou", help="Leave out trajectories ending below this IoU.")
    ] = 0.0,
    max_images: Annotated[
        int | None,
        typer.Option(
            "--max-images", min=1, help="Keep at most this many images per conversation (latest turns kept)."
        ),
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Only samples of this split.")] = None,
) -> None:
    """Export trajectories as training data; every turn's overlay is written to OUT/images/.

    - sharegpt: `OUT/<name>.sharegpt.json` + an `OUT/dataset_info.json` entry (LLaMA-Factory's
      `dataset_dir: OUT`).
    - hf: `OUT/<name>.hf.parquet`, columns `messages` (`{"type": "image"}` placeholders in user turns)
      and `images` (TRL SFTTrainer, `medseg-agent train sft`).
    - verl-sft: `OUT/<name>.verl_sft.parquet` (`messages` with `<image>` tokens, `images`) for verl's
      multi-turn SFT.
    - verl-rl: `OUT/<name>.verl_rl.parquet`, one row per sample, the rows `medseg-agent train rl-data`
      writes; medsam protocol only (skipped, with a message, for ibis trajectories).

    Example: `medseg-agent trajectories export runs/traj --out runs/export -f hf -f verl-rl`
    """
    from medseg_agent.exports import write_exports

    chosen = formats or list(FORMATS)
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        fail(f"unknown --format {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    def skipped(fmt: str, reason: str) -> None:  # only the default "all formats" skips what does not apply
        warn(f"{fmt} skipped: {reason}")

    try:
        written = write_exports(
            folder,
            out,
            chosen,
            name=name,
            min_final_iou=min_final_iou,
            max_images=max_images,
            split=split,
            on_skip=None if formats else skipped,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    table = Table(title=f"exports in {out}")
    table.add_column("format")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for fmt, (path, rows) in written.items():
        table.add_row(fmt, str(path), str(rows))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(trajectories_app, name="trajectories")


if __name__ == "__main__":  # also runs on its own: python -m medseg_agent.cli.trajectories --help
    trajectories_app()
