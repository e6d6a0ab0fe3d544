"""A tool described by value, so that another process (a Ray Serve replica, a model process) can
build the same tool as the one that describes it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg_agent.tools.base import SegmentationTool


@dataclass(frozen=True)
class ToolSpec:
    """What :func:`~medseg_agent.tools.registry.build_tool` needs, picklable."""

    name: str
    checkpoint: Path | None = None
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)
    random_weights: bool = False
    #: modules imported (and their ``register()`` called) before building: plug-ins that the
    #: building process would not otherwise know, such as a benchmark's own tool
    preload: tuple[str, ...] = ()

    def build(self) -> SegmentationTool:
        from medseg_agent.tools.registry import build_tool

        for module in self.preload:
            importlib.import_module(module).register()
        options = dict(self.options)
        if self.random_weights:
            options["allow_random_weights"] = True
        return build_tool(self.name, checkpoint=self.checkpoint, device=self.device, **options)
