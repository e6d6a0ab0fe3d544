"""Every measured table in the README and docs/ comes with the command that produces it (issue 10).

A *figure* is a Markdown table whose cells are mostly numbers, or a rich table printed in a code
block. For each one, the commands printed in its section (``medseg-agent ...``, ``benchmarks/... .py``,
``scripts/... .py``, ``make demo``; a section runs from a ``#``/``##`` heading or a bold-lead
paragraph such as ``**Environment** (...)`` to the next) are parsed; every one must
exist (its ``--help`` runs and knows each ``--option`` written), and the table's columns must be
words of what one of them outputs: a real run on a tiny dataset for the commands that are quick, the
source of the script for the benchmarks that take minutes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medseg_agent.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NUMBER = re.compile(r"^[~≈<>≤≥+-]?\d[\d,]*(\.\d+)?(%|ms|s|x|×)?$|^(–|-|≤|≥|~|%|ms|s|MB|x)$")
COMMAND = re.compile(
    r"(?:(?:\.venv/bin/)?python3? )?(?P<script>(?:benchmarks|scripts)/[\w/]+\.py)(?P<script_args>[^`\n]*)"
    r"|medseg-agent (?P<cli>[a-z][a-z-]*(?: [a-z][a-z-]*)?)(?P<cli_args>[^`\n|]*)"
    r"|make (?P<make>demo)\b"
)
BOUNDARY = re.compile(r"^#{1,2} |^\*\*[^*]+\*\* \(")
runner = CliRunner()


@dataclass
class Figure:
    document: Path
    line: int
    columns: list[str]
    section: str  # the text of the section that holds the table

    def __str__(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line} {self.columns}"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _numeric(cell: str) -> bool:
    text = re.sub(r"\*\*|\(.*?\)|±\s*[\d.]+", " ", cell)
    tokens = [t for t in re.split(r"[\s/→]+", text) if t]
    return bool(tokens) and all(NUMBER.match(t) for t in tokens)


def _section(lines: list[str], index: int) -> str:
    start, end = index, index + 1
    while start > 0 and not BOUNDARY.match(lines[start]):
        start -= 1
    while end < len(lines) and not BOUNDARY.match(lines[end]):
        end += 1
    return "\n".join(lines[start:end])


def find_figures() -> list[Figure]:
    figures = []
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|[\s:|-]+\|", lines[i + 1].strip()):
                header, j = _cells(line), i + 2
                body = []
                while j < len(lines) and lines[j].startswith("|"):
                    body.append(_cells(lines[j]))
                    j += 1
                data = [c for row in body for c in row[1:]]
                if data and sum(map(_numeric, data)) / len(data) >= 0.5:
                    figures.append(Figure(document, i + 1, header, _section(lines, i)))
                i = j
            elif line.startswith("┃"):  # a rich table printed by a command, inside a code block
                header = [c.strip() for c in line.strip("┃ ").split("┃")]
                figures.append(Figure(document, i + 1, header, _section(lines, i)))
                i += 1
            else:
                i += 1
    return figures


FIGURES = find_figures()


# -- what a command is, and what it prints ------------------------------------------------------
@cache
def _click_root():
    return typer.main.get_command(app)


def cli_command(words: str):
    """The click command for ``medseg-agent WORDS`` (a group's subcommand when the second word is one)."""
    command, path = _click_root(), []
    for word in words.split():
        if word in getattr(command, "commands", {}):
            command, path = command.commands[word], [*path, word]
        else:
            break
    return command, path


def options_of(args: str) -> list[str]:
    return re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", args)


@cache
def script_help(script: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, f"`python {script} --help` failed:\n{result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory) -> dict[str, str]:
    """What the quick commands print and write, run for real on four synthetic discs."""
    from evalfixtures import write_disc_dataset

    root = tmp_path_factory.mktemp("figures")
    data = write_disc_dataset(root / "data", 4)
    outputs: dict[str, str] = {}

    def run(key: str, args: list[str], *files: Path) -> None:
        result = runner.invoke(app, args, env={"COLUMNS": "250"})
        assert result.exit_code == 0, f"medseg-agent {' '.join(args)}:\n{result.output}"
        outputs[key] = result.output + "".join(f.read_text() for f in files)

    evaluation = root / "eval"
    run("evaluate", ["evaluate", "--data", str(data), "--policy", "clicker", "--tool", "classic", "--max-turns", "3",
                     "--out", str(evaluation), "-q"], evaluation / "summary.md")
    run("reward compare", ["reward", "compare", "--records", str(evaluation)])
    run("evaluate-tool", ["evaluate-tool", "--data", str(data), "--tool", "classic", "--clicks", "10",
                          "--out", str(root / "tool")])
    outputs["demo"] = outputs["evaluate-tool"]  # `demo` prints its table with evaluate-tool's printer
    search = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train/reward_weight_search.py"), "--records", str(evaluation),
         "--select", "MRI", "--top", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert search.returncode == 0, search.stderr[-2000:]
    outputs["scripts/train/reward_weight_search.py"] = search.stdout
    return outputs


def vocabulary(kind: str, key: str, smoke: dict[str, str]) -> str:
    if key in smoke:
        return smoke[key]
    if kind == "script":
        return (ROOT / key).read_text(encoding="utf-8")
    return ""


def words(column: str) -> list[str]:
    """The words a column header is made of (numbers such as action indices 1..5 or +1 are not words)."""
    text = re.sub(r"\*\*|`|\(.*?\)", " ", column)
    return [w for w in re.findall(r"[A-Za-z][\w@.+-]*", text) if len(w) > 1]


# -- the tests ------------------------------------------------------------------------------------
def test_the_figures_are_found():
    assert len(FIGURES) >= 10, [str(f) for f in FIGURES]


@pytest.mark.slow
@pytest.mark.parametrize("figure", FIGURES, ids=str)
def test_every_figure_comes_from_a_command_that_prints_its_columns(figure, smoke_outputs):
    found = list(COMMAND.finditer(figure.section))
    assert found, f"{figure}: no command printed in this table's section"
    texts = []
    for match in found:
        if match["script"]:
            help_text = script_help(match["script"])
            for option in options_of(match["script_args"]):
                assert option in help_text, f"{figure}: `{match[0].strip()}`: {option} is not an option"
            texts.append(vocabulary("script", match["script"], smoke_outputs))
        elif match["cli"]:
            command, path = cli_command(match["cli"])
            assert path, f"{figure}: `medseg-agent {match['cli']}` is not a command"
            result = runner.invoke(app, [*path, "--help"])
            assert result.exit_code == 0, result.output
            known = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
            for option in options_of(match["cli_args"]):
                assert option in known, f"{figure}: `medseg-agent {' '.join(path)}` has no {option}"
            texts.append(vocabulary("cli", " ".join(path), smoke_outputs))
        else:
            assert re.search(r"^demo:", (ROOT / "Makefile").read_text(), re.M), "Makefile has no demo target"
            texts.append(smoke_outputs["demo"])
    columns = figure.columns[1:]  # the first column names the rows (policy, preset, group, ...)
    vocabulary_text = "\n".join(texts).lower()
    missing = [w for c in columns for w in words(c) if w.lower() not in vocabulary_text]
    commands = ", ".join(m[0].strip() for m in found)
    assert not missing, f"{figure}: no command printed here ({commands}) outputs the column word(s) {missing}"
