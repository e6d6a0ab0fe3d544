"""Tools by name, so the CLI, the server, the evaluator and the trainers build them the same way.

Backends are imported lazily: ``classic`` must not pay for importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.errors import ToolError

ToolFactory = Callable[..., SegmentationTool]

# name -> "module:attribute" of a factory accepting (checkpoint=None, device="cpu", **options)
_BUILTIN: dict[str, str] = {
    "classic": "medseg_agent.tools.classic:build_classic_tool",
    "sam": "medseg_agent.tools.sam:build_sam_tool",
    "medsam": "medseg_agent.tools.sam:build_medsam_tool",
    "sam2": "medseg_agent.tools.sam2:build_sam2_tool",
}
_CUSTOM: dict[str, ToolFactory] = {}


def register_tool(name: str, factory: ToolFactory) -> None:
    """Make ``factory`` available under ``name`` (plugins, tests)."""
    _CUSTOM[name] = factory


def available_tools() -> list[str]:
    return sorted(set(_BUILTIN) | set(_CUSTOM))


def build_tool(
    spec: str,
    *,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    **options: Any,
) -> SegmentationTool:
    """Build a tool from a name (``classic``, ``sam``, ``medsam``, ``sam2``) or a server URL.

    A URL (``http://host:port``) gives a client of a running ``medseg-agent serve``.
    """
    if spec.startswith(("http://", "https://")):
        module = importlib.import_module("medseg_agent.serving.client")
        return module.HttpSegmentationTool(spec, **options)
    if spec in _CUSTOM:
        return _CUSTOM[spec](checkpoint=checkpoint, device=device, **options)
    if spec not in _BUILTIN:
        raise ToolError(f"unknown tool {spec!r}; choose one of {', '.join(available_tools())} or an http:// URL")
    module_name, attribute = _BUILTIN[spec].split(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory(checkpoint=checkpoint, device=device, **options)
