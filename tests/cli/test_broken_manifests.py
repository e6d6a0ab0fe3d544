"""A manifest with broken rows: every command reports each skip with its path and runs the rest.

Regression (issue 10 item 4): the skip report printed ``[/abs/path/to/file]``, which rich read as a
closing markup tag, so ``evaluate`` and ``evaluate-tool`` died with a MarkupError before evaluating
anything. The commands' console never reads markup now, so paths and user text print as written.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from medseg_agent.cli.app import app
from medseg_agent.cli.common import console, fail, say

runner = CliRunner()
TARGET = "lesion [/left] [bold]"  # user text that looks like markup


@pytest.fixture
def broken_manifest(tmp_path):
    """Three good rows, a row whose image is missing, a row with an unreadable spacing."""
    folder = tmp_path / "cases [bold]"
    folder.mkdir()
    h, w = 96, 128
    yy, xx = np.mgrid[:h, :w]
    rows = ["image,mask,target,modality,spacing"]
    for i in range(3):
        mask = (xx - 40 - 20 * i) ** 2 + (yy - 45) ** 2 <= (15 + 3 * i) ** 2
        image = np.clip(50 + 140 * mask + np.random.default_rng(i).normal(0, 12, (h, w)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"c{i}.png"), image)
        cv2.imwrite(str(folder / f"c{i}_mask.png"), mask.astype(np.uint8) * 255)
        rows.append(f'{folder / f"c{i}.png"},{folder / f"c{i}_mask.png"},"{TARGET}",CT,')
    rows.append(f"{folder / 'missing.png'},{folder / 'c0_mask.png'},lesion,CT,")
    rows.append(f"{folder / 'c1.png'},{folder / 'c1_mask.png'},lesion,CT,not-a-spacing")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest, folder


def _flat(text: str) -> str:
    return "".join(text.split())  # rich wraps long paths; compare without whitespace


def test_evaluate_reports_skips_with_paths_and_evaluates_the_rest(broken_manifest, tmp_path):
    manifest, folder = broken_manifest
    out = tmp_path / "run"
    result = runner.invoke(app, ["evaluate", "--data", str(manifest), "--policy", "clicker", "--tool", "classic",
                                 "--max-turns", "2", "--out", str(out), "-q"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert _flat(f"[{folder / 'missing.png'}]") in _flat(result.output)
    assert "invalid spacing 'not-a-spacing'" in result.output and "2 skipped" in result.output
    records = (out / "records.jsonl").read_text().splitlines()
    assert len(records) == 3 and {json.loads(r)["record"]["target"] for r in records} == {TARGET}
    assert json.loads((out / "summary.json").read_text())["summary"][0]["n"] == 3


def test_evaluate_tool_reports_skips_with_paths_and_evaluates_the_rest(broken_manifest, tmp_path):
    manifest, folder = broken_manifest
    out = tmp_path / "tool-eval"
    result = runner.invoke(app, ["evaluate-tool", "--data", str(manifest), "--tool", "classic", "--clicks", "2",
                                 "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert _flat(f"[{folder / 'missing.png'}]") in _flat(result.output)
    assert "2 skipped" in result.output
    assert len((out / "curves.jsonl").read_text().splitlines()) == 3


def test_trajectories_and_data_list_report_the_same_skips(broken_manifest, tmp_path):
    manifest, folder = broken_manifest
    result = runner.invoke(app, ["data", "list", str(manifest)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "skipped: 2" in result.output and TARGET in result.output
    result = runner.invoke(app, ["trajectories", "generate", "--data", str(manifest), "--tool", "classic",
                                 "--out", str(tmp_path / "traj"), "--max-turns", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 skipped" in result.output and "data list" in result.output


def test_the_console_prints_markup_lookalikes_as_written(capsys):
    with console.capture() as captured:
        say("path ", ("[/data/ct.png]", "bold"), " target [bold]x[/bold]")
    assert captured.get().strip() == "path [/data/ct.png] target [bold]x[/bold]"
    with pytest.raises(Exception) as exit_info:
        fail("cannot read [/data/ct.png]")
    assert exit_info.value.exit_code == 2
    assert "error: cannot read [/data/ct.png]" in capsys.readouterr().err
