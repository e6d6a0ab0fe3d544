"""The hf policy end to end on CPU with a tiny random Qwen-VL built locally (no download)."""

from __future__ import annotations

import pytest

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import final_mask, load_record, save_record
from medseg_agent.models.checkpoint import CheckpointError
from medseg_agent.models.tiny_qwen import build_tiny_qwen_vl
from medseg_agent.policies.registry import build_policy
from medseg_agent.policies.runner import run_episode
from medseg_agent.vocabulary.stop import StopReason

pytestmark = pytest.mark.slow  # imports transformers, generates on CPU


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return build_tiny_qwen_vl(tmp_path_factory.mktemp("tiny") / "qwen3_vl", "qwen3_vl", max_pixels=64 * 64)


def test_random_model_runs_an_episode_to_a_clean_record(tiny_checkpoint, shape_tool, disc, tmp_path):
    policy = build_policy("hf", model_path=str(tiny_checkpoint), max_new_tokens=12, device="cpu")
    assert policy.device == "cpu" and str(policy.dtype) == "torch.float32"
    env = SegmentationEnv(shape_tool, EpisodeConfig(view_longest_side=64, max_consecutive_errors=2))
    record = run_episode(env, policy, disc)

    assert any(t.raw_text for t in record.turns)  # the model wrote something
    # Random weights write garbage: every reply becomes an error observation, and the episode ends.
    assert record.stop_reason is StopReason.TOO_MANY_ERRORS and record.num_errors == len(record.turns) == 2
    assert all(t.error and t.action is None and t.policy_seconds > 0 for t in record.turns)
    assert not final_mask(record).any() and record.final_metrics["iou"] == 0.0
    assert load_record(save_record(record, tmp_path / "r.json")).turns[0].raw_text == record.turns[0].raw_text
    # The model saw the error text after its invalid reply, and no second image.
    prompt = policy.prompt_text(policy.conversation)
    assert prompt.count("<|image_pad|>") == 1 and "could not be executed" in prompt
    assert prompt.count("<|im_start|>assistant\n") == 3  # two replies + the generation prompt


def test_native_tools_go_through_the_chat_template(tiny_checkpoint, shape_tool, disc, tmp_path):
    policy = build_policy("hf", model_path=str(tiny_checkpoint), native_tools=True, max_new_tokens=2)
    env = SegmentationEnv(shape_tool, EpisodeConfig(view_longest_side=64, max_consecutive_errors=1))
    run_episode(env, policy, disc)
    prompt = policy.prompt_text(policy.conversation)
    assert prompt.count('"name": "add_bbox"') == 1 and "# Tools" in prompt  # listed once, by the template

    env = SegmentationEnv(shape_tool, EpisodeConfig(view_longest_side=64, protocol="ibis"))
    with pytest.raises(ValueError, match="only the medsam protocol parses"):
        run_episode(env, policy, disc)

    ignores_tools = tmp_path / "plain.jinja"
    ignores_tools.write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content if m.content is string else '' }}"
        "<|im_end|>\n{% endfor %}"
    )
    with pytest.raises(ValueError, match="ignores tools="):
        build_policy("hf", model_path=str(tiny_checkpoint), native_tools=True, chat_template=str(ignores_tools))


def test_sampling_is_reproducible_per_seed(tiny_checkpoint, shape_tool, disc):
    texts = []
    for _ in range(2):
        policy = build_policy("hf", model_path=str(tiny_checkpoint), do_sample=True, max_new_tokens=6)
        env = SegmentationEnv(shape_tool, EpisodeConfig(view_longest_side=64, max_consecutive_errors=1))
        texts.append(run_episode(env, policy, disc, seed=5).turns[0].raw_text)
    assert texts[0] == texts[1]


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="hf policy: checkpoint folder .*nowhere does not exist"):
        build_policy("hf", model_path=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        build_policy("hf", model_path=str(tmp_path), dtype="int3")
