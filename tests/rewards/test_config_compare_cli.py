"""Reward specs from YAML and overrides, the comparison sandbox, and the `reward` commands."""

from __future__ import annotations

import json

import pytest
import typer
from reward_cases import build_record, gt_rect, rect
from typer.testing import CliRunner

from command_harness import command_app
from medseg_agent.environment.record import save_record
from medseg_agent.rewards import (
    RewardConfigError,
    get_preset,
    load_reward_config,
    resolve_reward,
    score_record,
    spec_from_dict,
)
from medseg_agent.rewards.compare import compare, format_report, load_records
from medseg_agent.rewards.config import parse_overrides


def test_yaml_merges_over_a_preset(tmp_path):
    path = tmp_path / "strict.yaml"
    path.write_text(
        "preset: medseg\nname: strict_stop\n"
        "groups:\n  quality:\n    terms: {stopping: 0.1, click_correctness: null}\n"
        "params: {good_iou: 0.85}\n"
    )
    spec = load_reward_config(path)
    base = get_preset("medseg")
    assert spec.name == "strict_stop" and spec.params.good_iou == 0.85
    quality = spec.groups["quality"]
    assert quality.terms["stopping"] == 0.1 and "click_correctness" not in quality.terms
    assert quality.terms["outcome_dice"] == base.groups["quality"].terms["outcome_dice"]
    assert quality.clip == (0.0, None) and spec.terms == base.terms


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"terms": {"dice": 1.0}}, r"terms\.dice: unknown term"),
        ({"terms": {"outcome_dice": "high"}}, r"terms\.outcome_dice: expected a finite number"),
        ({"terms": {"outcome_dice": float("nan")}}, r"terms\.outcome_dice: expected a finite number"),
        ({"groups": {"q": {"weight": 1, "clip": [0]}}}, r"groups\.q\.clip: expected \[low, high\]"),
        ({"groups": {"q": {"weight": 1, "clip": ["a", 1]}}}, r"groups\.q\.clip: expected \[low, high\]"),
        ({"groups": {"q": {"weight": float("inf")}}}, r"groups\.q\.weight: expected a finite number"),
        ({"params": {"good_iou": "x"}}, r"params\.good_iou: expected a finite number"),
        ({"params": {"good_iou": float("nan")}}, r"params\.good_iou: expected a finite number"),
        ({"preset": "nope"}, "unknown reward preset 'nope'"),
        ({"weights": {}}, r"unknown key\(s\) \['weights'\]"),
        ({}, "has no terms"),
        ({"preset": "medseg", "groups": {"quality": {"clip": [1, 0]}}}, r"quality\.clip: low 1 is above high 0"),
        ({"preset": "medseg", "name": ["a", 1]}, r"my\.yaml: name: expected text, got \['a', 1\]"),
        ({"preset": 3}, r"my\.yaml: preset: expected text, got 3"),
        ({"preset": "medseg", "params": {"good_iou": 1.5}}, r"good_iou: expected a fraction in \[0, 1\], got 1\.5"),
        ({"preset": "medseg", "params": {"nsd_tolerance": 0}}, r"params\.nsd_tolerance: expected a number > 0, got 0"),
        ({"preset": "ibis_agent", "params": {"ibis_optimal_steps": 2.5}}, r"steps: expected a whole number >= 1"),
        ({"preset": "ibis_agent", "params": {"ibis_length_gamma": -0.2}}, r"gamma: expected a number >= 0, got -0\.2"),
    ],
)
def test_bad_configs_name_the_field(data, message):
    with pytest.raises(RewardConfigError, match=message):
        spec_from_dict(data, "my.yaml")


def test_whole_number_parameters_stay_whole_numbers():
    params = spec_from_dict({"preset": "ibis_agent", "params": {"ibis_optimal_steps": 3.0}}).params
    assert params.ibis_optimal_steps == 3 and isinstance(params.ibis_optimal_steps, int)


def test_a_reward_file_that_cannot_be_read_is_a_config_error(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes(b"name: r\xe9compense\npreset: medseg\n")
    with pytest.raises(RewardConfigError, match=r"^reward config .*latin1\.yaml is not UTF-8 text \(byte 7 is 0xe9\)"):
        load_reward_config(tmp_path / "latin1.yaml")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(RewardConfigError, match=r"^cannot read reward config .*folder\.yaml: Is a directory"):
        load_reward_config(tmp_path / "folder.yaml")
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfpreset: medseg\nname: with_bom\n")  # saved by a Windows editor
    assert load_reward_config(tmp_path / "bom.yaml").name == "with_bom"


def test_override_values_are_read_like_every_command_line_setting():
    assert parse_overrides(["params.good_iou=8.5e-1"]) == {"params": {"good_iou": 0.85}}  # YAML 1.1: a string
    with pytest.raises(RewardConfigError, match=r"override 'params.good_iou=\[0.8': '\[0.8' is not a value YAML"):
        parse_overrides(["params.good_iou=[0.8"])


def test_overrides_from_the_command_line():
    spec = resolve_reward("medsam_agent", ["groups.quality.terms.improvement=0.2", "params.medsam_free_turns=2"])
    assert spec.groups["quality"].terms["improvement"] == 0.2 and spec.params.medsam_free_turns == 2
    assert spec.groups["quality"].weight == 0.8  # untouched fields keep the preset's values
    with pytest.raises(RewardConfigError, match="KEY=VALUE"):
        resolve_reward("medseg", ["good_iou"])
    with pytest.raises(RewardConfigError, match="neither a preset"):
        resolve_reward("medsam")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["params=[1]"], r"overrides: params: expected a mapping \(set its keys: params\.KEY=VALUE\), got \[1\]"),
        (["terms=true"], r"overrides: terms: expected a mapping"),
        (["groups=3"], r"overrides: groups: expected a mapping"),
        (["groups.quality=true"], r"overrides: groups\.quality: expected a mapping"),
        (["groups.quality.terms=abc"], r"overrides: groups\.quality\.terms: expected a mapping"),
        (["groups.quality.clip=[a, b]"], r"groups\.quality\.clip: expected \[low, high\], finite numbers"),
        (["terms.outcome_dice=.nan"], r"terms\.outcome_dice: expected a finite number"),
    ],
)
def test_overrides_of_the_wrong_shape_name_the_key(overrides, message):
    with pytest.raises(RewardConfigError, match=message):
        resolve_reward("medseg", overrides)


def sandbox(folder):
    """Two samples x three policies of known quality (good > mediocre; same Dice, fewer turns)."""
    gt = gt_rect()
    for sample in ("a", "b"):
        good = build_record(gt, [("box", (0, 0, 4, 3), gt), ("stop", None)], policy="good", sample_id=sample)
        slow = build_record(
            gt,
            [("box", (0, 0, 4, 1), rect(0, 1, 0, 4)), ("point", (2, 3, True), gt), ("stop", None)],
            policy="slow",
            sample_id=sample,
        )
        bad = build_record(
            gt, [("box", (0, 0, 4, 1), rect(0, 1, 0, 4)), ("stop", None)], policy="bad", sample_id=sample
        )
        for record in (good, slow, bad):
            save_record(record, folder / record.policy / f"{sample}.json", masks_as_png=record.policy == "slow")
    (folder / "summary.json").write_text(json.dumps({"not": "a record"}))


def test_compare_ranks_presets_on_known_orderings(tmp_path):
    sandbox(tmp_path)
    loaded = load_records(tmp_path)
    assert len(loaded.records) == 6 and loaded.skipped[0][0] == "summary.json"
    report = compare(loaded, [get_preset("medsam_agent"), get_preset("medseg")])
    by_name = {p.preset: p for p in report.presets}
    for summary in by_name.values():
        assert summary.outcome_agreement == 1.0 and summary.outcome_pairs == 4  # good/slow beat bad per sample
        assert summary.process_pairs == 2  # good vs slow: same Dice, fewer turns
    assert by_name["medseg"].process_agreement == 1.0
    policies = {row["policy"]: row for row in report.policies}
    assert policies["good"]["turns"] == 1 and policies["slow"]["turns"] == 2
    text = format_report(report)
    assert "| medseg |" in text and "| good | 2 |" in text and "skipped 1 file" in text


def cli() -> typer.Typer:
    from medseg_agent.cli import reward

    return command_app(reward)


def test_reward_explain_and_compare_commands(tmp_path):
    sandbox(tmp_path)
    runner = CliRunner()
    record = tmp_path / "slow" / "a.json"
    result = runner.invoke(cli(), ["reward", "explain", str(record), "-r", "medsam_agent", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    from medseg_agent.environment.record import load_record

    expected = score_record(load_record(record), "medsam_agent", base=record.parent)
    assert data["total"] == pytest.approx(expected.total) and len(data["steps"]) == 3

    result = runner.invoke(cli(), ["reward", "explain", str(record)])
    assert result.exit_code == 0 and "overshoot" in result.output and "turns" in result.output

    yaml_path = tmp_path / "mine.yaml"
    yaml_path.write_text("preset: medseg\nname: mine\nterms: {format_valid: 0.3}\n")
    result = runner.invoke(
        cli(), ["reward", "compare", "--records", str(tmp_path), "-r", "medseg", "-r", str(yaml_path)]
    )
    assert result.exit_code == 0, result.output
    assert "| mine |" in result.output and "| bad | 2 |" in result.output
    result = runner.invoke(cli(), ["reward", "compare", "--records", str(yaml_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "dir '" in result.output and "mine.yaml' is a file" in result.output

    result = runner.invoke(cli(), ["reward", "explain", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())
    result = runner.invoke(cli(), ["reward", "explain", str(record), "--set", "terms.bogus=1"])
    assert result.exit_code == 2 and "unknown term" in " ".join(result.output.split())


def test_records_in_the_runs_jsonl_layouts(tmp_path):
    gt = gt_rect()
    good = build_record(gt, [("box", (0, 0, 4, 3), gt), ("stop", None)], policy="good")
    bad = build_record(gt, [("box", (0, 0, 4, 1), rect(0, 1, 0, 4)), ("stop", None)], policy="bad")
    dump = [r.model_dump(mode="json") for r in (good, bad)]
    (tmp_path / "records.jsonl").write_text(  # evaluate: one record per line under "record"
        "\n".join(json.dumps({"key": f"k{i}", "record": d}) for i, d in enumerate(dump)) + "\n"
    )
    (tmp_path / "trajectories.jsonl").write_text(json.dumps({"key": "s", "trajectories": dump}) + "\n{}\n")
    loaded = load_records(tmp_path)
    names = sorted(name for name, _, _ in loaded.records)
    assert names == ["records.jsonl:1", "records.jsonl:2", "trajectories.jsonl:1#0", "trajectories.jsonl:1#1"]
    assert loaded.skipped == [("trajectories.jsonl:2", "no trajectory record in this line")]

    runner = CliRunner()
    result = runner.invoke(cli(), ["reward", "explain", str(tmp_path / "records.jsonl"), "--line", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"] == pytest.approx(score_record(bad, "medseg").total)
    args = ["reward", "explain", str(tmp_path / "trajectories.jsonl"), "--trajectory", "2"]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 2 and "holds 2 trajectory record(s)" in " ".join(result.output.split())


def test_unreadable_record_files_are_named_not_tracebacks(tmp_path):
    gt = gt_rect()
    record = build_record(gt, [("box", (0, 0, 4, 3), gt), ("stop", None)], policy="good").model_dump(mode="json")
    rows = tmp_path / "runs" / "records.jsonl"
    rows.parent.mkdir()
    rows.write_bytes(b"\xff\xfe not text\n\n" + json.dumps({"key": "k", "record": record}).encode() + b"\n")
    (tmp_path / "runs" / "latin1.json").write_bytes(b'{"policy": "caf\xe9"}')
    (tmp_path / "runs" / "folder.jsonl").mkdir()
    loaded = load_records(tmp_path / "runs")
    assert [name for name, _, _ in loaded.records] == ["records.jsonl:3"]  # blank line 2 still counted
    assert [(name, reason.split(":")[0]) for name, reason in loaded.skipped] == [
        ("latin1.json", f"record file {tmp_path / 'runs' / 'latin1.json'} is not UTF-8 text (byte 15 is 0xe9); "
         "save it as UTF-8"),
        ("records.jsonl:1", "not UTF-8 text"),
    ]

    runner = CliRunner()

    def explain(*args: str) -> str:
        result = runner.invoke(cli(), ["reward", "explain", *args])
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    assert f"{rows} line 1 is not UTF-8 text" in explain(str(rows))
    assert f"{rows} line 2 is blank" in explain(str(rows), "--line", "2")
    assert f"{rows} line 4 is past the end (3 line(s))" in explain(str(rows), "--line", "4")
    assert runner.invoke(cli(), ["reward", "explain", str(rows), "--line", "3", "--json"]).exit_code == 0
    assert "cannot read record file" in explain(str(tmp_path / "runs" / "folder.jsonl"))
    (tmp_path / "folder.json").mkdir()
    assert "cannot read record file" in explain(str(tmp_path / "folder.json"))
