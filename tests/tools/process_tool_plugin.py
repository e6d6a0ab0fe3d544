"""A tool for the model-process tests, registered in the model process through ``ToolSpec.preload``:
the classic tool, except that some prompts fail in ways a real backend can (a backend's own error,
an error that cannot be pickled), and its counters name the process they were counted in."""

from __future__ import annotations

import os

from medseg_agent.tools.classic import ClassicTool
from medseg_agent.tools.registry import register_tool
from medseg_agent.vocabulary.errors import ToolError

NAME = "classic-with-failures"


class UnpicklableError(Exception):
    def __init__(self, message: str, code: int) -> None:  # two arguments: pickling it fails
        super().__init__(message)
        self.code = code


class FailingClassicTool(ClassicTool):
    name = NAME

    def _decode(self, embedding, prompt):
        if prompt.box is not None and prompt.box[0] == 1:
            raise ToolError("box starting at x=1 refused by the test tool")
        if prompt.box is not None and prompt.box[0] == 2:
            raise UnpicklableError("the test tool's own failure", 2)
        return super()._decode(embedding, prompt)

    def stats(self):
        return {**super().stats(), "counted_in_pid": os.getpid()}


def register() -> None:
    register_tool(NAME, lambda checkpoint=None, device="cpu", **options: FailingClassicTool(**options))
