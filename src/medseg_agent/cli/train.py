"""``medseg-agent train``: stage 1 (SFT with TRL) and stage 2 (multi-turn GRPO on verl, or TRL on one box)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from medseg_agent.cli.common import console, err_console, fail, say, warn
from medseg_agent.cli.options import DemoRunOptions, expand_options

train_app = typer.Typer(
    help=(
        "Train an agent in two stages: `train sft` on expert trajectories (TRL SFTTrainer, LoRA optional), "
        "then multi-turn GRPO with rewards from `medseg-agent reward` on verl (`train rl-data`, `train rl`; "
        "one node or a Ray cluster) or, on one machine, TRL (`train grpo`).\n\n"
        "The whole recipe with commands: docs/training.md."
    ),
    no_args_is_help=True,
)


def _extra(items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs (YAML values) for trainer configs."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--set {item!r}: expected KEY=VALUE, e.g. --set warmup_steps=10")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def sft(
    model: Annotated[str, typer.Option("--model", help="Base checkpoint folder or hub id in the local cache.")],
    data: Annotated[
        Path, typer.Option("--data", help="SFT rows: parquet/JSONL file or folder, or a datasets save_to_disk folder.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (checkpoints; final model in OUT/final).")],
    lora: Annotated[bool, typer.Option("--lora/--full", help="LoRA adapters (PEFT) or full fine-tuning.")] = False,
    lora_rank: Annotated[int, typer.Option("--lora-rank", min=1)] = 8,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", min=1)] = 16,
    freeze_vision: Annotated[
        bool, typer.Option("--freeze-vision/--train-vision", help="Keep the vision tower frozen.")
    ] = True,
    all_tokens: Annotated[
        bool, typer.Option("--all-tokens", help="Loss on every token instead of the assistant replies only.")
    ] = False,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (1e-5 full, 1e-4 LoRA).")] = 1e-5,
    epochs: Annotated[float, typer.Option("--epochs")] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after N optimizer steps (-1: epochs).")] = -1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Per-device batch size.")] = 1,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1)] = 8,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Truncate longer rows (default: never; images must stay whole).")
    ] = None,
    save_steps: Annotated[int, typer.Option("--save-steps", min=1)] = 500,
    merge_lora: Annotated[bool, typer.Option("--merge/--no-merge", help="Merge LoRA into OUT/final.")] = True,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on CPU (smoke tests).")] = False,
    report_to: Annotated[str, typer.Option("--report-to", help="none, tensorboard, wandb.")] = "none",
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Any other SFTConfig field, repeatable: --set warmup_steps=10.")
    ] = None,
) -> None:
    """Stage 1: supervised fine-tuning on expert trajectories (TRL SFTTrainer).

    Rows are conversational: `messages` with image placeholders in user turns + `images`, e.g.
    `runs/export/medseg_expert.hf.parquet` from `trajectories export`. Resumes from the last checkpoint
    in OUT after a kill. The result (LoRA merged by default) loads with
    `--policy hf --model-path OUT/final`.

    Example: `medseg-agent train sft --model Qwen/Qwen3-VL-8B-Instruct
    --data runs/export/medseg_expert.hf.parquet --out runs/sft --lora`
    """
    from medseg_agent.training.sft import SFTDataError, SFTOptions, loss_summary, run_sft

    options = SFTOptions(
        model=model,
        data=str(data),
        output_dir=str(out),
        lora=lora,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        freeze_vision=freeze_vision,
        assistant_only=not all_tokens,
        learning_rate=learning_rate,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        save_steps=save_steps,
        merge_lora=merge_lora,
        use_cpu=cpu,
        gradient_checkpointing=not cpu,
        report_to=report_to,
        extra=_extra(settings),
    )
    try:
        result = run_sft(options)
    except (SFTDataError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        return
    console.print(
        f"trained {result.steps} steps ({result.trainable_parameters:,} of {result.total_parameters:,} parameters), "
        f"{loss_summary(result.losses, result.steps)}; model in {result.output_dir}"
    )


def rl_data(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder or manifest (any supported layout).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write (e.g. runs/rl/train.parquet).")],
    split: Annotated[str | None, typer.Option("--split", help="Only this split of the dataset.")] = None,
    data_format: Annotated[str, typer.Option("--format", help="Dataset layout; auto detects it.")] = "auto",
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N samples.")] = None,
    images: Annotated[
        str,
        typer.Option("--images", help="inline: full-res PNG inside the parquet; files: PNGs in --image-dir."),
    ] = "inline",
    image_dir: Annotated[
        Path | None, typer.Option("--image-dir", help="With --images files: a folder every rollout node can read.")
    ] = None,
    view: Annotated[int, typer.Option("--view", help="Longest side of the image the model sees.")] = 512,
) -> None:
    """Write verl RL rows (RLHFDataset parquet) for a dataset.

    Each row is the first turn of an episode: the prompt, the view, the ground truth for the reward and what
    the tools need to start the episode.

    Example: medseg-agent train rl-data --data ~/.cache/medseg-agent/demo --out runs/rl/train.parquet
    """
    from medseg_agent.data.readers import open_dataset, summarize_skipped
    from medseg_agent.runs.parallel import progress_bar
    from medseg_agent.training.verl.dataset import iter_rl_rows, write_rl_parquet

    if images not in ("inline", "files"):
        fail(f"--images must be inline or files, got {images!r}")
    try:
        dataset = open_dataset(data, format=data_format, split=split)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        return

    def samples():
        with progress_bar() as progress:
            task = progress.add_task("RL rows", total=limit)
            for index, sample in enumerate(dataset):
                if limit is not None and index >= limit:
                    break
                progress.advance(task)
                yield sample

    options = {"split": split or "train", "view_longest_side": view, "image_mode": images, "image_dir": image_dir}
    try:
        count = write_rl_parquet(iter_rl_rows(samples(), **options), out)
    except ValueError as exc:
        fail(str(exc))
        return
    skipped = summarize_skipped(dataset)
    if skipped:
        err_console.print(skipped)
    console.print(f"wrote {count} RL rows to {out}")


def verl_config(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tools.yaml and agent_loop.yaml.")],
    tool: Annotated[
        str, typer.Option("--tool", help="Tool server URL (http://host:port) or an in-process tool name.")
    ] = "http://127.0.0.1:8000",
    device: Annotated[str, typer.Option("--device", help="Device of an in-process tool.")] = "cuda",
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, help="Tool turns per episode.")] = 5,
    patch_size: Annotated[int, typer.Option("--patch-size", help="Vision patch: 16 Qwen3-VL, 14 Qwen2/2.5-VL.")] = 16,
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


def rl(
    model: Annotated[str, typer.Option("--model", help="Policy checkpoint (the SFT result, e.g. runs/sft/final).")],
    train_files: Annotated[list[str], typer.Option("--train", help="RL parquet(s) from `train rl-data`, repeatable.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: verl configs and checkpoints.")],
    val_files: Annotated[list[str] | None, typer.Option("--val", help="Validation parquet(s), repeatable.")] = None,
    tool: Annotated[
        str, typer.Option("--tool", help="Tool server URL (recommended) or an in-process tool name.")
    ] = "http://127.0.0.1:8000",
    tool_device: Annotated[str, typer.Option("--tool-device", help="Device of an in-process tool.")] = "cuda",
    max_turns: Annotated[int, typer.Option("--max-turns", min=1)] = 5,
    patch_size: Annotated[int, typer.Option("--patch-size", help="16 Qwen3-VL, 14 Qwen2/2.5-VL.")] = 16,
    reward: Annotated[
        str, typer.Option("--reward", "-r", help="Reward preset or YAML (see `reward presets`).")
    ] = "medseg",
    reward_set: Annotated[
        list[str] | None, typer.Option("--reward-set", help="Reward override, repeatable: params.good_iou=0.85.")
    ] = None,
    nnodes: Annotated[int, typer.Option("--nnodes", min=1, help="Nodes of the Ray cluster.")] = 1,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=1)] = 8,
    experiment: Annotated[str, typer.Option("--experiment", help="trainer.experiment_name.")] = "grpo",
    recipe: Annotated[
        Path | None, typer.Option("--recipe", help="Your copy of training/configs/verl_grpo.yaml.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the config and print the command only.")] = False,
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
        RLLaunchOptions,
        compose_verl_config,
        prepare_run,
        shell_command,
        verl_command,
    )

    options = RLLaunchOptions(
        model=model,
        train_files=[str(Path(f).resolve()) for f in train_files],
        val_files=[str(Path(f).resolve()) for f in (val_files or [])],
        out_dir=str(out),
        tool=tool,
        tool_device=tool_device,
        max_turns=max_turns,
        image_patch_size=patch_size,
        reward=reward,
        reward_overrides=list(reward_set or []),
        nnodes=nnodes,
        gpus_per_node=gpus_per_node,
        experiment_name=experiment,
        recipe=str(recipe) if recipe else None,
        overrides=list(overrides or []),
    )
    if not options.val_files:
        warn(
            f"no --val: verl validates on the training file(s) {', '.join(options.train_files)}, which says "
            "nothing about held-out data; pass --val (e.g. `train rl-data --data data/val --out runs/rl/val.parquet`)"
        )
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        args = prepare_run(options)
    except (ValueError, OSError) as exc:  # an unreadable --recipe or reward
        fail(str(exc))
    try:
        compose_verl_config(args)
    except (HydraException, OmegaConfBaseException) as exc:  # an unknown key, a bad value or syntax
        fail(f"verl rejected the configuration: {exc}")
    console.print(shell_command(args), markup=False, soft_wrap=True)
    if dry_run:
        return
    raise typer.Exit(subprocess.call(verl_command(args)))


def grpo(
    model: Annotated[str, typer.Option("--model", help="Policy checkpoint (e.g. runs/sft/final).")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder or manifest (any supported layout).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (final model in OUT/final).")],
    tool: Annotated[str, typer.Option("--tool", help="classic, sam, medsam, sam2 or http://host:port.")] = "classic",
    tool_device: Annotated[str, typer.Option("--tool-device")] = "cpu",
    reward: Annotated[str, typer.Option("--reward", "-r", help="Reward preset or YAML.")] = "medseg",
    max_turns: Annotated[int, typer.Option("--max-turns", min=1)] = 5,
    generations: Annotated[int, typer.Option("--generations", min=2, help="Rollouts per prompt (GRPO group).")] = 4,
    max_steps: Annotated[int, typer.Option("--max-steps")] = -1,
    learning_rate: Annotated[float, typer.Option("--lr")] = 1e-6,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N samples.")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on CPU (smoke tests).")] = False,
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

    from medseg_agent.data.readers import open_dataset
    from medseg_agent.training.trl_grpo import GRPOOptions, grpo_rows, run_grpo

    samples = []
    for index, sample in enumerate(open_dataset(data)):
        if limit is not None and index >= limit:
            break
        samples.append(sample)
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
            settings=settings_with(PRESETS[run.size], _extra(run.settings)),
            stages=run.stage_names(),
            from_model=run.from_model,
            reward=run.reward,
            reward_overrides=list(run.reward_set or []),
            device=run.device,
            references=run.references,
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
        table.add_row(row_title(row["row"]), *cells, str(row["n"]))
    console.print(table)


def register(app: typer.Typer) -> None:
    train_app.command("sft")(sft)
    train_app.command("rl-data")(rl_data)
    train_app.command("verl-config")(verl_config)
    train_app.command("rl")(rl)
    train_app.command("grpo")(grpo)
    train_app.command("demo")(demo)
    app.add_typer(train_app, name="train")
