"""Options and helpers shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from medseg_agent.tools.base import SegmentationTool

# The one writer of every command. Markup is off: a path such as [/data/ct.png] or a target such as
# "lesion [left]" prints as written, where rich would read it as a tag and fail (MarkupError) or
# swallow it. Styling goes through say() / warn() / fail() and rich Text, never through markup.
# Tables stay readable when piped to a file or a CI log (Rich would otherwise assume 80 columns).
console = Console(width=None if sys.stdout.isatty() else 140, markup=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140, markup=False)

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
    extra: dict[str, Any] | None = None,
) -> SegmentationTool:
    """Build a tool from CLI options (``extra``: further tool keywords, e.g. from --tool-option),
    turning ToolError into a clean exit with the message."""
    from medseg_agent.tools.registry import build_tool
    from medseg_agent.vocabulary.errors import ToolError

    options: dict[str, Any] = dict(extra or {})
    if model_type:
        options["config" if tool == "sam2" else "model_type"] = model_type
    if random_weights:
        options["allow_random_weights"] = True
    try:
        return build_tool(tool, checkpoint=checkpoint, device=device, **options)
    except ToolError as exc:
        fail(str(exc))
        raise  # unreachable
    except TypeError as exc:  # an option the tool does not take
        fail(f"tool {tool!r}: {exc}")
        raise


def say(*parts: str | tuple[str, str], err: bool = False) -> None:
    """Print one message made of plain strings and ``(text, style)`` pairs; no part is read as markup."""
    (err_console if err else console).print(Text.assemble(*parts))


def warn(message: str) -> None:
    say(("warning: ", "bold yellow"), message, err=True)


def fail(message: str, code: int = 2) -> None:
    say(("error: ", "bold red"), message, err=True)
    raise typer.Exit(code)


# -- policy options shared by `segment` and `evaluate` ----------------------------------------
PANEL_MODEL = "Model policies (openai, hf)"

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
    typer.Option("--native-tools", help="Structured function calling (tools=) instead of `<tool_call>` text.",
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
