"""A Typer app holding one command group of the CLI (``train``, ``reward``, ...), so a test runs the
real commands without building the whole ``medseg-agent`` app."""

from __future__ import annotations

from types import ModuleType

import typer


def command_app(group: ModuleType) -> typer.Typer:
    """``group``: a ``medseg_agent.cli`` module with a ``register(app)`` function."""
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """medseg-agent (test harness: one command group)."""

    group.register(app)
    return app
