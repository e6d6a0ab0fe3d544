"""``medseg-agent trajectories ...``: expert trajectories at dataset scale, their summary, and SFT/RL
exports that LLaMA-Factory, TRL and verl load unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medseg_agent.cli.common import console, fail, load_samples, warn
from medseg_agent.cli.options import ExpertOptions, ToolOptions, expand_options

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
@expand_options
def generate(
    data: Annotated[
        Path,
        typer.Option("--data", help="Dataset folder or file (any layout `medseg-agent data list` reads)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", file_okay=False, help="Output folder; rerun with the same options to resume.")
    ],
    *,  # option groups: see medseg_agent.cli.options
    tool: ToolOptions,
    data_format: Annotated[
        str, typer.Option("--format", help="Dataset layout: auto, biomedparse, json, manifest, nifti, dicom.")
    ] = "auto",
    split: Annotated[str | None, typer.Option("--split", help="Only this split (e.g. train).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N samples.")] = None,
    expert: ExpertOptions,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes, each with its own tool.")
    ] = 1,
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
    from medseg_agent.experts.generate import generate_dataset

    try:
        config = expert.config()
    except ValueError as exc:
        fail(str(exc))
    tool.build()  # fail fast on a bad tool or checkpoint, before reading the data
    samples = load_samples([data], data_format=data_format, split=split, limit=limit)
    try:
        ran = generate_dataset(samples, out, config, tool_factory=tool.factory(), tool_id=tool.identity(),
                               workers=workers, show_progress=not quiet)
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
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Export folder (data files + images/).")],
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
        float, typer.Option("--min-final-iou", min=0.0, max=1.0, help="Leave out trajectories ending below this IoU.")
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
    try:
        written = write_exports(  # only the default "all formats" skips what does not apply
            folder, out, chosen, name=name, min_final_iou=min_final_iou, max_images=max_images, split=split,
            on_skip=None if formats else _warn_skipped,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    _print_written(written, out)


def _warn_skipped(fmt: str, reason: str) -> None:
    warn(f"{fmt} skipped: {reason}")


def _print_written(written: dict[str, tuple[Path, int]], out: Path) -> None:
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
