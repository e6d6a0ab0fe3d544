"""The tiny Qwen-VL checkpoint loads through the same from_pretrained path as a real one."""

from __future__ import annotations

import numpy as np
import pytest

from medseg_agent.models.tiny_qwen import ARCHS, MARKUP_TOKENS, SPECIAL_TOKENS, build_tiny_qwen_vl
from medseg_agent.protocols import get_protocol, tool_schemas
from medseg_agent.protocols.conversation import Conversation, to_hf
from medseg_agent.vocabulary.actions import CoordinateSpace

pytestmark = pytest.mark.slow  # imports transformers and builds models


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_loads_and_generates(tmp_path, arch):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    path = build_tiny_qwen_vl(tmp_path / arch, arch, max_pixels=64 * 64)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert model.config.model_type == arch
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == model.config.vision_start_token_id
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)

    protocol = get_protocol("medsam")
    image = np.full((96, 128, 3), 90, np.uint8)
    conversation = Conversation.start(protocol, "liver", image, CoordinateSpace.NORM1000)
    conversation.add_assistant(protocol.format_action(protocol_box()))
    conversation.add_user("Here is the mask.", image)
    messages, images = to_hf(conversation)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert text.endswith("<|im_start|>assistant\n")
    inputs = processor(text=[text], images=[Image.fromarray(i) for i in images], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def protocol_box():
    from medseg_agent.vocabulary.actions import AddBox

    return AddBox(100, 200, 300, 400)


def test_tokenizer_keeps_markup_and_drops_control_tokens(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_qwen_vl(tmp_path / "m", max_pixels=64 * 64))
    text = '<think>\nok\n</think>\n<tool_call>\n{"name": "stop_action", "arguments": {}}\n</tool_call><|im_end|>'
    ids = tokenizer(text)["input_ids"]
    for token in (*MARKUP_TOKENS[:2], "<think>", "<|im_end|>"):
        assert tokenizer.convert_tokens_to_ids(token) in ids  # single tokens, as in Qwen
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded == text.removesuffix("<|im_end|>")
    assert set(SPECIAL_TOKENS) <= set(tokenizer.get_vocab())


def test_chat_template_renders_tools_and_tool_turns(tmp_path):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(build_tiny_qwen_vl(tmp_path / "m", max_pixels=64 * 64))
    messages = [
        {"role": "system", "content": "You segment."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "liver"}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "add_bbox", "arguments": {"bbox_2d": [1, 2, 3, 4]}}}]},
        {"role": "tool", "content": "done"},
    ]
    text = processor.apply_chat_template(messages, tools=tool_schemas(), tokenize=False)
    assert text.startswith("<|im_start|>system\nYou segment.\n\n# Tools\n")
    assert text.count('"name": "add_bbox"') == 2  # the schema and the call
    assert '<tool_call>\n{"name": "add_bbox", "arguments": {"bbox_2d": [1, 2, 3, 4]}}\n</tool_call><|im_end|>' in text
    assert "<|im_start|>user\n<tool_response>\ndone\n</tool_response><|im_end|>" in text
    no_tools = processor.apply_chat_template(messages[:2], tokenize=False)
    assert "# Tools" not in no_tools and no_tools.startswith("<|im_start|>system\nYou segment.<|im_end|>")


def test_same_seed_same_weights_and_bad_arch(tmp_path):
    from safetensors.numpy import load_file

    a = load_file(build_tiny_qwen_vl(tmp_path / "a", seed=1, max_pixels=64 * 64) / "model.safetensors")
    b = load_file(build_tiny_qwen_vl(tmp_path / "b", seed=1, max_pixels=64 * 64) / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="unknown tiny Qwen-VL architecture 'llava'"):
        build_tiny_qwen_vl(tmp_path / "c", "llava")


def test_patch_size_sets_the_image_tokens(tmp_path):
    """Patch 8 instead of Qwen3-VL's 16 gives 4x the image tokens for the same view."""
    from PIL import Image
    from transformers import AutoProcessor

    image = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    counts = {}
    for patch in (16, 8):
        folder = build_tiny_qwen_vl(tmp_path / str(patch), max_pixels=64 * 64, patch_size=patch)
        processor = AutoProcessor.from_pretrained(folder)
        grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
        counts[patch] = grid[0] * grid[1] * grid[2] // 4  # 2x2 merge
    assert counts == {16: 4, 8: 16}
    with pytest.raises(ValueError, match="patch_size must be at least 2"):
        build_tiny_qwen_vl(tmp_path / "bad", patch_size=1)
