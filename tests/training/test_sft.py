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
