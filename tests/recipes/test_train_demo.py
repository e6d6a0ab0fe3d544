"""`train demo` at smoke size: every stage runs and is kept, a rerun skips finished stages, the tables
and the curve are written, and stage 2 reruns alone from a given SFT model with another reward.
(Whether the recipe *learns* is measured by benchmarks/train_demo_seeds.py, not here.)"""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from command_harness import command_app
from medseg_agent.recipes.train_demo import (
    PRESETS,
    REFERENCE_ROWS,
    DemoError,
    DemoOptions,
    ensure_data,
    run_demo,
    run_expert_stage,
    settings_with,
)

pytestmark = pytest.mark.slow  # builds, trains and evaluates three small models (~1 min)


def cli() -> typer.Typer:
    from medseg_agent.cli import train

    return command_app(train)


def test_every_stage_runs_resumes_and_reruns_stage_two_with_another_reward(tmp_path):
    out = tmp_path / "demo"
    runner = CliRunner()
    result = runner.invoke(cli(), ["train", "demo", "--size", "smoke", "--out", str(out), "-q"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    seed = out / "seed-0"
    for stage in ("export", "seed-0/base", "seed-0/sft", "seed-0/rl"):
        assert (out / stage / "stage.json").is_file(), stage
    assert (seed / "sft" / "final" / "config.json").is_file() and (seed / "rl" / "final" / "config.json").is_file()
    table = json.loads((seed / "table.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["base", "sft", "rl", *REFERENCE_ROWS]
    assert all(r["n"] == PRESETS["smoke"].test_images for r in table["rows"])
    expert = next(r for r in table["rows"] if r["row"] == "expert")
    assert expert["valid_action_rate"] == 1.0 and expert["dice"] > 0.5
    assert table["meta"]["parameters"]["total"] > 0 and table["meta"]["expert"]["mean_turns"] >= 1
    for name in ("table.md", "table.csv", "grpo_curve.png"):
        assert (seed / name).stat().st_size > 0
    assert "SFT + RL" in (seed / "table.md").read_text() and "SFT + RL" in result.output
    demo = json.loads((seed / "demo.json").read_text())
    curve, first_seconds = demo["curve"], demo["stage_seconds"]
    assert set(first_seconds) == {"expert", "base", "sft", "rl"} and first_seconds["sft"] > 0
    assert [p["step"] for p in curve["val"]] == [0, 2] and len(curve["train"]) == 2

    stamps = {p: (out / p / "stage.json").stat().st_mtime_ns for p in ("export", "seed-0/sft", "seed-0/rl")}
    logged: list[str] = []
    settings = PRESETS["smoke"]
    rerun = run_demo(DemoOptions(out=out, settings=settings, show_progress=False, log=logged.append))
    assert sum("skipped" in line for line in logged) == 4  # expert, base, SFT, GRPO
    assert {p: (out / p / "stage.json").stat().st_mtime_ns for p in stamps} == stamps
    assert [r["row"] for r in rerun.rows] == [r["row"] for r in table["rows"]]
    # a skipped stage still reports what it cost when it ran
    assert json.loads((seed / "demo.json").read_text())["stage_seconds"] == first_seconds

    # a second training seed shares the data, the expert and the reference rows of the first
    second = run_demo(DemoOptions(out=out, settings=settings, seed=1, stages=("rl",), from_model=seed / "sft",
                                  show_progress=False, log=logged.append))
    references = {r["row"]: r for r in table["rows"] if r["row"] in REFERENCE_ROWS}
    assert {r["row"]: r for r in second.rows if r["row"] in REFERENCE_ROWS} == references

    with pytest.raises(DemoError, match="other settings"):
        run_demo(DemoOptions(out=out, settings=settings_with(settings, {"sft_lr": 0.5}), show_progress=False,
                             log=logged.append))

    sandbox = tmp_path / "sandbox"
    result = runner.invoke(
        cli(),
        ["train", "demo", "--size", "smoke", "--out", str(sandbox), "--stages", "rl", "--from", str(seed / "sft"),
         "--reward", "medsam_agent", "--no-references", "-q"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((sandbox / "seed-0" / "table.json").read_text())["rows"]
    assert [r["row"] for r in rows] == ["sft", "rl"]
    stage = json.loads((sandbox / "seed-0" / "rl" / "stage.json").read_text())
    assert stage["settings"]["reward"] == "medsam_agent" and stage["settings"]["model"] == str(seed / "sft" / "final")
    assert not (sandbox / "seed-0" / "sft").exists()  # stage 1 did not run again

    # stage 1 from a given checkpoint (here the SFT model above stands for a pretrained one)
    pretrained = seed / "sft" / "final"
    result = runner.invoke(
        cli(),
        ["train", "demo", "--size", "smoke", "--out", str(tmp_path / "from-base"), "--stages", "expert,sft",
         "--base-model", str(pretrained), "--no-references", "-q"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    started = tmp_path / "from-base" / "seed-0"
    assert not (started / "base").exists()  # nothing built from the config
    assert json.loads((started / "sft" / "stage.json").read_text())["settings"]["model"] == str(pretrained)
    demo = json.loads((started / "demo.json").read_text())
    assert demo["models"]["base"] == str(pretrained) and [r["row"] for r in demo["rows"]] == ["base", "sft"]
    # the base row is the given model's own: it was trained, so it is not the untrained model's
    sft_row = next(r for r in table["rows"] if r["row"] == "sft")
    assert demo["rows"][0] == {**sft_row, "row": "base", "title": "base (given: final)"}
    assert "base (given: final)" in result.output and "untrained" not in result.output


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown demo setting 'sft_rate'"):
        settings_with(PRESETS["demo"], {"sft_rate": 1})
    with pytest.raises(ValueError, match="unknown model setting 'model.width'"):
        settings_with(PRESETS["demo"], {"model.width": 1})
    assert settings_with(PRESETS["demo"], {"model.hidden_size": 256}).model.hidden_size == 256
    # a value of the wrong type is named here, not left to fail inside the optimizer
    with pytest.raises(ValueError, match=r"setting sft_lr: expected float \(like 0.001\), got '3e-4' \(str\)"):
        settings_with(PRESETS["demo"], {"sft_lr": "3e-4"})
    with pytest.raises(ValueError, match="setting rl_steps: expected int"):
        settings_with(PRESETS["demo"], {"rl_steps": 2.5})
    with pytest.raises(ValueError, match="setting model.vocab_size: expected int"):
        settings_with(PRESETS["demo"], {"model.vocab_size": True})
    assert settings_with(PRESETS["demo"], {"sft_epochs": 20}).sft_epochs == 20.0  # an int for a float is fine


def test_cli_refuses_bad_options(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli(), ["train", "demo", "--size", "huge", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--size must be one of demo, smoke" in result.output
    result = runner.invoke(cli(), ["train", "demo", "--seeds", "a,b", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "expected integers" in result.output
    result = runner.invoke(cli(), ["train", "demo", "--seeds", "0,-1", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "seeds are whole numbers from 0" in result.output
    result = runner.invoke(cli(), ["train", "demo", "--seeds", "1,1", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "a seed given twice" in result.output
    result = runner.invoke(cli(), ["train", "demo", "--size", "smoke", "--stages", "rl", "--from", str(tmp_path),
                                   "--out", str(tmp_path / "x"), "-q"])
    assert result.exit_code != 0 and "no model there" in " ".join(result.output.split())
    result = runner.invoke(cli(), ["train", "demo", "--size", "smoke", "--base-model", str(tmp_path),
                                   "--out", str(tmp_path / "y"), "-q"])
    assert result.exit_code != 0 and "--base-model" in result.output and "no config.json" in result.output
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    result = runner.invoke(cli(), ["train", "demo", "--size", "smoke", "--base-model", str(tmp_path / "llama"),
                                   "--out", str(tmp_path / "z"), "-q"])
    assert result.exit_code != 0 and "'llama' is not a Qwen-VL" in " ".join(result.output.split())


def test_tool_workers_do_not_change_the_expert_data(tmp_path):
    """``--workers`` only spreads the tool work: the exported SFT rows are the same with 1 or 2."""
    import pyarrow.parquet as pq

    settings = PRESETS["smoke"]
    rows = []
    for workers in (1, 2):
        out = tmp_path / f"workers-{workers}"
        options = DemoOptions(out=out, settings=settings, workers=workers, show_progress=False, log=lambda _: None)
        export = run_expert_stage(out, ensure_data(out, settings, options), settings, options)
        (table,) = [pq.read_table(p) for p in export.glob("*.parquet")]
        rows.append(sorted(json.dumps(m, sort_keys=True) for m in table.column("messages").to_pylist()))
    assert len(rows[0]) == settings.train_images and rows[0] == rows[1]
