"""``medseg-agent train``: stage 1 (SFT with TRL) and stage 2 (multi-turn GRPO on verl, or TRL on one box)."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from medseg_agent.cli.common import console, fail, iter_samples, load_samples, parse_settings, say, warn
from medseg_agent.cli.options import (
    CpuOption,
    DemoRunOptions,
    MaxStepsOption,
    PatchSizeOption,
    RewardOption,
    SFTTrainOptions,
    ToolDeviceOption,
    VerlRunOptions,
    expand_options,
)

train_app = typer.Typer(
    help=(
        "Train an agent in two stages: `train sft` on expert trajectories (TRL SFTTrainer, LoRA optional), "
        "then multi-turn GRPO with rewards from `medseg-agent reward` on verl (`train rl-data`, `train rl`; "
        "one node or a Ray cluster) or, on one machine, TRL (`train grpo`).\n\n"
        "The whole recipe with commands: docs/training.md."
    ),
    no_args_is_help=True,
)


@expand_options
def sft(
    model: Annotated[str, typer.Option("--model", help="Base checkpoint folder or hub id in the local cache.")],
    data: Annotated[
        Path, typer.Option("--data", help="SFT rows: parquet/JSONL file or folder, or a datasets save_to_disk folder.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                      help="Output folder (checkpoints; final model in OUT/final).")],
    *,  # option group: see medseg_agent.cli.options
    training: SFTTrainOptions,
) -> None:
    """Stage 1: supervised fine-tuning on expert trajectories (TRL SFTTrainer).

    Rows are conversational: `messages` with image placeholders in user turns + `images`, e.g.
    `runs/export/medseg_expert.hf.parquet` from `trajectories export`. Resumes from the last checkpoint
    in OUT after a kill. The result (LoRA merged by default) loads with
    `--policy hf --model-path OUT/final`.

    Example: `medseg-agent train sft --model Qwen/Qwen3-VL-8B-Instruct
    --data runs/export/medseg_expert.hf.parquet --out runs/sft --lora`
    """
    from medseg_agent.training.sft import SFTDataError, loss_summary, run_sft

    try:
        result = run_sft(training.options(model, data, out))
    except (SFTDataError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        return
    console.print(
        f"trained {result.steps} steps ({result.trainable_parameters:,} of {result.total_parameters:,} parameters), "
        f"{loss_summary(result.losses, result.steps)}; model in {result.output_dir}"
    )


def rl_data(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder or manifest (any supported layout).")],
    out: Annotated[Path, typer.Option("--out", "-o", dir_okay=False,
                                      help="Parquet file to write (e.g. runs/rl/train.parquet).")],
    split: Annotated[str | None, typer.Option("--split", help="Only this split of the dataset.")] = None,
    data_format: Annotated[str, typer.Option("--format", help="Dataset layout; auto detects it.")] = "auto",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N samples.")] = None,
    images: Annotated[
        str,
        typer.Option("--images", help="inline: full-res PNG inside the parquet; files: PNGs in --image-dir."),
    ] = "inline",
    image_dir: Annotated[
        Path | None, typer.Option("--image-dir", help="With --images files: a folder every rollout node can read.")
    ] = None,
    view: Annotated[int, typer.Option("--view", min=16, help="Longest side of the image the model sees.")] = 512,
) -> None:
    """Write verl RL rows (RLHFDataset parquet) for a dataset.

    Each row is the first turn of an episode: the prompt, the view, the ground truth for the reward and what
    the tools need to start the episode.

    Example: medseg-agent train rl-data --data ~/.cache/medseg-agent/demo --out runs/rl/train.parquet
    """
    from medseg_agent.runs.parallel import progress_bar
    from medseg_agent.training.verl.dataset import iter_rl_rows, write_rl_parquet

    if images not in ("inline", "files"):
        fail(f"--images must be inline or files, got {images!r}")

    def samples():
        stream = iter_samples([data], data_format=data_format, split=split, limit=limit)
        first = next(stream, None)  # a dataset that cannot be opened fails here, before a progress bar shows
        with progress_bar() as progress:
            task = progress.add_task("RL rows", total=limit)
            for sample in itertools.chain([] if first is None else [first], stream):
                progress.advance(task)
                yield sample

    options = {"split": split or "train", "view_longest_side": view, "image_mode": images, "image_dir": image_dir}
    try:
        count = write_rl_parquet(iter_rl_rows(samples(), **options), out)
    except (ValueError, OSError) as exc:  # OSError: a folder of --out that is a file, no permission
        fail(str(exc))
        return
    console.print(f"wrote {count} RL rows to {out}")


def verl_config(
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                      help="Folder for tools.yaml and agent_loop.yaml.")],
    tool: Annotated[
        str, typer.Option("--tool", help="Tool server URL (http://host:port) or an in-process tool name.")
    ] = "http://127.0.0.1:8000",
    device: Annotated[str, typer.Option("--device", help="Device of an in-process tool.")] = "cuda",
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, help="Tool turns per episode.")] = 5,
    patch_size: PatchSizeOption = 16,
) -> None:
    """Write the verl tool and agent-loop YAMLs for your own `verl.trainer.main_ppo` command."""
    import shutil

    from medseg_agent.training.verl.launch import shipped_config, write_tool_config

    settings = {"tool": tool, "device": device, "max_turns": max_turns, "image_patch_size": patch_size}
    tools_yaml = write_tool_config(out / "tools.yaml", settings)
    loop_yaml = out / "agent_loop.yaml"
    shutil.copyfile(shipped_config("verl_agent_loop.yaml"), loop_yaml)
    console.print(
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tools_yaml.resolve()}\n"
        f"actor_rollout_ref.rollout.agent.agent_loop_config_path={loop_yaml.resolve()}"
    )


@expand_options
def rl(
    model: Annotated[str, typer.Option("--model", help="Policy checkpoint (the SFT result, e.g. runs/sft/final).")],
    train_files: Annotated[list[str], typer.Option("--train", help="RL parquet(s) from `train rl-data`, repeatable.")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                      help="Run folder: verl configs and checkpoints.")],
    *,  # option group: see medseg_agent.cli.options
    run: VerlRunOptions,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Extra verl Hydra overrides (after --), e.g. trainer.total_epochs=3.")
    ] = None,
) -> None:
    """Stage 2: multi-turn GRPO on verl, one node or a Ray cluster.

    Writes the tool/agent-loop YAMLs, checks the Hydra overrides against verl's config, then runs `python -m
    verl.trainer.main_ppo`. On a Ray cluster start Ray first
    (scripts/train/rl_ray_cluster.sh) and run this on the head node with --nnodes N.

    Example: medseg-agent train rl --model runs/sft/final --train runs/rl/train.parquet --out runs/rl \\
    --tool http://tool-server:8000 -- trainer.total_epochs=3
    """
    from medseg_agent.training.verl.launch import (
        RLConfigError,
        checked_run,
        shell_command,
        validation_warning,
        verl_command,
    )

    options = run.options(model, train_files, out, overrides)
    warning = validation_warning(options)
    if warning:
        warn(warning)
    try:
        args = checked_run(options)
    except RLConfigError as exc:
        fail(str(exc))
    console.print(shell_command(args), markup=False, soft_wrap=True)
    if run.dry_run:
        return
    raise typer.Exit(subprocess.call(verl_command(args)))


def grpo(
    model: Annotated[str, typer.Option("--model", help="Policy checkpoint (e.g. runs/sft/final).")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder or manifest (any supported layout).")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                      help="Output folder (final model in OUT/final).")],
    tool: Annotated[str, typer.Option("--tool", help="classic, sam, medsam, sam2 or http://host:port.")] = "classic",
    tool_device: ToolDeviceOption = "cpu",
    reward: RewardOption = "medseg",
    max_turns: Annotated[int, typer.Option("--max-turns", min=1)] = 5,
    generations: Annotated[int, typer.Option("--generations", min=2, help="Rollouts per prompt (GRPO group).")] = 4,
    max_steps: MaxStepsOption = -1,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 1e-6,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N samples.")] = None,
    cpu: CpuOption = False,
    chat_template: Annotated[
        str, typer.Option("--chat-template", help="qwen3_vl (TRL's, tool calls parsed), a .jinja file, or keep.")
    ] = "qwen3_vl",
) -> None:
    """Stage 2 on one machine: multi-turn GRPO with TRL's GRPOTrainer.

    Uses TRL's experimental environment_factory API: the model calls add_bbox / add_point / stop_action, sees
    each overlay, and the episode's record
    is scored by the reward library. For multi-GPU or multi-node runs use `train rl` (verl).
    """
    import datasets

    from medseg_agent.training.trl_grpo import GRPOOptions, grpo_rows, run_grpo
    from medseg_agent.vocabulary.errors import ToolError

    samples = load_samples([data], limit=limit)
    try:
        options = GRPOOptions(
            model=model,
            output_dir=str(out),
            tool=tool,
            tool_device=tool_device,
            reward=reward,
            max_turns=max_turns,
            num_generations=generations,
            batch_size=generations,
            max_steps=max_steps,
            learning_rate=learning_rate,
            use_cpu=cpu,
            gradient_checkpointing=not cpu,
            chat_template=None if chat_template == "keep" else chat_template,
        )
        result = run_grpo(options, datasets.Dataset.from_list(grpo_rows(samples)))
    except (ValueError, FileNotFoundError, ToolError) as exc:  # CheckpointError, RewardConfigError: ValueErrors
        fail(str(exc))
        return
    console.print(f"trained {result.steps} steps; mean rewards per log: {result.rewards}; model in {result.output_dir}")


@expand_options
def demo(run: DemoRunOptions) -> None:
    """Watch the two-stage recipe learn: synthetic scans -> expert trajectories -> SFT of a small Qwen-VL
    built from a config -> multi-turn GRPO (TRL, classic tool, --reward) -> evaluation of base, SFT and
    SFT + RL with the hf policy on the test split, and the ablation table (OUT/seed-N/table.md, .csv,
    .json; with several seeds, OUT/table.* holds mean ± spread) and GRPO curve (grpo_curve.png).

    Every stage is kept and skipped on a rerun. The reward sandbox that trains: rerun only stage 2 with
    another reward and compare the rows.

    Examples:

      medseg-agent train demo                                   # one seed, ~30 min on 2 CPU cores

      medseg-agent train demo --seeds 0,1,2                     # the learning claim: mean ± spread

      medseg-agent train demo --stages rl --from runs/train-demo/seed-0/sft -r my_reward.yaml -o runs/my-reward

      medseg-agent train demo --base-model /models/Qwen2.5-VL-3B-Instruct --device cuda -o runs/demo-3b
    """
    import torch

    from medseg_agent.recipes.train_demo import (
        PRESETS,
        DemoError,
        DemoOptions,
        parse_seeds,
        run_demo_table,
        settings_with,
    )
    from medseg_agent.rewards import RewardConfigError

    if run.size not in PRESETS:
        fail(f"--size must be one of {', '.join(PRESETS)}, got {run.size!r}")
    if run.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {run.device}: CUDA is not available on this machine; use --device cpu")
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    try:
        options = DemoOptions(
            out=run.out,
            settings=settings_with(PRESETS[run.size], parse_settings(run.settings)),
            stages=run.stage_names(),
            from_model=run.from_model,
            base_model=run.base_model,
            reward=run.reward,
            reward_overrides=list(run.reward_set or []),
            device=run.device,
            references=run.references,
            workers=run.worker_count(),
            show_progress=not run.quiet,
            log=lambda message: say(("demo ", "bold"), message, err=True),
        )
        table = run_demo_table(options, parse_seeds(run.seeds))
    except (DemoError, RewardConfigError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    _print_demo_table(table.rows, table.title, table.spread)
    for name, path in table.tables.items():
        console.print(f"{name}: {path}")


def _print_demo_table(rows: list[dict[str, Any]], title: str, spread: bool) -> None:
    from rich.table import Table

    from medseg_agent.recipes.train_demo_report import COLUMNS, format_value, row_title

    table = Table(title=f"train demo: test split, {title}")
    table.add_column("stage")
    for _, label in COLUMNS:
        table.add_column(label, justify="right")
    table.add_column("n", justify="right")
    for row in rows:
        cells = [format_value(row[key], row.get(f"{key}_std") if spread else None) for key, _ in COLUMNS]
        table.add_row(row_title(row), *cells, str(row["n"]))
    console.print(table)


def register(app: typer.Typer) -> None:
    train_app.command("sft")(sft)
    train_app.command("rl-data")(rl_data)
    train_app.command("verl-config")(verl_config)
    train_app.command("rl")(rl)
    train_app.command("grpo")(grpo)
    train_app.command("demo")(demo)
    app.add_typer(train_app, name="train")
