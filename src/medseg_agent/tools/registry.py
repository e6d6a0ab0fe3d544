"""Tools by name, so the CLI, the server, the evaluator and the trainers build them the same way.

Built-in backends are imported lazily: ``classic`` must not pay for importing torch. Other packages
add tools as plug-ins (:mod:`medseg_agent.plugins`): an entry point of the ``medseg_agent.tools``
group names a function that calls :func:`register_tool`, loaded the first time the registry meets a
name or URL scheme it does not know. This is how :mod:`medseg_agent.serving` adds ``http://`` and
``https://`` tool-server URLs without this layer importing it; a third-party package adds its own
backend the same way (``[project.entry-points."medseg_agent.tools"]`` in its ``pyproject.toml``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg_agent.plugins import PluginError, load_plugins
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.errors import ToolError

ToolFactory = Callable[..., SegmentationTool]
PLUGIN_GROUP = "medseg_agent.tools"

# name -> "module:attribute" of a factory accepting (checkpoint=None, device="cpu", **options)
_BUILTIN: dict[str, str] = {
    "classic": "medseg_agent.tools.classic:build_classic_tool",
    "sam": "medseg_agent.tools.sam:build_sam_tool",
    "medsam": "medseg_agent.tools.sam:build_medsam_tool",
    "sam2": "medseg_agent.tools.sam2:build_sam2_tool",
}
_REGISTERED: dict[str, ToolFactory] = {}


def register_tool(name: str, factory: ToolFactory) -> None:
    """Make ``factory`` available under ``name``; it is called as ``factory(checkpoint=..., device=...,
    **options)``. A ``name`` ending in ``://`` (``"http://"``) serves every spec of that URL scheme and
    its factory also gets the spec as ``url=``."""
    _REGISTERED[name] = factory


def available_tools() -> list[str]:
    _load_plugins()
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def build_tool(
    spec: str,
    *,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    **options: Any,
) -> SegmentationTool:
    """Build a tool from a name (``classic``, ``sam``, ``medsam``, ``sam2``, a plug-in's) or a URL.

    A URL (``http://host:port``) gives a client of a running ``medseg-agent serve``.
    """
    key = f"{spec.split('://', 1)[0]}://" if "://" in spec else spec
    if key in _BUILTIN:
        module_name, attribute = _BUILTIN[key].split(":")
        factory = getattr(importlib.import_module(module_name), attribute)
        return factory(checkpoint=checkpoint, device=device, **options)
    if key not in _REGISTERED:
        _load_plugins()
    if key not in _REGISTERED:
        names = available_tools()
        urls = " or a URL (" + ", ".join(n for n in names if n.endswith("://")) + ")" if _REGISTERED else ""
        raise ToolError(f"unknown tool {spec!r}; choose one of {', '.join(n for n in names if '://' not in n)}{urls}")
    if key.endswith("://"):
        options["url"] = spec
    return _REGISTERED[key](checkpoint=checkpoint, device=device, **options)


def _load_plugins() -> None:
    try:
        load_plugins(PLUGIN_GROUP)
    except PluginError as exc:
        raise ToolError(str(exc)) from exc
