"""TRL GRPO with environment_factory: the environment's tools, TRL's tool-call parsing into them, and a
CPU training step with the tiny Qwen3-VL."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medseg_agent.environment.episode import EpisodeConfig
from medseg_agent.protocols import get_protocol
from medseg_agent.rewards import get_preset, score_record
from medseg_agent.tools.registry import build_tool
from medseg_agent.training.trl_grpo import GRPOOptions, SegmentationEnvironment, grpo_rows, run_grpo
from medseg_agent.vocabulary.actions import AddBox, AddPoint, Stop
from medseg_agent.vocabulary.sample import Sample
from medseg_agent.vocabulary.stop import StopReason


def disc(centre=(40, 30), radius=14, h=60, w=80) -> Sample:
    yy, xx = np.mgrid[:h, :w]
    mask = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    image = np.clip(60 + 120 * mask + np.random.default_rng(2).normal(0, 8, (h, w)), 0, 255).astype(np.uint8)
    return Sample(np.stack([image] * 3, 2), mask, "bright disc", "CT", "synthetic", f"disc-{centre[0]}")


def environment() -> SegmentationEnvironment:
    return SegmentationEnvironment(build_tool("classic"), EpisodeConfig(max_turns=3), get_preset("medsam_agent"))


def test_environment_tools_return_overlays_and_reward_scores_the_record():
    row = grpo_rows([disc()], view_longest_side=64)[0]
    assert row["prompt"][1]["content"].startswith("The target to be segmented is: bright disc")
    env = environment()
    assert env.reset(**row) is None
    image, text = env.add_bbox([300, 230, 700, 780])
    assert isinstance(image["image"], Image.Image) and "action(s) left" in text["text"]
    assert "could not be executed" in env.add_point([500], "positive")  # errors come back as text
    assert "finished" in env.stop_action()  # text only: the view is unchanged
    assert "over" in env.add_point([10, 10], "negative")
    record = env.record()
    assert record.stop_reason is StopReason.STOP_ACTION and record.final_metrics["iou"] > 0.4
    assert env.get_reward() == pytest.approx(score_record(record, "medsam_agent").total)


def test_trls_parser_turns_protocol_replies_into_environment_calls(tiny_qwen):
    from transformers import AutoProcessor
    from trl.chat_template_utils import add_response_schema, qwen3_vl_chat_template

    processor = AutoProcessor.from_pretrained(tiny_qwen)
    processor.chat_template = processor.tokenizer.chat_template = qwen3_vl_chat_template
    tokenizer = add_response_schema(processor).tokenizer
    protocol = get_protocol("medsam")
    env = environment()
    env.reset(**grpo_rows([disc()], view_longest_side=64)[0])
    for action in (AddBox(300, 230, 700, 780), AddPoint(500, 500, True), Stop()):
        parsed = tokenizer.parse_response(protocol.format_action(action, "reasoning") + "<|im_end|>")
        (call,) = parsed["tool_calls"]
        getattr(env, call["function"]["name"])(**call["function"]["arguments"])  # what TRL's tool loop does
    record = env.record()
    assert [t.action.name for t in record.turns] == ["add_bbox", "add_point", "stop_action"]
    assert record.num_errors == 0


@pytest.mark.slow
def test_grpo_step_on_cpu_with_the_tiny_model(tiny_qwen, tmp_path):
    import datasets

    rows = grpo_rows([disc(), disc(centre=(30, 25), radius=10)], view_longest_side=64)
    result = run_grpo(
        GRPOOptions(
            model=str(tiny_qwen),
            output_dir=str(tmp_path / "grpo"),
            max_steps=1,
            num_generations=2,
            batch_size=2,
            max_completion_length=24,
            max_turns=2,
            use_cpu=True,
            gradient_checkpointing=False,
            learning_rate=1e-4,
        ),
        datasets.Dataset.from_list(rows),
    )
    assert result.steps == 1
    assert len(result.rewards) == 1 and 0.0 <= result.rewards[0] <= 1.0  # the environment's get_reward ran
    assert (result.output_dir / "model.safetensors").is_file()
