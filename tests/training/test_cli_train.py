"""The `train` commands that run without a GPU: RL rows, verl configs, the verl launch (dry run), bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from command_harness import command_app
from medseg_agent.io.masks import write_image_png, write_mask_png


def cli() -> typer.Typer:
    from medseg_agent.cli import train

    return command_app(train)


def text(result) -> str:
    return " ".join(result.output.split())


def manifest(folder: Path) -> Path:
    """Two synthetic samples in the manifest layout the readers accept."""
    rows = []
    for i, (cx, cy) in enumerate([(40, 30), (25, 20)]):
        yy, xx = np.mgrid[:60, :80]
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= 12**2
        image = np.clip(60 + 120 * mask, 0, 255).astype(np.uint8)
        write_image_png(folder / f"img{i}.png", np.stack([image] * 3, 2))
        write_mask_png(folder / f"mask{i}.png", mask)
        rows.append(f"img{i}.png,mask{i}.png,bright disc,CT,synthetic,s{i}")
    path = folder / "manifest.csv"
    path.write_text("image,mask,target,modality,dataset,sample_id\n" + "\n".join(rows) + "\n")
    return path


def test_rl_data_writes_rows_verl_reads(tmp_path):
    import pyarrow.parquet as pq

    result = CliRunner().invoke(
        cli(), ["train", "rl-data", "--data", str(manifest(tmp_path)), "--out", str(tmp_path / "rl.parquet")]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "rl.parquet").to_pylist()
    assert [row["extra_info"]["sample_id"] for row in table] == ["s0", "s1"]
    assert table[0]["agent_name"] == "medseg_agent" and table[0]["prompt"][1]["content"].startswith("<image>")


def test_rl_data_rejects_a_missing_dataset(tmp_path):
    result = CliRunner().invoke(
        cli(), ["train", "rl-data", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x.parquet")]
    )
    assert result.exit_code == 2 and "nope" in text(result)


def test_verl_config_and_rl_dry_run(tmp_path):
    pytest.importorskip("verl")
    runner = CliRunner()
    result = runner.invoke(cli(), ["train", "verl-config", "--out", str(tmp_path / "cfg"), "--tool", "http://ts:9000"])
    assert result.exit_code == 0, result.output
    tools = yaml.safe_load((tmp_path / "cfg" / "tools.yaml").read_text())["tools"]
    assert {t["config"]["tool"] for t in tools} == {"http://ts:9000"}

    args = ["train", "rl", "--model", "/models/sft", "--train", str(tmp_path / "rl.parquet"), "--out", str(tmp_path)]
    result = runner.invoke(cli(), [*args, "--nnodes", "2", "--dry-run", "--", "trainer.total_epochs=2"])
    assert result.exit_code == 0, result.output
    output = text(result)
    assert (
        "verl.trainer.main_ppo" in output and "trainer.nnodes=2" in output and output.endswith("trainer.total_epochs=2")
    )
    result = runner.invoke(cli(), [*args, "--dry-run", "--", "trainer.no_such_key=1"])
    assert result.exit_code == 2 and "no_such_key" in text(result)
    # Issue 10 item 13: validating on the training file is said, not silent.
    assert "no --val: verl validates on the training file(s)" in output
    assert f"data.val_files=[{tmp_path / 'rl.parquet'}]" in output
    val = tmp_path / "val.parquet"
    result = runner.invoke(cli(), [*args, "--val", str(val), "--dry-run"])
    assert result.exit_code == 0 and "no --val" not in text(result) and f"data.val_files=[{val}]" in text(result)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"trainer.total_epochs: 2 # r\xe9glage\n", r"recipe .*my_recipe\.yaml is not UTF-8 text \(byte 27 is 0xe9\)"),
        (b"trainer.total_epochs: [2\n", r"recipe .*my_recipe\.yaml is not valid YAML"),
        (b"- trainer.total_epochs=2\n", r"my_recipe\.yaml: expected a mapping of dotted verl keys"),
        (None, r"cannot read recipe .*my_recipe\.yaml: Is a directory"),
    ],
)
def test_a_recipe_that_cannot_be_read_is_named(tmp_path, content, problem):
    pytest.importorskip("verl")
    recipe = tmp_path / "my_recipe.yaml"
    if content is None:
        recipe.mkdir()
    else:
        recipe.write_bytes(content)
    args = ["train", "rl", "--model", "/m", "--train", str(tmp_path / "rl.parquet"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli(), [*args, "--recipe", str(recipe), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert re.search(problem, text(result)), text(result)


def test_sft_command_names_bad_data(tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"text": "no messages here"}\n')
    result = CliRunner().invoke(
        cli(), ["train", "sft", "--model", "unused", "--data", str(bad), "--out", str(tmp_path / "o"), "--cpu"]
    )
    assert result.exit_code == 2 and "missing column" in text(result) and "rows.jsonl" in text(result)


def test_grpo_names_what_cannot_work_before_it_loads_a_model(tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    base = ["train", "grpo", "--data", str(manifest(tmp_path)), "--out", str(tmp_path / "o"), "--cpu"]
    cases = [
        (["--model", str(tmp_path / "nowhere")], r"train grpo: checkpoint folder \S*nowhere does not exist"),
        # the empty folder would fail to load: these are found first
        (["--model", str(empty), "--reward", "nosuch"], r"reward 'nosuch' is neither a preset"),
        (["--model", str(empty), "--tool", "nosuch"], r"unknown tool 'nosuch'"),
        (["--model", str(empty), "--chat-template", str(tmp_path / "t.jinja")], r"chat template .* nor a file"),
        (["--model", str(empty), "--lr", "-1"], r"learning_rate must be a number > 0, got -1\.0"),
        (["--model", str(empty)], r"train grpo: cannot load a vision-language checkpoint from \S*empty-model"),
    ]
    for args, problem in cases:
        result = CliRunner().invoke(cli(), [*base, *args])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (args, result.output)
        assert re.search(problem, text(result)), (args, text(result))


def test_sft_names_a_missing_checkpoint_folder_before_reading_the_data(tmp_path):
    result = CliRunner().invoke(cli(), ["train", "sft", "--model", str(tmp_path / "nowhere"), "--data",
                                        str(tmp_path / "no-data"), "--out", str(tmp_path / "o"), "--cpu"])
    assert result.exit_code == 2 and re.search(r"train sft: checkpoint folder \S*nowhere does not exist", text(result))


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("rl-data", "--view", "8"),
        ("rl-data", "--limit", "-1"),
        ("verl-config", "--patch-size", "0"),
        ("sft", "--max-steps", "-2"),
        ("sft", "--max-length", "0"),
        ("grpo", "--limit", "0"),
    ],
)
def test_train_options_out_of_range_are_refused_by_the_option(tmp_path, command, option, value):
    result = CliRunner().invoke(cli(), ["train", command, option, value, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in text(result), text(result)
