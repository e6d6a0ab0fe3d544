"""Stage 1: SFT of the tiny Qwen3-VL on trajectory conversations, then the checkpoint as the hf policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.runner import run_episode
from medseg_agent.tools.registry import build_tool
from medseg_agent.training.sft import (
    SFTDataError,
    SFTOptions,
    assistant_spans_mask,
    load_sft_dataset,
    run_sft,
    sft_rows_from_records,
    validate_sft_rows,
)
from medseg_agent.vocabulary.sample import Sample
from medseg_agent.vocabulary.stop import StopReason


def disc(centre=(40, 30), radius=14, h=60, w=80) -> Sample:
    yy, xx = np.mgrid[:h, :w]
    mask = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    image = np.clip(60 + 120 * mask + np.random.default_rng(1).normal(0, 8, (h, w)), 0, 255).astype(np.uint8)
    return Sample(np.stack([image] * 3, 2), mask, "bright disc", "CT", "synthetic", f"disc-{centre[0]}")


def sft_parquet(folder: Path) -> Path:
    """Clicker episodes -> the exported conversational rows -> parquet (the exports' format)."""
    import datasets

    tool = build_tool("classic")
    pairs = []
    for sample in (disc(), disc(centre=(30, 25), radius=10)):
        env = SegmentationEnv(tool, EpisodeConfig(max_turns=2, view_longest_side=64))
        pairs.append((run_episode(env, ClickerPolicy(stop_iou=0.9), sample), sample.image))
    rows = sft_rows_from_records(pairs)
    path = folder / "sft.parquet"
    datasets.Dataset.from_list(rows * 2).to_parquet(str(path))
    return path


def options(model: Path, data: Path, out: Path, **changes) -> SFTOptions:
    base = dict(
        model=str(model),
        data=str(data),
        output_dir=str(out),
        max_steps=6,
        learning_rate=3e-3,
        batch_size=2,
        grad_accum=1,
        logging_steps=1,
        save_steps=100,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        gradient_checkpointing=False,
        use_cpu=True,
    )
    base.update(changes)
    return SFTOptions(**base)


def test_assistant_mask_covers_replies_and_their_end_token():
    # <|im_start|>=1, "assistant"=7, <|im_end|>=2; two assistant turns and one user turn.
    ids = torch.tensor([[1, 5, 9, 2, 1, 7, 11, 12, 2, 1, 5, 9, 2, 1, 7, 13, 2, 0]])
    mask = assistant_spans_mask(ids, [1, 7], 2)
    assert ids[mask].tolist() == [11, 12, 2, 13, 2]


def test_rows_are_checked_before_training(tmp_path):
    import datasets

    good = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]}
    with pytest.raises(SFTDataError, match="row 0: 1 image placeholder"):
        validate_sft_rows(datasets.Dataset.from_list([{**good, "images": []}]), "rows.parquet")
    with pytest.raises(SFTDataError, match="missing column"):
        validate_sft_rows(datasets.Dataset.from_list([{"text": "x"}]), "rows.parquet")
    with pytest.raises(SFTDataError, match="does not exist"):
        load_sft_dataset(tmp_path / "missing.parquet")


USER_TURN = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "segment"}]}


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (['{"messages": ['], r"cannot read the json rows: JSON parse error"),
        ([""], r"rows\.jsonl: the file is empty"),
        ([{"messages": "segment the liver", "images": []}], r"row 0: 'messages' must be a non-empty list .* got str"),
        ([{"messages": [], "images": []}], r"row 0: 'messages' must be a non-empty list"),
        ([{"messages": [{"content": "hi"}], "images": []}], r"row 0: messages\[0\] must be an object with a text"),
        ([{"messages": [{"role": "user", "content": 5}], "images": []}], r"row 0: messages\[0\]\.content must be text"),
        ([{"messages": [USER_TURN], "images": "view.png"}], r"row 0: 'images' must be a list of images, got str"),
        (
            [{"messages": [USER_TURN], "images": ["a.png"]}, {"messages": ["hi"], "images": []}],
            r"row 1: messages\[0\] must be an object with a text 'role', got str 'hi'",
        ),
    ],
)
def test_rows_people_bring_are_checked_naming_row_and_field(tmp_path, lines, problem):
    import json

    path = tmp_path / "rows.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).strip())
    with pytest.raises(SFTDataError, match=problem):
        load_sft_dataset(path)


@pytest.mark.slow
def test_sft_loss_goes_down_and_the_checkpoint_runs_as_hf_policy(tiny_qwen, tmp_path):
    from transformers import AutoModelForImageTextToText

    from medseg_agent.policies.registry import build_policy

    data = sft_parquet(tmp_path)
    base = AutoModelForImageTextToText.from_pretrained(tiny_qwen)
    result = run_sft(options(tiny_qwen, data, tmp_path / "full"))
    assert result.steps == 6 and len(result.losses) == 6
    assert result.losses[-1] < 0.9 * result.losses[0], result.losses

    trained = AutoModelForImageTextToText.from_pretrained(result.output_dir)
    before, after = dict(base.named_parameters()), dict(trained.named_parameters())
    vision = [n for n in before if ".visual." in n]
    language = [n for n in before if "language_model" in n]
    assert vision and all(torch.equal(before[n], after[n]) for n in vision)  # frozen vision tower
    assert any(not torch.equal(before[n], after[n]) for n in language)

    policy = build_policy("hf", model_path=str(result.output_dir), device="cpu", max_new_tokens=12)
    sample = disc()
    env = SegmentationEnv(build_tool("classic"), EpisodeConfig(max_turns=2, view_longest_side=64))
    record = run_episode(env, policy, sample)
    assert record.policy == "hf" and record.turns
    assert record.stop_reason in (StopReason.STOP_ACTION, StopReason.TURN_LIMIT, StopReason.TOO_MANY_ERRORS)


@pytest.mark.slow
def test_lora_sft_resumes_and_merges(tiny_qwen, tmp_path):
    from transformers import AutoModelForImageTextToText

    data = sft_parquet(tmp_path)
    out = tmp_path / "lora"
    first = run_sft(options(tiny_qwen, data, out, lora=True, max_steps=2, save_steps=1, learning_rate=1e-2))
    assert first.trainable_parameters < first.total_parameters / 2
    again = run_sft(options(tiny_qwen, data, out, lora=True, max_steps=3, save_steps=1, learning_rate=1e-2))
    assert again.resumed_from is not None and again.resumed_from.endswith("checkpoint-2")
    assert again.steps == 3 and len(again.losses) == 1  # only the step after the checkpoint ran
    merged = AutoModelForImageTextToText.from_pretrained(again.output_dir)  # a plain checkpoint, no adapter
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_an_export_folder_loads_its_trl_file(tmp_path):
    import shutil

    export = tmp_path / "export"
    export.mkdir()
    shutil.move(sft_parquet(tmp_path), export / "medseg_expert.hf.parquet")
    (export / "dataset_info.json").write_text("{}")  # LLaMA-Factory's, written by the sharegpt export
    (export / "medseg_expert.verl_rl.parquet").write_bytes(b"not read")
    dataset = load_sft_dataset(export)
    assert len(dataset) == 4 and dataset[0]["messages"][0]["role"] == "system"


def test_set_overrides_every_key_the_command_sets(tmp_path):
    """Issue 10 item 11: ``train sft --set KEY=VALUE`` crashed for keys the command also sets."""
    from trl import SFTConfig

    from medseg_agent.training.sft import sft_config_kwargs

    extra = {"logging_steps": 3, "gradient_checkpointing": False, "warmup_ratio": 0.2, "lr_scheduler_type": "constant",
             "seed": 7, "bf16": False, "save_total_limit": 5, "learning_rate": 2e-4, "warmup_steps": 4}
    kwargs = sft_config_kwargs(SFTOptions(model="m", data="d", output_dir=str(tmp_path), extra=extra), True)
    assert {k: kwargs[k] for k in extra} == extra
    config = SFTConfig(**{**kwargs, "use_cpu": True})
    assert (config.seed, config.logging_steps, config.save_total_limit, config.warmup_ratio) == (7, 3, 5, 0.2)
    assert kwargs["logging_first_step"]  # a run shorter than the logging interval still logs a loss
    with pytest.raises(ValueError, match="--set warmup_stepz: not a field"):
        sft_config_kwargs(SFTOptions(model="m", data="d", output_dir=str(tmp_path), extra={"warmup_stepz": 1}))


def test_loss_summary_never_prints_nan():
    from medseg_agent.training.sft import loss_summary

    assert loss_summary([2.5, 1.25], 20) == "loss 2.5000 -> 1.2500 (2 logged)"
    assert loss_summary([2.5], 3) == "loss 2.5000 (logged once)"
    assert "nan" not in loss_summary([], 2) and "no loss logged in 2 step(s)" in loss_summary([], 2)


@pytest.mark.slow
def test_cli_sft_shorter_than_the_logging_interval_with_overrides(tiny_qwen, tmp_path):
    from typer.testing import CliRunner

    from medseg_agent.cli.app import app

    data = sft_parquet(tmp_path)
    args = ["train", "sft", "--model", str(tiny_qwen), "--data", str(data), "--out", str(tmp_path / "o"), "--cpu",
            "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1", "--set", "logging_steps=10",
            "--set", "seed=3", "--set", "warmup_ratio=0.1", "--set", "save_total_limit=1",
            "--set", "gradient_checkpointing=false", "--set", "bf16=false", "--set", "lr_scheduler_type=constant"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output and "nan" not in result.output and "(logged once)" in result.output
    bad = CliRunner().invoke(app, [*args[:-2], "--set", "no_such_field=1"])
    assert bad.exit_code == 2 and "not a field of TRL's SFTConfig" in " ".join(bad.output.split())
