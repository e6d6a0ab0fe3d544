"""The ``medseg-agent`` command line. Each command group lives in its own module with a
``register(app)`` function; heavy imports (torch, transformers) happen inside the commands so
``--help`` stays instant."""

from __future__ import annotations

import importlib
import sys

import typer
from typer import rich_utils

app = typer.Typer(
    name="medseg-agent",
    help=(
        "Agentic interactive medical image segmentation: a policy (MLLM, simulated expert, clicker) "
        "drives a promptable segmentation tool (classic, SAM, MedSAM, SAM2/MedSAM2) with boxes and "
        "clicks over several turns.\n\nStart with `medseg-agent demo`, then `medseg-agent segment --help`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)

# Help piped to a file, a pager or a CI log gets the width our tables get (rich would assume 80
# columns and cut long option names such as --max-consecutive-errors); TERMINAL_WIDTH still wins.
if rich_utils.MAX_WIDTH is None and not sys.stdout.isatty():
    rich_utils.MAX_WIDTH = 140

# Modules under medseg_agent.cli that define register(app). Listed in --help order.
COMMAND_MODULES = (
    "demo",
    "segment",
    "data",
    "evaluate_tool",
    "trajectories",
    "evaluate",
    "serve",
    "annotate",
    "train",
    "reward",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        module_name = f"medseg_agent.cli.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that command group is not part of this build
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
