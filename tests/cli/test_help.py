"""What `--help` teaches (issue 10 item 12): names that survive markdown, option names that are not
cut, and the same paths and options the guides use."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from medseg_agent.cli.app import app

runner = CliRunner()
COMMANDS = [
    ["evaluate"], ["evaluate-tool"], ["segment"], ["serve"], ["demo"], ["data", "list"], ["data", "build-demo"],
    ["trajectories", "generate"], ["trajectories", "export"], ["trajectories", "summary"], ["train", "sft"],
    ["train", "rl"], ["train", "rl-data"], ["train", "grpo"], ["train", "verl-config"], ["reward", "explain"],
    ["reward", "compare"], ["reward", "presets"],
]


def help_text(command: list[str]) -> str:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_option_names_are_never_cut(command):
    cut = re.findall(r"--[a-z0-9-]*…", help_text(command))
    assert not cut, f"option names cut in `{' '.join(command)} --help`: {cut}"


def test_angle_bracket_names_survive_the_markdown_help():
    text = help_text(["trajectories", "export"])
    assert "OUT/<name>.sharegpt.json" in text and "<image> tokens" in text
    assert "--out runs/export" in text  # the folder docs/trajectories.md and the README use
    assert "`<think>`" not in help_text(["trajectories", "generate"]) and "<think>" in help_text(
        ["trajectories", "generate"])
    assert "<tool_call>" in help_text(["evaluate"])


def test_sft_help_names_the_option_the_hf_policy_takes():
    text = " ".join(help_text(["train", "sft"]).split())
    assert "--policy hf --model-path OUT/final" in text and "--model OUT/final" not in text
