"""The evaluation runner: records per sample, failures kept apart, resume checks, the CLI."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import typer
from evalfixtures import disc_samples, write_disc_dataset
from typer.testing import CliRunner

from medseg_agent.cli import evaluate as evaluate_cli
from medseg_agent.cli.common import parse_key_values
from medseg_agent.cli.options import PolicyOptions
from medseg_agent.environment.episode import EpisodeConfig
from medseg_agent.evaluation.evaluate import EvalSpec, describe_run, keyed_samples, run_evaluation
from medseg_agent.evaluation.report import write_report
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.tools.registry import build_tool


def _spec(**episode):
    config = EpisodeConfig(max_turns=3, view_longest_side=64, **episode)
    return EvalSpec(
        make_tool=partial(build_tool, "classic"),
        make_policy=partial(ClickerPolicy, stop_iou=0.95),
        episode=config,
        describe=describe_run("clicker", {"stop_iou": 0.95, "api_key": "sk-secret"}, "classic", {}, config, 0),
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_every_sample_gets_one_record_and_failures_are_kept_apart(tmp_path, workers):
    samples = disc_samples(4)
    samples[2].image = samples[2].image.astype(np.float32)  # the tool refuses non-uint8 images
    store, by_key = run_evaluation(samples, _spec(), tmp_path, workers=workers, show_progress=False)
    rows = {row["key"]: row for row in store.rows()}
    assert sorted(rows) == sorted(by_key) == [f"synthetic/disc-{i}" for i in range(4)]
    assert rows["synthetic/disc-2"]["failure"]["type"] == "ToolError"
    assert "expected a uint8 image" in rows["synthetic/disc-2"]["failure"]["message"]
    record = rows["synthetic/disc-0"]["record"]
    assert record["policy"] == "clicker" and record["final_metrics"]["iou"] > 0.4 and record["max_turns"] == 3
    assert "sk-secret" not in (tmp_path / "run.json").read_text()

    results, paths = write_report(store, tmp_path, max_actions=3, samples=by_key, gallery_per_row=1)
    assert len(results) == 4 and sum(r.failure is not None for r in results) == 1
    for name in ("markdown", "csv", "json", "iou_plot", "dice_plot", "gallery"):
        assert paths[name].stat().st_size > 0, name
    # A second run finds everything done and runs nothing.
    store2, _ = run_evaluation(samples, _spec(), tmp_path, show_progress=False)
    assert len(list(store2.rows())) == 4


def test_resume_refuses_different_settings(tmp_path):
    run_evaluation(disc_samples(1), _spec(), tmp_path, show_progress=False)
    with pytest.raises(ValueError, match=r"episode.max_consecutive_errors was 2, now 5\); use another --out"):
        run_evaluation(disc_samples(1), _spec(max_consecutive_errors=5), tmp_path, show_progress=False)


def test_a_record_edited_out_of_shape_is_named_by_its_line_with_how_to_redo_it(tmp_path):
    store, _ = run_evaluation(disc_samples(2), _spec(), tmp_path, show_progress=False)
    lines = store.path.read_text().splitlines()
    row = json.loads(lines[1])
    row["record"]["turns"][0]["iou"] = 5.0
    store.path.write_text("\n".join([lines[0], json.dumps(row)]) + "\n")
    with pytest.raises(ValueError, match=rf"records\.jsonl line 2 \(sample '{row['key']}'; delete the line and rerun "
                                         r"to redo it\): field 'turns\.0\.iou'"):
        write_report(store, tmp_path, max_actions=3)
    store.path.write_text("\n".join([lines[0], json.dumps({"key": row["key"], "failure": "it broke"})]) + "\n")
    with pytest.raises(ValueError, match=r"records\.jsonl line 2 .*: holds neither a record nor a failure"):
        write_report(store, tmp_path, max_actions=3)


def test_repeated_sample_ids_get_stable_distinct_keys():
    samples = disc_samples(2)
    samples[1].sample_id = samples[0].sample_id
    assert [k for k, _ in keyed_samples(samples)] == ["synthetic/disc-0", "synthetic/disc-0#2"]


def test_cli_writes_tables_plots_and_rejects_bad_options(tmp_path):
    data = write_disc_dataset(tmp_path / "data", 4)
    app = typer.Typer()
    evaluate_cli.register(app)
    app.command("noop")(lambda: None)  # keep `evaluate` a subcommand
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["evaluate", "--data", str(data), "--out", str(out), "--max-turns", "3", "-q",
                                 "--policy", "clicker", "--stop-iou", "0.8"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    overall = summary["summary"][0]
    assert overall["n"] == 4 and 0.5 < overall["dice"] <= 1.0
    assert {r["name"] for r in summary["summary"] if r["level"] == "modality"} == {"CT", "MRI"}
    assert summary["meta"]["policy_options"] == {"stop_iou": 0.8}
    assert (out / "plots" / "gallery.png").exists() and "| all | sample mean | 4 |" in (out / "summary.md").read_text()

    bad = runner.invoke(app, ["evaluate", "--data", str(data), "--out", str(tmp_path / "x"), "--policy", "hf"])
    assert bad.exit_code == 2 and "--policy hf needs --model-path" in " ".join(bad.output.split())
    bad = runner.invoke(app, ["evaluate", "--data", str(data), "--out", str(tmp_path / "x"), "--split", "train"])
    assert bad.exit_code == 2 and "has no split 'train' (found: test)" in " ".join(bad.output.split())


def test_policy_option_parsing():
    assert parse_key_values(["a=1", "b=x", "c={\"k\": [1]}"]) == {"a": 1, "b": "x", "c": {"k": [1]}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_key_values(["novalue"])
    options = PolicyOptions("hf", model_path=Path("m"), temperature=0.5, max_tokens=64).kwargs()
    assert options["do_sample"] and options["temperature"] == 0.5 and options["max_new_tokens"] == 64
    assert options["model_path"] == "m" and options["device"] == "auto"
    with pytest.raises(ValueError, match="--model-path"):
        PolicyOptions("hf").kwargs()
    assert PolicyOptions("clicker", stop_iou=0.8, policy_option=["k=2"]).kwargs() == {"stop_iou": 0.8, "k": 2}
