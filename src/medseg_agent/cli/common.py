"""Options and helpers shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from medseg_agent.io.text import yaml_value
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.tools.spec import ToolSpec
from medseg_agent.vocabulary.sample import Sample

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


def tool_spec(
    tool: str,
    checkpoint: Path | str | None = None,
    device: str = "cpu",
    model_type: str | None = None,
    random_weights: bool = False,
    extra: dict[str, Any] | None = None,
) -> ToolSpec:
    """The ToolSpec that CLI options describe (``--model-type`` is sam2's config, the others' model type)."""
    options: dict[str, Any] = dict(extra or {})
    if model_type:
        options["config" if tool == "sam2" else "model_type"] = model_type
    return ToolSpec(tool, checkpoint=Path(checkpoint) if checkpoint else None, device=device, options=options,
                    random_weights=random_weights)


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
    from medseg_agent.vocabulary.errors import ToolError

    try:
        return tool_spec(tool, checkpoint, device, model_type, random_weights, extra).build()
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


def parse_settings(items: list[str] | None, flag: str = "--set") -> dict[str, Any]:
    """``--set key=value`` pairs (YAML values, so 1e-4, true and [1, 2] keep their types) for trainer
    and recipe configs; a pair without ``=`` or a value YAML cannot read is a clean exit naming it."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} warmup_steps=10")
        try:
            out[key.strip()] = yaml_value(raw)
        except ValueError as exc:
            fail(f"{flag} {item!r}: {exc}")
    return out


def server_config(token: str | None, **limits: Any) -> Any:
    """A tool server's limits from command options (``serve``, ``app``; a bad value: a clean exit naming it)."""
    from medseg_agent.serving.config import ServerConfig

    try:
        return ServerConfig(token=token or None, **limits)
    except ValueError as exc:
        fail(str(exc))


def warn_if_open(host: str, config: Any) -> None:
    """A server reachable from the network without a token is anyone's: say so before it starts."""
    if host not in ("127.0.0.1", "localhost", "::1") and config.token is None:
        warn(f"serving on {host} without --token: anyone who can reach it can use it")


def iter_samples(paths: Sequence[Path], *, data_format: str = "auto", split: str | None = None,
                 limit: int | None = None) -> Iterator[Sample]:
    """The samples of every dataset in ``paths`` (at most ``limit`` from each), one at a time, as every
    command reads them: an unreadable dataset or one with no usable sample is a clean exit naming it;
    skipped samples are reported on stderr with their reasons and paths, and the run goes on with the
    rest. Commands that stream a dataset larger than memory (``train rl-data``) iterate this."""
    from medseg_agent.data.readers import open_dataset, summarize_skipped

    for path in paths:
        count = 0
        try:
            dataset = open_dataset(path, format=data_format, split=split)
            for sample in itertools.islice(dataset, limit):
                count += 1
                yield sample
        except (OSError, ValueError) as exc:
            fail(f"cannot read dataset {path}: {exc}")
        if dataset.skipped:
            warn(f"{path}: some samples are skipped (`medseg-agent data list {path}` lists them all)")
            err_console.print(summarize_skipped(dataset, limit=10))
        if not count:
            where = f" in split {split!r} (try another --split)" if split else ""
            fail(f"{path} has no usable samples{where}")


def load_samples(paths: Sequence[Path], *, data_format: str = "auto", split: str | None = None,
                 limit: int | None = None) -> list[Sample]:
    """:func:`iter_samples`, all in memory."""
    return list(iter_samples(paths, data_format=data_format, split=split, limit=limit))
