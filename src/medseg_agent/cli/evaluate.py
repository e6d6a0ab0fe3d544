"""``medseg-agent evaluate``: a policy driving a tool on whole datasets, with tables and plots.

The policy options (``--base-url``, ``--model``, ``--model-path``, ``--temperature``, ...) and
:func:`policy_options` are shared with ``segment`` so both commands spell them the same way.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from medseg_agent.cli.common import (  # noqa: F401  (shared with segment)
    PANEL_MODEL,
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
    err_console,
    fail,
    make_tool,
    parse_key_values,
    policy_options,
)

PANEL_RUN = "Scale-out and output"


def _ready(value: Any) -> Any:
    """Factory returning an object built in this process (single local worker: no rebuild)."""
    return value


def evaluate(
    data: Annotated[
        list[Path],
        typer.Option("--data", "-d", exists=True, help="Dataset folder or file (any supported layout); repeatable."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: records.jsonl, summary.*, plots/.")],
    policy: PolicyName = "clicker",
    tool: ToolOption = "classic",
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "cpu",
    model_type: ModelTypeOption = None,
    random_weights: RandomWeightsOption = False,
    split: Annotated[str, typer.Option("--split", help="Samples of this split only; 'all' for every split.")] = "test",
    data_format: Annotated[str, typer.Option("--format", help="Dataset layout (default: detected).")] = "auto",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N samples per --data.")] = None,
    protocol: Annotated[
        str, typer.Option("--protocol", help="medsam (tool calls) or ibis (click actions).")
    ] = "medsam",
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, help="Tool actions per episode.")] = 5,
    view_size: Annotated[int, typer.Option("--view-size", min=16, help="Longest side of the policy's view.")] = 512,
    coordinate_space: Annotated[
        str | None, typer.Option("--coordinate-space", help="norm1000, norm1 or pixel (default: the protocol's).")
    ] = None,
    max_consecutive_errors: Annotated[
        int,
        typer.Option("--max-consecutive-errors", min=1, help="End the episode on this many invalid replies in a row."),
    ] = 2,
    first_stop_retries: Annotated[
        int, typer.Option("--first-stop-retries", min=0, help="Times a stop before any mask is refused.")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Base seed (per-sample seeds derive from it).")] = 0,
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
    workers: Annotated[
        int, typer.Option("--workers", "-j", min=1, help="Parallel workers, each with its own tool and policy.",
                          rich_help_panel=PANEL_RUN)
    ] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Run the workers as Ray actors: auto (this cluster), ray://host:10001, "
                     "or local (a private instance).", rich_help_panel=PANEL_RUN),
    ] = None,
    ray_gpus_per_worker: Annotated[
        float, typer.Option("--ray-gpus-per-worker", min=0.0, help="GPUs each Ray actor reserves (e.g. 1 or 0.5).",
                            rich_help_panel=PANEL_RUN)
    ] = 0.0,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write plots/*.png.",
                                        rich_help_panel=PANEL_RUN)] = True,
    gallery: Annotated[int, typer.Option("--gallery", min=1, help="Cases per gallery row (best/median/worst).",
                                         rich_help_panel=PANEL_RUN)] = 4,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel=PANEL_RUN)] = False,
) -> None:
    """Evaluate a POLICY driving a TOOL on datasets: one trajectory record per sample in
    OUT/records.jsonl (appended atomically; rerun the same command to resume after a kill), then
    summary tables (OUT/summary.md, .csv, .json: Dice, IoU, NSD, HD95, turns, format-error rate, stop
    rate per dataset, modality, target and overall) and plots (OUT/plots/).

    Ground-truth policies (upper bounds) on the demo data:

      medseg-agent evaluate --data ~/.cache/medseg-agent/demo --policy expert --out runs/eval-expert

    A served model (first, elsewhere: vllm serve Qwen/Qwen3-VL-8B-Instruct --port 8000):

      medseg-agent evaluate -d data/test --policy openai --base-url http://localhost:8000/v1 -o runs/qwen3vl

    A local checkpoint:

      medseg-agent evaluate -d data/test --policy hf --model-path runs/sft/final -o runs/sft-eval

    See docs/inference.md for serving, native tool calls and Ray.
    """
    from medseg_agent.data.readers import open_dataset, summarize_skipped
    from medseg_agent.environment.episode import EpisodeConfig
    from medseg_agent.evaluation.evaluate import EvalSpec, describe_run, run_evaluation
    from medseg_agent.evaluation.report import write_report
    from medseg_agent.policies.chat import PolicyError
    from medseg_agent.policies.registry import build_policy
    from medseg_agent.protocols import PROTOCOLS
    from medseg_agent.vocabulary.actions import CoordinateSpace

    if protocol not in PROTOCOLS:
        fail(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    try:
        space = CoordinateSpace(coordinate_space) if coordinate_space else None
    except ValueError:
        choices = ", ".join(s.value for s in CoordinateSpace)
        fail(f"--coordinate-space must be one of {choices}, got {coordinate_space!r}")
    try:
        options = policy_options(
            policy, base_url=base_url, model=model, api_key=api_key, model_path=model_path,
            native_tools=native_tools, max_history_images=max_history_images, temperature=temperature,
            max_tokens=max_tokens, timeout=timeout, max_retries=max_retries, policy_device=policy_device,
            dtype=dtype, stop_iou=stop_iou, extra=parse_key_values(policy_option),
        )
    except ValueError as exc:
        fail(str(exc))
    episode = EpisodeConfig(
        max_turns=max_turns, protocol=protocol, coordinate_space=space, view_longest_side=view_size,
        max_consecutive_errors=max_consecutive_errors, first_stop_retries=first_stop_retries,
    )
    tool_options = {"checkpoint": checkpoint, "device": device, "model_type": model_type,
                    "random_weights": random_weights}
    build_tool_here = partial(make_tool, tool, checkpoint, device, model_type, random_weights)
    build_policy_here = partial(build_policy, policy, **options)
    if ray_address is None:  # fail fast, before reading data; a single worker reuses them
        tool_impl = build_tool_here()
        try:
            agent = build_policy_here()
        except (ValueError, TypeError, OSError, PolicyError) as exc:
            fail(f"cannot build policy {policy!r}: {exc}")
        if workers == 1:
            build_tool_here, build_policy_here = partial(_ready, tool_impl), partial(_ready, agent)
    spec = EvalSpec(
        make_tool=build_tool_here,
        make_policy=build_policy_here,
        episode=episode,
        seed=seed,
        describe=describe_run(policy, options, tool, tool_options, episode, seed),
    )

    samples = []
    for path in data:
        try:
            dataset = open_dataset(path, format=data_format, split=None if split == "all" else split)
            loaded = []
            for sample in dataset:
                loaded.append(sample)
                if limit is not None and len(loaded) >= limit:
                    break
        except (OSError, ValueError) as exc:
            fail(f"cannot read dataset {path}: {exc}")
        if dataset.skipped:
            err_console.print(summarize_skipped(dataset, limit=10))
        if not loaded:
            fail(f"{path} has no usable samples in split {split!r} (try --split all)")
        samples.extend(loaded)

    try:
        store, by_key = run_evaluation(
            samples, spec, out, workers=workers, ray_address=ray_address,
            ray_gpus_per_worker=ray_gpus_per_worker, show_progress=not quiet,
        )
    except PolicyError as exc:
        fail(f"{exc}\nrecords so far are kept in {out / 'records.jsonl'}; rerun the same command to resume")
    except (ValueError, RuntimeError) as exc:  # settings differ from the stored run; Ray missing
        fail(str(exc))
    title = f"{policy} + {tool} ({protocol}, {max_turns} turns)"
    results, paths = write_report(
        store, out, max_actions=max_turns, samples=by_key, title=title, meta=spec.describe, plots=plots,
        gallery_per_row=gallery,
    )
    _print_overview(results)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


def _print_overview(results) -> None:
    from rich.table import Table

    from medseg_agent.evaluation.summary import summarize

    table = Table(title=f"{len(results)} samples")
    for column in ("group", "n", "Dice", "IoU", "NSD", "HD95", "turns", "fmt err", "stop"):
        table.add_column(column)

    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"

    for row in summarize(results):
        if row["level"] in ("all", "modality"):
            name = f"all ({row['name']})" if row["level"] == "all" else row["name"]
            metrics = [fmt(row[m]) for m in ("dice", "iou", "nsd")]
            rates = [fmt(row["hd95"], 1), fmt(row["turns"], 2), fmt(row["format_error_rate"]), fmt(row["stop_rate"])]
            table.add_row(name, str(row["n"]), *metrics, *rates)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
