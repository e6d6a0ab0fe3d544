"""Option groups: each group of options is declared once, as a dataclass whose fields carry their
typer option (flag, help, panel, bounds), and every command that takes the group lists one parameter
of that type. :func:`expand_options` turns such a parameter into the group's options for typer and
back into one object for the command, the way TRL generates its CLI from one config dataclass.

Groups: :class:`ToolOptions` (``segment``, ``evaluate``, ``trajectories generate``),
:class:`PolicyOptions` (``segment``, ``evaluate``), :class:`EpisodeOptions` (``segment``,
``evaluate``), :class:`ExpertOptions` (``trajectories generate``), :class:`RunOptions`
(``evaluate``), :class:`SFTTrainOptions` (``train sft``), :class:`VerlRunOptions` (``train rl``; its
reward, tool-device and patch-size declarations are shared with ``train grpo`` and ``train verl-config``),
:class:`DemoRunOptions` (``train demo``), :class:`ServedToolOptions` (``serve``, ``app``),
:class:`AppServerOptions` and :class:`AgentOptions` (``app``; the server flags are ``serve``'s declarations).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import typing
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from medseg_agent.cli.common import (
    CheckpointOption,
    DeviceOption,
    ModelTypeOption,
    RandomWeightsOption,
    ToolOption,
    fail,
    make_tool,
    parse_key_values,
    parse_settings,
    server_config,
    tool_spec,
)
from medseg_agent.experts import defaults
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.tools.spec import ToolSpec
from medseg_agent.vocabulary.actions import CoordinateSpace

PANEL_MODEL = "Model policies (openai, hf)"
PANEL_RUN = "Scale-out and output"

Command = TypeVar("Command", bound=Callable[..., Any])


def is_option_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation) and hasattr(annotation, "OPTION_GROUP")


def group_parameters(group: type) -> list[inspect.Parameter]:
    """The group's fields as keyword parameters carrying their typer options."""
    hints = typing.get_type_hints(group, include_extras=True)
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name], default=f.default)
        for f in dataclasses.fields(group)
    ]


def expand_options(command: Command) -> Command:
    """Let typer see each option-group parameter of ``command`` as the group's own options, and call
    ``command`` with one group object per such parameter (built from the parsed values)."""
    signature = inspect.signature(command, eval_str=True)
    groups = {name: p.annotation for name, p in signature.parameters.items() if is_option_group(p.annotation)}
    parameters: list[inspect.Parameter] = []
    for name, parameter in signature.parameters.items():
        if name in groups:
            parameters += group_parameters(groups[name])
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    names = [p.name for p in parameters]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise TypeError(f"{command.__name__}: option names declared twice: {', '.join(clashes)}")

    @functools.wraps(command)
    def parsed(**values: Any) -> Any:
        for name, group in groups.items():
            values[name] = group(**{f.name: values.pop(f.name) for f in dataclasses.fields(group)})
        return command(**values)

    parsed.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    parsed.__annotations__ = {p.name: p.annotation for p in parameters}
    return typing.cast(Command, parsed)


@dataclasses.dataclass(frozen=True)
class ToolOptions:
    """Which segmentation tool to build, and from which weights."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    tool: ToolOption = "classic"
    checkpoint: CheckpointOption = None
    device: DeviceOption = "cpu"
    model_type: ModelTypeOption = None
    random_weights: RandomWeightsOption = False

    def factory(self) -> Callable[[], Any]:
        """A picklable builder, for worker processes and Ray actors that each build their own tool."""
        return partial(make_tool, self.tool, self.checkpoint, self.device, self.model_type, self.random_weights)

    def build(self) -> Any:
        return self.factory()()

    def settings(self) -> dict[str, Any]:
        """The tool's settings as ``evaluate`` stores them in run.json (compared on resume)."""
        return {"checkpoint": str(self.checkpoint) if self.checkpoint else None, "device": self.device,
                "model_type": self.model_type, "random_weights": self.random_weights}

    def identity(self) -> dict[str, Any]:
        """What decides a tool's masks, as ``trajectories generate`` stores it (the device does not)."""
        settings = self.settings()
        del settings["device"]
        return {"name": self.tool, **settings}


@dataclasses.dataclass(frozen=True)
class PolicyOptions:
    """Which policy drives the tool: a ground-truth rule, a served MLLM or a local checkpoint."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    policy: Annotated[str, typer.Option(
        "--policy",
        help="clicker, expert or box-only (ground truth: references), openai (a served MLLM), hf (a local checkpoint).",
    )] = "clicker"
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="openai: API root, e.g. http://localhost:8000/v1 (vLLM, SGLang).",
        rich_help_panel=PANEL_MODEL)] = None
    model: Annotated[str | None, typer.Option(
        "--model", help="openai: served model name (default: the only one the server lists).",
        rich_help_panel=PANEL_MODEL)] = None
    api_key: Annotated[str | None, typer.Option(
        "--api-key", help="openai: API key (default $OPENAI_API_KEY; local servers take any).",
        rich_help_panel=PANEL_MODEL)] = None
    model_path: Annotated[Path | None, typer.Option(
        "--model-path", help="hf: checkpoint folder (save_pretrained output, e.g. a fine-tuned agent).",
        rich_help_panel=PANEL_MODEL)] = None
    native_tools: Annotated[bool, typer.Option(
        "--native-tools", help="Structured function calling (tools=) instead of `<tool_call>` text.",
        rich_help_panel=PANEL_MODEL)] = False
    max_history_images: Annotated[int | None, typer.Option(
        "--max-history-images", min=1, help="Images per request, first view included (older turns dropped). "
        "Default: all.", rich_help_panel=PANEL_MODEL)] = None
    temperature: Annotated[float, typer.Option(
        "--temperature", min=0.0, help="0 = greedy; > 0 samples (seeded per sample and turn).",
        rich_help_panel=PANEL_MODEL)] = 0.0
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", min=1, help="Longest reply in tokens.", rich_help_panel=PANEL_MODEL)] = 512
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.1, help="openai: seconds per request before a retry.", rich_help_panel=PANEL_MODEL)] = 120.0
    max_retries: Annotated[int, typer.Option(
        "--max-retries", min=0, help="openai: retries after timeouts, 429 and 5xx (back-off).",
        rich_help_panel=PANEL_MODEL)] = 3
    policy_device: Annotated[str, typer.Option(
        "--policy-device", help="hf: auto, cpu, cuda, cuda:N.", rich_help_panel=PANEL_MODEL)] = "auto"
    dtype: Annotated[str, typer.Option(
        "--dtype", help="hf: auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32.",
        rich_help_panel=PANEL_MODEL)] = "auto"
    stop_iou: Annotated[float | None, typer.Option(
        "--stop-iou", help="clicker: stop once IoU reaches this (default 0.9).")] = None
    policy_option: Annotated[list[str] | None, typer.Option(
        "--policy-option", help="Extra KEY=VALUE keyword for the policy (JSON values), repeatable.")] = None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the policy class (see ``build_policy``); ValueError on a missing or
        malformed option."""
        options: dict[str, Any] = {}
        if self.policy == "openai":
            options = {
                "base_url": self.base_url or "http://localhost:8000/v1", "model": self.model,
                "api_key": self.api_key, "native_tools": self.native_tools,
                "max_history_images": self.max_history_images, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "timeout": self.timeout, "max_retries": self.max_retries,
            }
        elif self.policy == "hf":
            if self.model_path is None:
                raise ValueError("--policy hf needs --model-path (a local checkpoint folder)")
            options = {
                "model_path": str(self.model_path), "native_tools": self.native_tools,
                "max_history_images": self.max_history_images, "do_sample": self.temperature > 0,
                "max_new_tokens": self.max_tokens, "device": self.policy_device, "dtype": self.dtype,
            }
            if self.temperature > 0:
                options["temperature"] = self.temperature
        elif self.policy == "clicker" and self.stop_iou is not None:
            options = {"stop_iou": self.stop_iou}
        return {**options, **parse_key_values(self.policy_option)}

    def factory(self) -> Callable[[], Any]:
        """A picklable builder of the policy (each worker builds its own); ValueError on a bad option."""
        from medseg_agent.policies.registry import build_policy

        return partial(build_policy, self.policy, **self.kwargs())

    def build(self) -> Any:
        """The policy, built here; a policy that cannot be built is a clean exit saying why."""
        from medseg_agent.policies.chat import PolicyError

        try:
            return self.factory()()
        except (ValueError, TypeError, OSError, PolicyError) as exc:
            fail(f"cannot build policy {self.policy!r}: {exc}")


ProtocolOption = Annotated[str, typer.Option("--protocol", help="medsam (tool calls, boxes and points) or ibis "
                                             "(`<think>` + click actions).")]
ViewSizeOption = Annotated[int, typer.Option("--view-size", min=16, help="Longest side of the image the policy sees.")]


@dataclasses.dataclass(frozen=True)
class EpisodeOptions:
    """How one episode runs: the action protocol, its budgets and the policy's view."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    protocol: ProtocolOption = "medsam"
    max_turns: Annotated[int, typer.Option(
        "--max-turns", min=1, help="Tool actions per episode (boxes and clicks).")] = 5
    view_size: ViewSizeOption = 512
    coordinate_space: Annotated[CoordinateSpace | None, typer.Option(
        "--coordinate-space", help="How the policy writes coordinates (default: the protocol's).")] = None
    max_consecutive_errors: Annotated[int, typer.Option(
        "--max-consecutive-errors", min=1, help="End the episode on this many invalid replies in a row.")] = 2
    first_stop_retries: Annotated[int, typer.Option(
        "--first-stop-retries", min=0, help="Times a stop before any mask is refused.")] = 1

    def config(self) -> Any:
        """The environment's EpisodeConfig; ValueError names a protocol that does not exist."""
        from medseg_agent.environment.episode import EpisodeConfig
        from medseg_agent.protocols import PROTOCOLS

        if self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        return EpisodeConfig(
            max_turns=self.max_turns, protocol=self.protocol, coordinate_space=self.coordinate_space,
            view_longest_side=self.view_size, max_consecutive_errors=self.max_consecutive_errors,
            first_stop_retries=self.first_stop_retries,
        )


@dataclasses.dataclass(frozen=True)
class ExpertOptions:
    """How the simulated expert acts; unset values take the mode's defaults (experts/defaults.py)."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    per_sample: Annotated[int, typer.Option(
        "--per-sample", min=1, help="Distinct trajectories per sample (seeds, strategies).")] = 1
    protocol: ProtocolOption = "medsam"
    mode: Annotated[str, typer.Option(
        "--mode", help="hybrid (box or point first, parsimonious corrections) or clicks "
        "(IBISAgent's generator: clicker rule, stop at IoU 0.8).")] = "hybrid"
    max_turns: Annotated[int | None, typer.Option(
        "--max-turns", min=1, help=f"Action limit per episode (default {defaults.MAX_TURNS['hybrid']} hybrid, "
        f"{defaults.MAX_TURNS['clicks']} clicks).")] = None
    reasoning: Annotated[bool | None, typer.Option(
        "--reasoning/--no-reasoning",
        help="Write the rationale as `<think>` reasoning (default: on for ibis, off for medsam).")] = None
    delta: Annotated[float | None, typer.Option(
        "--delta", help=f"Keep an action only if it raises IoU by at least this (default {defaults.DELTA}).")] = None
    epsilon: Annotated[float | None, typer.Option(
        "--epsilon", help=f"Stop when the best candidate gains less than this (default {defaults.EPSILON}).")] = None
    tau: Annotated[float | None, typer.Option(
        "--tau", help=f"Stop when IoU reaches this (default {defaults.TAU['hybrid']} hybrid, "
        f"{defaults.TAU['clicks']} clicks).")] = None
    max_tries: Annotated[int | None, typer.Option(
        "--max-tries", min=1, help=f"Candidate actions tried per turn (default {defaults.MAX_TRIES}).")] = None
    box_jitter: Annotated[float | None, typer.Option(
        "--box-jitter", help=f"Box side jitter as a fraction of the box size (default {defaults.BOX_JITTER}).")] = None
    other_share: Annotated[float | None, typer.Option(
        "--other-share", help="Share of episodes starting with the other strategy than the rule's "
        f"(default {defaults.OTHER_SHARE}).")] = None
    view_size: ViewSizeOption = 512
    seed: Annotated[int, typer.Option(
        "--seed", min=0, help="Base seed; each trajectory's seed derives from it and the sample.")] = 0

    def config(self) -> Any:
        """The GenerationConfig, checked (ValueError names the bad option) before any work starts."""
        from medseg_agent.experts.generate import GenerationConfig

        expert = {name: getattr(self, name) for name in ("delta", "epsilon", "tau", "max_tries", "box_jitter",
                                                         "other_share") if getattr(self, name) is not None}
        config = GenerationConfig(
            mode=self.mode, protocol=self.protocol, per_sample=self.per_sample, max_turns=self.max_turns,
            view_longest_side=self.view_size, reasoning=self.reasoning, seed=self.seed, expert=expert,
        )
        config.validate()
        return config


#: One declaration for every command that runs on Ray (``evaluate``'s workers, ``serve``'s replicas).
RayAddressOption = Annotated[str | None, typer.Option(
    "--ray-address", help="Run on Ray: auto (the cluster this node belongs to), ray://host:10001, or local "
    "(a private instance): evaluate's workers become Ray actors, serve --replicas joins that cluster.",
    rich_help_panel=PANEL_RUN)]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where the episodes run (local worker processes or Ray actors, each with its own tool and
    policy) and what the run writes besides the records."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    workers: Annotated[int, typer.Option(
        "--workers", "-j", min=1, help="Parallel workers, each with its own tool and policy.",
        rich_help_panel=PANEL_RUN)] = 1
    ray_address: RayAddressOption = None
    ray_gpus_per_worker: Annotated[float, typer.Option(
        "--ray-gpus-per-worker", min=0.0, help="GPUs each Ray actor reserves (e.g. 1 or 0.5).",
        rich_help_panel=PANEL_RUN)] = 0.0
    plots: Annotated[bool, typer.Option(
        "--plots/--no-plots", help="Write plots/*.png.", rich_help_panel=PANEL_RUN)] = True
    gallery: Annotated[int, typer.Option(
        "--gallery", min=1, help="Cases per gallery row (best/median/worst).", rich_help_panel=PANEL_RUN)] = 4
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel=PANEL_RUN)] = False

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``evaluate_to_folder``."""
        return {"workers": self.workers, "ray_address": self.ray_address, "ray_gpus_per_worker":
                self.ray_gpus_per_worker, "plots": self.plots, "gallery_per_row": self.gallery,
                "show_progress": not self.quiet}


PANEL_DEMO = "Learning demo"


@dataclasses.dataclass(frozen=True)
class DemoRunOptions:
    """What ``train demo`` runs: where, which seeds and stages, which reward, and which settings change."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    out: Annotated[Path, typer.Option(
        "--out", "-o", file_okay=False,
        help="Run folder (shared data + seed-N/ per seed).", rich_help_panel=PANEL_DEMO)] = Path(
        "runs/train-demo")
    seeds: Annotated[str, typer.Option(
        "--seeds", help="Seeds to train, comma-separated: 0 or 0,1,2.", rich_help_panel=PANEL_DEMO)] = "0"
    stages: Annotated[str, typer.Option(
        "--stages", help="Training stages to run: expert,sft,rl (evaluation always follows).",
        rich_help_panel=PANEL_DEMO)] = "expert,sft,rl"
    from_model: Annotated[Path | None, typer.Option(
        "--from", help="Start stage 2 from this SFT model (a checkpoint, an sft/ or seed-N/ folder).",
        rich_help_panel=PANEL_DEMO)] = None
    base_model: Annotated[Path | None, typer.Option(
        "--base-model", help="Start stage 1 from this local Qwen-VL checkpoint (a pretrained one, e.g. "
        "Qwen2.5-VL-3B-Instruct with --device cuda) instead of the small model built from the config.",
        rich_help_panel=PANEL_DEMO)] = None
    reward: Annotated[str, typer.Option(
        "--reward", "-r", help="Reward preset or YAML for GRPO and the table.", rich_help_panel=PANEL_DEMO)] = "medseg"
    reward_set: Annotated[list[str] | None, typer.Option(
        "--reward-set", help="Reward override, repeatable: params.good_iou=0.85.", rich_help_panel=PANEL_DEMO)] = None
    device: Annotated[str, typer.Option(
        "--device", help="cpu, or cuda (bf16) for the model stages.", rich_help_panel=PANEL_DEMO)] = "cpu"
    size: Annotated[str, typer.Option(
        "--size", help="demo (the measured run) or smoke (seconds, for checks).", rich_help_panel=PANEL_DEMO)] = "demo"
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Change a setting, repeatable: --set rl_steps=100 --set model.hidden_size=256.",
        rich_help_panel=PANEL_DEMO)] = None
    references: Annotated[bool, typer.Option(
        "--references/--no-references", help="Expert, box-only and clicker rows.", rich_help_panel=PANEL_DEMO)] = True
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="CPU threads for torch.", rich_help_panel=PANEL_DEMO)] = None
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Processes for the tool-only work (expert trajectories, reference rows); "
        "results do not depend on it. Default: the CPU count, at most 8.", rich_help_panel=PANEL_DEMO)] = None
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.", rich_help_panel=PANEL_DEMO)] = False

    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.stages.split(",") if s.strip())

    def worker_count(self) -> int:
        return self.workers or min(8, os.cpu_count() or 1)


# Training options that several `train` commands take, declared once.
CpuOption = Annotated[bool, typer.Option("--cpu", help="Train on CPU (smoke tests).")]
MaxStepsOption = Annotated[int, typer.Option("--max-steps", min=-1, help="Stop after N optimizer steps (-1: epochs).")]
RewardOption = Annotated[str, typer.Option(
    "--reward", "-r",
    help="A preset (medsam_agent, ibis_agent, medseg) or a reward YAML file (see `reward presets --yaml`).")]
RewardSetOption = Annotated[list[str] | None, typer.Option(
    "--reward-set", help="Reward override, repeatable: params.good_iou=0.85.")]
ToolDeviceOption = Annotated[str, typer.Option("--tool-device", help="Device of an in-process tool.")]
PatchSizeOption = Annotated[int, typer.Option(
    "--patch-size", min=1, help="Vision patch: 16 Qwen3-VL, 14 Qwen2/2.5-VL.")]


@dataclasses.dataclass(frozen=True)
class SFTTrainOptions:
    """How ``train sft`` fine-tunes: LoRA or full, what the loss sees, the schedule, and any other
    SFTConfig field. Fields that keep SFTOptions' name pass through unchanged (see :meth:`options`)."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    lora: Annotated[bool, typer.Option("--lora/--full", help="LoRA adapters (PEFT) or full fine-tuning.")] = False
    lora_rank: Annotated[int, typer.Option("--lora-rank", min=1)] = 8
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", min=1)] = 16
    freeze_vision: Annotated[bool, typer.Option(
        "--freeze-vision/--train-vision", help="Keep the vision tower frozen.")] = True
    all_tokens: Annotated[bool, typer.Option(
        "--all-tokens", help="Loss on every token instead of the assistant replies only.")] = False
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (1e-5 full, 1e-4 LoRA).")] = 1e-5
    epochs: Annotated[float, typer.Option("--epochs")] = 1.0
    max_steps: MaxStepsOption = -1
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Per-device batch size.")] = 1
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1)] = 8
    max_length: Annotated[int | None, typer.Option(
        "--max-length", min=1, help="Truncate longer rows (default: never; images must stay whole).")] = None
    save_steps: Annotated[int, typer.Option("--save-steps", min=1)] = 500
    merge_lora: Annotated[bool, typer.Option("--merge/--no-merge", help="Merge LoRA into OUT/final.")] = True
    cpu: CpuOption = False
    report_to: Annotated[str, typer.Option("--report-to", help="none, tensorboard, wandb.")] = "none"
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Any other SFTConfig field, repeatable: --set warmup_steps=10.")] = None

    def options(self, model: str, data: Path, out: Path) -> Any:
        """The trainer's SFTOptions (a malformed --set: a clean exit naming it)."""
        from medseg_agent.training.sft import SFTOptions

        same = ("lora", "lora_rank", "lora_alpha", "freeze_vision", "learning_rate", "epochs", "max_steps",
                "batch_size", "grad_accum", "max_length", "save_steps", "merge_lora", "report_to")
        return SFTOptions(
            model=model, data=str(data), output_dir=str(out), **{name: getattr(self, name) for name in same},
            assistant_only=not self.all_tokens, use_cpu=self.cpu, gradient_checkpointing=not self.cpu,
            extra=parse_settings(self.settings, "--set"),
        )


@dataclasses.dataclass(frozen=True)
class VerlRunOptions:
    """How ``train rl`` runs verl: validation data, the tool the rollouts call, the reward, the
    cluster's shape and the recipe."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    val_files: Annotated[list[str] | None, typer.Option("--val", help="Validation parquet(s), repeatable.")] = None
    tool: Annotated[str, typer.Option(
        "--tool", help="Tool server URL (recommended) or an in-process tool name.")] = "http://127.0.0.1:8000"
    tool_device: ToolDeviceOption = "cuda"
    max_turns: Annotated[int, typer.Option("--max-turns", min=1)] = 5
    patch_size: PatchSizeOption = 16
    reward: RewardOption = "medseg"
    reward_set: RewardSetOption = None
    nnodes: Annotated[int, typer.Option("--nnodes", min=1, help="Nodes of the Ray cluster.")] = 1
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=1)] = 8
    experiment: Annotated[str, typer.Option("--experiment", help="trainer.experiment_name.")] = "grpo"
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", help="Your copy of training/configs/verl_grpo.yaml.")] = None
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the config and print the command only.")] = False

    def options(self, model: str, train_files: list[str], out: Path, overrides: list[str] | None) -> Any:
        """The launcher's RLLaunchOptions; parquet paths made absolute (verl's workers start elsewhere)."""
        from medseg_agent.training.verl.launch import RLLaunchOptions

        return RLLaunchOptions(
            model=model, train_files=[str(Path(f).resolve()) for f in train_files],
            val_files=[str(Path(f).resolve()) for f in (self.val_files or [])], out_dir=str(out), tool=self.tool,
            tool_device=self.tool_device, max_turns=self.max_turns, image_patch_size=self.patch_size,
            reward=self.reward, reward_overrides=list(self.reward_set or []), nnodes=self.nnodes,
            gpus_per_node=self.gpus_per_node, experiment_name=self.experiment,
            recipe=str(self.recipe) if self.recipe else None, overrides=list(overrides or []),
        )


# The tool server's options: `serve` takes them one by one (its own defaults), `app` as AppServerOptions.
ToolExtraOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tool-option",
        help="Extra tool option KEY=VALUE (JSON values), repeatable, e.g. image_size=512 for MedSAM2 weights; "
        "for sam/medsam/sam2 also precision=fp32|tf32|bf16 (default: bf16 on a GPU), max_batch=N, "
        "cuda_graphs=true (the decoder replayed from CUDA graphs, docs/serving.md).",
    ),
]
HostOption = Annotated[
    str, typer.Option("--host", help="Interface to listen on; 0.0.0.0 exposes it to the network (use --token).")
]
PortOption = Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MEDSEG_AGENT_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' on /v1/* and /metrics (clients read $MEDSEG_AGENT_TOKEN).",
    ),
]
MaxBodyOption = Annotated[int, typer.Option("--max-body-mb", min=1, help="Largest request body (413 above).")]
SessionTtlOption = Annotated[
    float, typer.Option("--session-ttl", min=1.0, help="Seconds of inactivity after which a session is deleted.")
]
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not a log level; choose one of {', '.join(LOG_LEVELS)}")
    return value.lower()


LogLevelOption = Annotated[str, typer.Option("--log-level", callback=_log_level,
                                             help=f"uvicorn log level: {', '.join(LOG_LEVELS)}.")]


@dataclasses.dataclass(frozen=True)
class ServedToolOptions:
    """The model a server holds for every client (``serve``, ``app``): like :class:`ToolOptions`,
    plus extra tool keywords, and never another server's URL."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    tool: Annotated[str, typer.Option(
        "--tool", help="Segmentation tool to serve: classic (no weights), sam, medsam, sam2.")] = "classic"
    checkpoint: CheckpointOption = None
    device: DeviceOption = "cpu"
    model_type: ModelTypeOption = None
    random_weights: RandomWeightsOption = False
    tool_option: ToolExtraOption = None
    model_process: Annotated[bool, typer.Option(
        "--model-process/--no-model-process",
        help="Run the model in a process of its own, so that the server's request handling and the model's "
             "operator launches do not take turns on one interpreter lock (for a GPU server).")] = False

    def extra(self) -> dict[str, Any]:
        """The --tool-option pairs (a server URL or a bad pair: a clean exit)."""
        if self.tool.startswith(("http://", "https://")):
            fail("--tool must name a model (classic, sam, medsam, sam2), not another server's URL")
        try:
            return parse_key_values(self.tool_option, "--tool-option")
        except ValueError as exc:
            fail(str(exc))
            raise  # unreachable

    def spec(self) -> ToolSpec:
        """The tool as a ToolSpec, for another process to build (a model process, Ray Serve replicas)."""
        return tool_spec(self.tool, self.checkpoint, self.device, self.model_type, self.random_weights, self.extra())

    def build(self) -> SegmentationTool:
        """The tool, built the way every command builds it (errors: a clean exit); with
        --model-process, a handle on it running in its own process."""
        if not self.model_process:
            return make_tool(self.tool, self.checkpoint, self.device, self.model_type, self.random_weights,
                             self.extra())
        from medseg_agent.tools.process import ProcessTool
        from medseg_agent.vocabulary.errors import ToolError

        try:
            return ProcessTool(self.spec())
        except ToolError as exc:
            fail(str(exc))
            raise  # unreachable


@dataclasses.dataclass(frozen=True)
class AppServerOptions:
    """Where ``app`` listens and its limits: ``serve``'s flags, with defaults for people (large volume
    uploads, sessions that outlive a coffee break, a quiet log)."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    host: HostOption = "127.0.0.1"
    port: PortOption = 8265
    token: TokenOption = None
    max_body_mb: MaxBodyOption = 1024
    session_ttl: SessionTtlOption = 3600.0
    log_level: LogLevelOption = "warning"

    def config(self) -> Any:
        """The server's ServerConfig (a bad value: a clean exit naming it)."""
        from medseg_agent.serving.config import MIB

        return server_config(self.token, max_body_bytes=self.max_body_mb * MIB, session_ttl_s=self.session_ttl)


@dataclasses.dataclass(frozen=True)
class AgentOptions:
    """What the app's page starts with: the demo library, the annotator's name, the agent it offers
    and the turn budget (the page can change each)."""

    OPTION_GROUP: typing.ClassVar[bool] = True

    demo: Annotated[bool, typer.Option(
        "--demo/--no-demo", help="Build (or reuse) the demo dataset when --data is not given.")] = True
    annotator: Annotated[str, typer.Option(
        "--annotator", help="Default annotator name written into records (the page can change it).")] = ""
    agent_url: Annotated[str | None, typer.Option(
        "--agent-url", help="Default OpenAI-compatible URL of the agent, e.g. http://gpu:8000/v1.")] = None
    agent_model: Annotated[str | None, typer.Option("--agent-model", help="Default served model name.")] = None
    agent_checkpoint: Annotated[str | None, typer.Option(
        "--agent-checkpoint", help="Default local Hugging Face checkpoint folder (hf agent).")] = None
    agent_device: Annotated[str, typer.Option("--agent-device", help="Device of hf agents: auto, cpu, cuda.")] = "auto"
    max_turns: Annotated[int, typer.Option(
        "--max-turns", min=1, max=64, help="Turns (agent and person) before an episode ends.")] = 20

    def config(self, out: Path, library: Any, library_warning: str | None) -> Any:
        """The app's AppConfig around an opened library."""
        from medseg_agent.serving.app_state import AppConfig

        return AppConfig(
            out_dir=out, library=library, library_warning=library_warning, annotator=self.annotator,
            max_turns=self.max_turns, agent_base_url=self.agent_url, agent_model=self.agent_model,
            agent_checkpoint=self.agent_checkpoint, agent_device=self.agent_device,
        )
