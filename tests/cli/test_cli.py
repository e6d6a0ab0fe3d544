"""The commands a user runs, end to end on small real files with the classic tool."""

from __future__ import annotations

import json

import cv2
import numpy as np
from typer.testing import CliRunner

from medseg_agent.cli.app import app
from medseg_agent.io.masks import read_mask_png

runner = CliRunner()


def _write_case(folder, name, centre, radius, size=(96, 128)):
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    mask = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    rng = np.random.default_rng(len(name))
    image = np.clip(50 + 140 * mask + rng.normal(0, 12, (h, w)), 0, 255).astype(np.uint8)
    (folder / "test").mkdir(parents=True, exist_ok=True)
    (folder / "test_mask").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "test" / f"{name}.png"), image)
    cv2.imwrite(str(folder / "test_mask" / f"{name}_CT_abdomen_lesion.png"), mask.astype(np.uint8) * 255)
    return folder / "test" / f"{name}.png", folder / "test_mask" / f"{name}_CT_abdomen_lesion.png", mask


def test_segment_writes_mask_overlays_and_record(tmp_path):
    image, gt, mask = _write_case(tmp_path / "data", "case1", (60, 50), 22)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["segment", str(image), "--target", "lesion in abdomen CT", "--gt", str(gt), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "IoU" in result.output
    predicted = read_mask_png(out / "mask.png")
    inter, union = (predicted & mask).sum(), (predicted | mask).sum()
    assert inter / union > 0.7
    record = json.loads((out / "trajectory.json").read_text())
    overlays = sorted(out.glob("overlay_*.png"))
    assert len(overlays) == len(record["turns"]) + 1
    assert record["turns"][0]["iou"] is not None


def test_segment_reports_bad_input_clearly(tmp_path):
    image, gt, _ = _write_case(tmp_path / "data", "case1", (60, 50), 22)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((10, 10), np.uint8))
    result = runner.invoke(app, ["segment", str(image), "-t", "x", "--gt", str(small), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "shape" in result.output
    result = runner.invoke(app, ["segment", str(image), "-t", "x", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--gt" in result.output
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((96, 128), np.uint8))  # a wrong label value or file: nothing to score
    result = runner.invoke(app, ["segment", str(image), "-t", "x", "--gt", str(empty), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "has no foreground pixel" in result.output
    result = runner.invoke(app, ["segment", str(image), "-t", " ", "--gt", str(gt), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "the target text is empty" in result.output
    for command in (["segment", str(image), "-t", "x", "--gt", str(gt), "-o", str(tmp_path / "o")],
                    ["evaluate", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "e")],
                    ["trajectories", "generate", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "t")],
                    ["data", "build-synthetic", "--out", str(tmp_path / "s")]):
        result = runner.invoke(app, [*command, "--seed", "-1"], env={"COLUMNS": "200"})  # numpy refuses them later
        message = " ".join(result.output.split())
        assert result.exit_code == 2 and "'--seed': Input should be greater than or equal to 0" in message, command
    result = runner.invoke(app, ["segment", str(image), "-t", "x", "--gt", str(gt), "--tool", "nope", "-o",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown tool" in result.output
    result = runner.invoke(app, ["segment", str(image), "-t", "x", "--gt", str(gt), "--tool", "sam", "-o",
                                 str(tmp_path / "o"), "--checkpoint", str(tmp_path / "missing.pth")])
    assert result.exit_code == 2 and "missing.pth" in result.output


def test_evaluate_tool_tables_and_resume(tmp_path):
    data = tmp_path / "data"
    for index in range(3):
        _write_case(data, f"case{index}", (40 + 20 * index, 45), 15 + 3 * index)
    out = tmp_path / "eval"
    args = ["evaluate-tool", "--data", str(data), "--clicks", "3", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "tool_eval.json").read_text())
    overall = summary["summary"][0]
    assert overall["group"] == "all" and overall["samples"] == 3
    assert 0.0 < overall["mIoU@3"] <= 1.0
    assert (out / "tool_eval.csv").read_text().startswith("group,name,samples,mIoU@1")
    # whether clicks help monotonically, in every output: share of clicks lowering IoU, mean loss
    assert "lowered>0.02,mean drop" in (out / "tool_eval.csv").read_text().splitlines()[0]
    assert 0.0 <= overall["lowered>0.02"] <= 1.0 and overall["mean drop"] >= 0.0
    assert "lowered>0.02" in result.output and "mean drop" in result.output
    lines = (out / "curves.jsonl").read_text().splitlines()
    assert len(lines) == 3
    result = runner.invoke(app, args)  # resumes: nothing new to run, same table
    assert result.exit_code == 0 and "(0 new)" in result.output
    assert len((out / "curves.jsonl").read_text().splitlines()) == 3


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(tmp_path):
    image, gt, _ = _write_case(tmp_path / "data", "case1", (60, 50), 22)
    taken = tmp_path / "results.csv"  # `-o results.csv`: FileExistsError tracebacks, before
    taken.write_text("mine")
    for command in (["segment", str(image), "-t", "x", "--gt", str(gt)],
                    ["evaluate", "--data", str(tmp_path / "data")],
                    ["evaluate-tool", "--data", str(tmp_path / "data")],
                    ["trajectories", "generate", "--data", str(tmp_path / "data")],
                    ["data", "build-synthetic"]):
        result = runner.invoke(app, [*command, "--out", str(taken)], env={"COLUMNS": "200"})
        assert result.exit_code == 2 and "is a file" in result.output, command
    assert taken.read_text() == "mine"
    under_a_file = str(taken / "x.parquet")
    result = runner.invoke(app, ["train", "rl-data", "--data", str(tmp_path / "data"), "--out", under_a_file])
    assert result.exit_code == 2 and "File exists" in result.output


def test_numbers_out_of_range_are_refused_by_the_option_or_named_by_the_library(tmp_path):
    _write_case(tmp_path / "data", "a", (60, 50), 14)
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    for args, problem in [
        (["evaluate-tool", "--data", data, "--limit", "-3", "-o", out], "Invalid value for '--limit'"),
        (["reward", "compare", "--records", data, "--dice-tie", "-1"], "Invalid value for '--dice-tie'"),
        (["trajectories", "export", data, "--min-final-iou", "2"], "Invalid value for '--min-final-iou'"),
        (["trajectories", "generate", "--data", data, "-o", out, "--tau", "-1"], "tau must be a number > 0"),
        (["trajectories", "generate", "--data", data, "-o", out, "--box-jitter", "nan"], "box_jitter must be in"),
    ]:
        result = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 2 and problem in " ".join(result.output.split()), (args, result.output)
        assert not (tmp_path / "out").exists()
