"""Commands stay thin and options exist once (issue 9 item 5).

A command function parses options and calls the library, so it fits in 60 lines (signature and
help text included); every option group of :mod:`medseg_agent.cli.options` is declared once and
reaches every command that takes it, with the same flags and help.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.core import TyperOption
from typer.models import OptionInfo

from medseg_agent.cli import options
from medseg_agent.cli.app import app

MAX_LINES = 60
GROUPS = (options.ToolOptions, options.PolicyOptions, options.EpisodeOptions, options.ExpertOptions,
          options.RunOptions, options.SFTTrainOptions, options.VerlRunOptions, options.ServedToolOptions,
          options.AppServerOptions, options.AgentOptions)
#: Flags that mean something else on some commands (--model of `train sft` is the base checkpoint,
#: --tool of `serve` cannot be a server URL, --lr of `train grpo` has its own default and advice, --set of
#: `reward explain` changes a reward field, --val of `data build-synthetic` counts images, --reward of
#: `reward compare` repeats, ...); every other group flag is the group's everywhere.
REUSED_NAMES = {"--tool", "--device", "--model", "--max-turns", "--workers", "--seed", "--quiet", "--lr", "--set",
                "--val", "--reward"}


def commands(typer_app: typer.Typer = app, prefix: str = "") -> Iterator[tuple[str, typing.Callable]]:
    for command in typer_app.registered_commands:
        yield prefix + (command.name or command.callback.__name__), command.callback
    for group in typer_app.registered_groups:
        yield from commands(group.typer_instance, prefix + group.name + " ")


COMMANDS = dict(commands())


def function_lines(function: typing.Callable) -> int:
    """Lines of the function's definition (``def`` to its last line), read with ast."""
    function = inspect.unwrap(function)
    path = Path(inspect.getsourcefile(function))
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef) or node.name != function.__name__:
            continue
        first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
        if first <= function.__code__.co_firstlineno <= node.end_lineno:
            return node.end_lineno - node.lineno + 1
    raise AssertionError(f"{function.__name__} not found in {path}")


def flags_of(info: OptionInfo) -> list[str]:
    declared = ([info.default] if isinstance(info.default, str) else []) + list(info.param_decls or ())
    return [flag.split("/")[0] for flag in declared]


def group_options(group: type) -> dict[str, OptionInfo]:
    """Flag -> the group field's option declaration."""
    hints = typing.get_type_hints(group, include_extras=True)
    found = {}
    for field in dataclasses.fields(group):
        info = next(m for m in hints[field.name].__metadata__ if isinstance(m, OptionInfo))
        found.update({flag: info for flag in flags_of(info) if flag.startswith("--")})
    return found


def groups_taken(function: typing.Callable) -> list[type]:
    signature = inspect.signature(inspect.unwrap(function), eval_str=True)
    return [p.annotation for p in signature.parameters.values() if p.annotation in GROUPS]


def click_options(name: str) -> dict[str, TyperOption]:
    command = typer.main.get_command(app)
    for part in name.split():
        command = command.commands[part]
    return {flag: param for param in command.params if isinstance(param, TyperOption) for flag in param.opts}


def test_commands_are_found():
    assert {"segment", "evaluate", "trajectories generate", "data list", "reward explain"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_functions_are_thin(name):
    lines = function_lines(COMMANDS[name])
    assert lines <= MAX_LINES, f"`{name}` is {lines} lines; move its work into the library (max {MAX_LINES})"


def test_groups_reach_the_commands_that_share_them():
    takers = {group: [n for n, f in COMMANDS.items() if group in groups_taken(f)] for group in GROUPS}
    assert set(takers[options.PolicyOptions]) == {"segment", "evaluate"}
    assert set(takers[options.EpisodeOptions]) == {"segment", "evaluate"}
    assert {"segment", "evaluate", "trajectories generate", "evaluate-tool"} <= set(takers[options.ToolOptions])
    assert set(takers[options.ServedToolOptions]) == {"serve", "app"}
    for group, names in takers.items():
        for name in names:
            exposed = click_options(name)
            for flag, info in group_options(group).items():
                assert flag in exposed, f"`{name}` takes {group.__name__} but has no {flag}"
                assert exposed[flag].help == info.help, f"`{name}` {flag}: help differs from {group.__name__}'s"


def test_group_options_are_declared_once():
    """A command that offers a group's option without taking the group uses the group's declaration
    (the same typer.Option object, e.g. --checkpoint of `serve`), never a second spelling."""
    declared = {flag: info for group in GROUPS for flag, info in group_options(group).items()}
    for name, function in COMMANDS.items():
        signature = inspect.signature(inspect.unwrap(function), eval_str=True)
        for parameter in signature.parameters.values():
            for info in getattr(parameter.annotation, "__metadata__", ()):
                if not isinstance(info, OptionInfo):
                    continue
                for flag in set(flags_of(info)) & (set(declared) - REUSED_NAMES):
                    assert info is declared[flag], f"`{name}` declares {flag} again; use the option group's"


def test_expand_options_refuses_a_name_declared_twice():
    def command(tool: options.ToolOptions, device: str = "cpu") -> None: ...

    with pytest.raises(TypeError, match="device"):
        options.expand_options(command)


def test_expand_options_builds_the_group_from_parsed_values():
    seen = {}

    def command(*, tool: options.ToolOptions, episode: options.EpisodeOptions, out: str = "x") -> None:
        seen.update(tool=tool, episode=episode, out=out)

    wrapped = options.expand_options(command)
    parameters = inspect.signature(wrapped).parameters
    assert {"tool", "checkpoint", "protocol", "max_turns", "out"} <= set(parameters) and "episode" not in parameters
    values = {name: p.default for name, p in parameters.items()}
    wrapped(**{**values, "tool": "sam", "max_turns": 3})
    assert seen["tool"] == options.ToolOptions(tool="sam")
    assert seen["episode"].config().max_turns == 3 and seen["out"] == "x"
