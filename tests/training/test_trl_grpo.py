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
from medseg_agent.training.trl_grpo import (
    GRPOOptions,
    SegmentationEnvironment,
    generation_settings,
    grpo_rows,
    run_grpo,
    valid_action_rate,
    vision_token_ids,
)
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
    record = env.episode_record
    assert record.stop_reason is StopReason.STOP_ACTION and record.final_metrics["iou"] > 0.4
    assert env.get_reward() == pytest.approx(score_record(record, "medsam_agent").total)


def test_a_rollout_that_ends_without_stop_action_counts_its_last_reply_as_invalid():
    """TRL ends a rollout when a reply calls no tool; evaluation parses that reply and finds it invalid.
    Training must see it the same way, or GRPO loses nothing when the policy drops ``stop_action``."""
    row = grpo_rows([disc()], view_longest_side=64)[0]
    stopped, ended = (SegmentationEnvironment(build_tool("classic"), EpisodeConfig(max_turns=3), get_preset("medseg"))
                      for _ in range(2))
    for env in (stopped, ended):
        env.reset(**row)
        env.add_bbox([300, 230, 700, 780])
    stopped.stop_action()
    assert ended.episode_record.stop_reason is StopReason.POLICY_ENDED
    assert stopped.episode_record.num_replies == ended.episode_record.num_replies == 2
    assert valid_action_rate([stopped, ended]) == [1.0, 0.5]
    kept, dropped = score_record(stopped.episode_record, "medseg"), score_record(ended.episode_record, "medseg")
    assert kept.terms["format_valid"] == 1.0 and dropped.terms["format_valid"] == 0.5
    assert stopped.get_reward() - ended.get_reward() == pytest.approx(0.1 * 0.5)  # the same mask otherwise


def test_trl_sees_exactly_the_three_actions_as_tools():
    import inspect

    # what GRPOTrainer lists: public functions of the class other than reset and get_reward
    names = {
        name
        for name, _ in inspect.getmembers(SegmentationEnvironment, predicate=inspect.isfunction)
        if not name.startswith("_") and name not in ("reset", "get_reward")
    }
    assert names == {"add_bbox", "add_point", "stop_action"}


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
    record = env.episode_record
    assert [t.action.name for t in record.turns] == ["add_bbox", "add_point", "stop_action"]
    assert record.num_errors == 0


@pytest.mark.slow
def test_grpo_step_on_cpu_with_the_tiny_model(tiny_qwen, tmp_path):
    import datasets
    from transformers import AutoConfig, TrainerCallback

    seen = {}

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
            seen["generation_kwargs"] = args.generation_kwargs

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
        callbacks=[Spy()],
    )
    assert result.steps == 1
    vision = vision_token_ids(AutoConfig.from_pretrained(tiny_qwen))
    assert len(vision) == 4 and seen["generation_kwargs"]["suppress_tokens"] == vision  # never sampled
    assert len(result.rewards) == 1 and 0.0 <= result.rewards[0] <= 1.0  # the environment's get_reward ran
    assert (result.output_dir / "model.safetensors").is_file()


def test_vision_tokens_join_the_callers_suppressed_tokens_and_leave_vllm_alone():
    class Config:
        image_token_id, video_token_id, vision_start_token_id, vision_end_token_id = 12, 13, 9, 10

    assert vision_token_ids(Config()) == [9, 10, 12, 13]
    mine = {"generation_kwargs": {"suppress_tokens": [3, 12], "top_k": 5}, "beta": 0.1}
    merged = generation_settings(mine, Config())
    assert merged == {"generation_kwargs": {"suppress_tokens": [3, 9, 10, 12, 13], "top_k": 5}, "beta": 0.1}
    assert mine["generation_kwargs"]["suppress_tokens"] == [3, 12]  # the caller's settings are not changed
    assert generation_settings({"use_vllm": True}, Config()) == {"use_vllm": True}


@pytest.mark.slow
def test_demo_template_gives_grpo_rollouts_the_tokens_of_sft_rows_and_inference(tmp_path):
    """A rollout as TRL builds it (rendered first turn, the model's reply, the tool reply's suffix) is the
    exact token sequence the hf policy and the SFT export render for the same episode."""
    from transformers import AutoProcessor
    from trl.chat_template_utils import is_chat_template_prefix_preserving, supports_tool_calling
    from trl.data_utils import prepare_multimodal_messages

    from medseg_agent.environment.render import resize_view
    from medseg_agent.models.chat_template import qwen_vl_tool_template
    from medseg_agent.models.tiny_qwen import build_tiny_qwen_vl
    from medseg_agent.protocols.conversation import Conversation, to_hf
    from medseg_agent.training.trl_grpo import ensure_tool_call_parser
    from medseg_agent.vocabulary.actions import CoordinateSpace

    template = qwen_vl_tool_template(list_tools=False, tool_replies="user")
    path = build_tiny_qwen_vl(tmp_path / "m", max_pixels=64 * 64, phrase_tokens=True, chat_template=template)
    processor = AutoProcessor.from_pretrained(path)
    assert supports_tool_calling(processor) and is_chat_template_prefix_preserving(processor)
    ensure_tool_call_parser(processor)
    tokenizer = processor.tokenizer
    sample, protocol = disc(), get_protocol("medsam")
    row = grpo_rows([sample], view_longest_side=64, tool_listing=True)[0]
    env = environment()
    env.reset(**row)
    tools = [env.add_bbox, env.add_point, env.stop_action]
    reply = protocol.format_action(AddBox(300, 230, 700, 780))

    # TRL: the first turn rendered with tools=, the generated reply, then the tool reply's suffix
    prompt = prepare_multimodal_messages(row["prompt"], images=row["images"])
    first = processor.apply_chat_template(prompt, tools=tools, add_generation_prompt=True, tokenize=False)
    call = tokenizer.parse_response(reply + "<|im_end|>")["tool_calls"][0]["function"]
    assert call == {"name": "add_bbox", "arguments": {"bbox_2d": [300, 230, 700, 780]}}
    overlay, text = env.add_bbox(**call["arguments"])
    dummy = [{"role": "user", "content": "dummy"},
             {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]}]
    tool = [{"role": "tool", "name": "add_bbox", "content": [overlay, text]}]
    before = processor.apply_chat_template(prepare_multimodal_messages(dummy), tokenize=False)
    after = processor.apply_chat_template(prepare_multimodal_messages(dummy + tool), tokenize=False,
                                          add_generation_prompt=True)
    cut = before.rindex("<|im_end|>") + len("<|im_end|>")
    assert after.startswith(before[:cut])
    rollout = first + reply + "<|im_end|>" + after[cut:]

    # the hf policy / SFT export: the same episode as a Conversation with user turns
    view = resize_view(sample.image, (48, 64))
    conversation = Conversation.start(protocol, sample.target, view, CoordinateSpace.NORM1000)
    conversation.add_assistant(reply)
    conversation.add_user(text["text"], np.asarray(overlay["image"]))
    messages, _ = to_hf(conversation)
    inference = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rollout == inference
    pieces = [first, reply + "<|im_end|>", after[cut:]]
    assert sum((tokenizer(p)["input_ids"] for p in pieces), []) == tokenizer(inference)["input_ids"]
