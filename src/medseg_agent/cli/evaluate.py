"""``medseg-agent evaluate``: a policy driving a tool on whole datasets, with tables and plots.

The policy options (``--base-url``, ``--model``, ``--model-path``, ``--temperature``, ...) and
:func:`policy_options` are shared with ``segment`` so both commands spell them the same way.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from medseg_agent.cli.common import (
    CheckpointOption,
    DeviceOption,
    ModelTypeOption,
    RandomWeightsOption,
    ToolOption,
    console,
    err_console,
    fail,
    make_tool,
)

PANEL_MODEL = "Model policies (openai, hf)"
PANEL_RUN = "Scale-out and output"

PolicyName = Annotated[
    str,
    typer.Option(
        "--policy",
        help="clicker or expert (ground truth, upper bounds), openai (a served MLLM), hf (a local checkpoint).",
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="openai: API root, e.g. http://localhost:8000/v1 (vLLM, SGLang).",
                 rich_help_panel=PANEL_MODEL),
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="openai: served model name (default: the only one the server lists).",
                 rich_help_panel=PANEL_MODEL),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", help="openai: API key (default $OPENAI_API_KEY; local servers take any).",
                 rich_help_panel=PANEL_MODEL),
]
ModelPathOption = Annotated[
    Path | None,
    typer.Option("--model-path", help="hf: checkpoint folder (save_pretrained output, e.g. a fine-tuned agent).",
                 rich_help_panel=PANEL_MODEL),
]
NativeToolsOption = Annotated[
    bool,
    typer.Option("--native-tools", help="Structured function calling (tools=) instead of <tool_call> text.",
                 rich_help_panel=PANEL_MODEL),
]
HistoryOption = Annotated[
    int | None,
    typer.Option("--max-history-images", min=1,
                 help="Images per request, first view included (older turns dropped). Default: all.",
                 rich_help_panel=PANEL_MODEL),
]
TemperatureOption = Annotated[
    float, typer.Option("--temperature", min=0.0, help="0 = greedy; > 0 samples (seeded per sample and turn).",
                        rich_help_panel=PANEL_MODEL),
]
MaxTokensOption = Annotated[
    int, typer.Option("--max-tokens", min=1, help="Longest reply in tokens.", rich_help_panel=PANEL_MODEL)
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="openai: seconds per request before a retry.",
                        rich_help_panel=PANEL_MODEL),
]
RetriesOption = Annotated[
    int, typer.Option("--max-retries", min=0, help="openai: retries after timeouts, 429 and 5xx (back-off).",
                      rich_help_panel=PANEL_MODEL),
]
PolicyDeviceOption = Annotated[
    str, typer.Option("--policy-device", help="hf: auto, cpu, cuda, cuda:N.", rich_help_panel=PANEL_MODEL)
]
DtypeOption = Annotated[
    str, typer.Option("--dtype", help="hf: auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32.",
                      rich_help_panel=PANEL_MODEL),
]
StopIouOption = Annotated[
    float | None, typer.Option("--stop-iou", help="clicker: stop once IoU reaches this (default 0.9).")
]
PolicyOptionOption = Annotated[
    list[str] | None,
    typer.Option("--policy-option", help="Extra KEY=VALUE keyword for the policy (JSON values), repeatable."),
]


def parse_key_values(items: list[str] | None, what: str = "--policy-option") -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; values are JSON when they parse as JSON."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def policy_options(
    policy: str,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    model_path: Path | None = None,
    native_tools: bool = False,
    max_history_images: int | None = None,
    temperature: float = 0.0,
    max_tokens: int = 512,
    timeout: float = 120.0,
    max_retries: int = 3,
    policy_device: str = "auto",
    dtype: str = "auto",
    stop_iou: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """CLI values -> keyword arguments of the policy class (see ``build_policy``)."""
    options: dict[str, Any] = {}
    if policy == "openai":
        options = {
            "base_url": base_url or "http://localhost:8000/v1",
            "model": model,
            "api_key": api_key,
            "native_tools": native_tools,
            "max_history_images": max_history_images,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "timeout": timeout,
            "max_retries": max_retries,
        }
    elif policy == "hf":
        if model_path is None:
            raise ValueError("--policy hf needs --model-path (a local checkpoint folder)")
        options = {
            "model_path": str(model_path),
            "native_tools": native_tools,
            "max_history_images": max_history_images,
            "do_sample": temperature > 0,
            "max_new_tokens": max_tokens,
            "device": policy_device,
            "dtype": dtype,
        }
        if temperature > 0:
            options["temperature"] = temperature
    elif policy == "clicker" and stop_iou is not None:
        options = {"stop_iou": stop_iou}
    return {**options, **(extra or {})}


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
        int, typer.Option("--max-consecutive-errors", min=0, help="Invalid replies in a row before giving up.")
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
    from medseg_agent.environment.actions import CoordinateSpace
    from medseg_agent.environment.episode import EpisodeConfig
    from medseg_agent.evaluation.evaluate import EvalSpec, describe_run, run_evaluation
    from medseg_agent.evaluation.report import write_report
    from medseg_agent.policies.chat import PolicyError
    from medseg_agent.policies.registry import build_policy
    from medseg_agent.protocols import PROTOCOLS

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
