"""The tiny Qwen-VL checkpoint loads through the same from_pretrained path as a real one."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@functools.cache
def number_tokenizer():
    from medseg_agent.models.tiny_qwen import build_tokenizer

    return build_tokenizer(2000, phrases=True, whole_numbers=1000)


@given(st.lists(st.integers(0, 999), min_size=2, max_size=2, unique=True),
       st.lists(st.integers(0, 999), min_size=2, max_size=2, unique=True))
@settings(max_examples=40, deadline=None)
def test_whole_numbers_make_every_coordinate_one_token(xs, ys):
    """A 0-1000 box is four number tokens, and the text round-trips to the same action."""
    from medseg_agent.vocabulary.actions import AddBox
    from medseg_agent.vocabulary.coordinates import CoordinateFrame

    protocol, tokenizer = get_protocol("medsam"), number_tokenizer()
    box = [min(xs), min(ys), max(xs), max(ys)]
    action = AddBox(*box)
    text = protocol.format_action(action)
    ids = tokenizer(text)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert [t for t in tokens if t.isdigit() and t != "2"] == [str(v) for v in box if v != 2]  # "2" of bbox_2d
    assert tokens.count("2") == 1 + box.count(2)
    decoded = tokenizer.decode(ids)
    assert decoded == text
    frame = CoordinateFrame(CoordinateSpace.NORM1000, (100, 100), (100, 100))
    assert protocol.parse(decoded, frame).action == action


def test_digit_tokenizer_spells_numbers_out_and_bigger_numbers_split():
    from medseg_agent.models.tiny_qwen import build_tokenizer

    numbers = number_tokenizer()
    digits = build_tokenizer(2000, phrases=True)
    assert digits.tokenize("[613, 1000]") == ["[", "6", "1", "3", ",Ġ", "1", "0", "0", "0", "]"]
    assert numbers.tokenize("[613, 1000]") == ["[", "613", ",Ġ", "1000", "]"]
    assert numbers.tokenize("12345") == ["123", "45"]  # past N: whole tokens, leftmost longest
    assert numbers.decode(numbers("x 12345 3.25%")["input_ids"]) == "x 12345 3.25%"


def test_sinusoidal_positions_put_image_columns_next_to_their_coordinate_tokens(tmp_path):
    """The vision grid's x features, matched against the number tokens' embeddings, point at the
    grid cell's own 0-1000 coordinate; nearby values have nearby embeddings."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    path = build_tiny_qwen_vl(tmp_path / "m", max_pixels=64 * 64, vision_hidden_size=64, whole_numbers=1000,
                              sinusoidal_positions=True, phrase_tokens=True, vocab_size=2000)
    model = AutoModelForImageTextToText.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer.convert_tokens_to_ids([str(v) for v in range(1001)])
    axis = 32  # half the vision width: the x features
    for table in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        numbers = table[ids].detach()
        similarity = numbers @ numbers.T
        assert torch.equal(similarity.argmax(1), torch.arange(1001))
        assert similarity[500, 501] > similarity[500, 520] > similarity[500, 900]
    grid = model.model.visual.pos_embed.weight.detach()
    side = model.model.visual.num_grid_per_side
    cells = grid.reshape(side, side, -1)
    assert torch.allclose(cells[0, :, :axis], cells[side - 1, :, :axis])  # x features: the same down a column
    assert torch.allclose(cells[:, 0, axis:], cells[:, side - 1, axis:])  # y features: the same along a row
    numbers = model.get_output_embeddings().weight[ids].detach()[:, :axis]
    for column in range(side):
        pointed = int((cells[3, column, :axis] @ numbers.T).argmax())
        assert abs(pointed - (column + 0.5) / side * 1000) <= 1000 / side / 2
    random_init = AutoModelForImageTextToText.from_pretrained(
        build_tiny_qwen_vl(tmp_path / "r", max_pixels=64 * 64, whole_numbers=1000, phrase_tokens=True))
    random_grid = random_init.model.visual.pos_embed.weight.detach().reshape(side, side, -1)
    assert not torch.allclose(random_grid[0, :, :axis], random_grid[1, :, :axis])  # left random without the option
    with pytest.raises(ValueError, match="sinusoidal_positions needs whole_numbers"):
        build_tiny_qwen_vl(tmp_path / "bad", sinusoidal_positions=True)
