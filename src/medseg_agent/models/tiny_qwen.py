"""A small, randomly initialised Qwen-VL checkpoint built offline, for tests, smoke runs and the demo.

Tests of the ``hf`` policy, SFT and RL must exercise the exact code path of a real checkpoint
(``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained``) without downloading weights.
This writes such a checkpoint: a model from a small config, a byte-level BPE tokenizer trained in
memory on the protocol's own texts with the Qwen special tokens, the Qwen-VL image and video
processors and a chat template that supports tools. Untrained, its outputs are random text;
``medseg-agent train demo`` trains one from scratch (:mod:`medseg_agent.recipes.train_demo`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from medseg_agent.models.chat_template import QWEN_VL_TOOL_TEMPLATE

Arch = Literal["qwen3_vl", "qwen2_5_vl", "qwen2_vl"]
ARCHS: tuple[str, ...] = ("qwen3_vl", "qwen2_5_vl", "qwen2_vl")

# Control tokens of the Qwen2/2.5/3-VL tokenizers (special: dropped by skip_special_tokens).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Markup tokens that must survive decoding, as in the real tokenizers (added, not special).
MARKUP_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>")

# Vision tower: patch size and processor class per architecture.
_PATCH = {"qwen3_vl": 16, "qwen2_5_vl": 14, "qwen2_vl": 14}


def _corpus() -> Iterator[str]:
    """Texts the tokenizer learns merges from: our prompts, schemas and actions, plus numbers."""
    from medseg_agent.protocols import PROTOCOLS, tool_schemas
    from medseg_agent.vocabulary.actions import AddBox, AddPoint, CoordinateSpace, Stop

    for protocol_cls in PROTOCOLS.values():
        protocol = protocol_cls()
        for space in CoordinateSpace:
            yield protocol.system_prompt(space)
        yield protocol.first_user_text("left kidney in abdomen CT")
        yield protocol.followup_user_text("The mask now covers 3.2% of the image; 4 action(s) left.")
        for action in (AddBox(120, 80, 460, 390), AddPoint(300, 250, True), AddPoint(310, 260, False), Stop()):
            try:
                yield protocol.format_action(action, "The mask misses the lower part of the organ.")
            except ValueError:
                continue
    yield json.dumps(tool_schemas())
    yield " ".join(str(i) for i in range(1000))
    yield "The quick brown fox jumps over the lazy dog. Segment the tumor, liver, lesion, nucleus, cell."


def build_tokenizer(
    vocab_size: int = 600, *, texts: Iterable[str] = (), phrases: bool = False, whole_numbers: int = 0
) -> Any:
    """A byte-level BPE tokenizer with the Qwen special tokens, trained in memory (no download).

    ``texts`` are learnt from besides the protocol's texts (e.g. a dataset's target descriptions).
    ``phrases``: merges may span words (whole prompt phrases become single tokens, so the fixed
    system prompt costs ~100 tokens instead of ~600) while every digit stays one token, as in Qwen's
    tokenizers; coordinates are then written digit by digit.
    ``whole_numbers`` (N > 0): every integer 0..N is one token instead (as 0..999 are in Llama 3's
    tokenizer), so a coordinate is one choice among N + 1 rather than a chain of digits whose
    meaning depends on their count and place. Alone this learns slower than digits (neighbouring
    values share nothing); see ``sinusoidal_positions`` of :func:`build_tiny_qwen_vl`.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    if phrases:
        core.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        max_token_length=48 if phrases else None,
    )
    core.train_from_iterator([*_corpus(), *texts], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=32768,
    )
    tokenizer.add_tokens(list(MARKUP_TOKENS), special_tokens=False)
    if whole_numbers > 0:
        tokenizer.add_tokens([str(value) for value in range(whole_numbers + 1)], special_tokens=False)
    tokenizer.chat_template = QWEN_VL_TOOL_TEMPLATE
    return tokenizer


def _model_config(
    arch: str,
    vocab_size: int,
    token_ids: dict[str, int],
    hidden_size: int,
    layers: int,
    mlp_ratio: int,
    vision: dict[str, int],
    patch: int,
) -> Any:
    heads = 4
    head_dim = hidden_size // heads
    # Multimodal RoPE splits half the head dimension over (time, height, width).
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * mlp_ratio,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
    }
    ids = {
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
    }
    if arch == "qwen3_vl":
        from transformers import Qwen3VLConfig

        text["head_dim"] = head_dim
        text["rope_parameters"]["mrope_interleaved"] = True
        tower = {
            "depth": vision["depth"],
            "hidden_size": vision["hidden_size"],
            "intermediate_size": vision["hidden_size"] * 2,
            "num_heads": vision["heads"],
            "patch_size": patch,
            "out_hidden_size": hidden_size,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [vision["depth"] - 1],
        }
        return Qwen3VLConfig(text_config=text, vision_config=tower, **ids)
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        tower = {
            "depth": vision["depth"],
            "hidden_size": vision["hidden_size"],
            "intermediate_size": vision["hidden_size"] * 2,
            "num_heads": vision["heads"],
            "patch_size": patch,
            "out_hidden_size": hidden_size,
            "window_size": 112,
            "fullatt_block_indexes": [vision["depth"] - 1],
        }
        return Qwen2_5_VLConfig(text_config=text, vision_config=tower, **ids)
    from transformers import Qwen2VLConfig

    tower = {
        "depth": vision["depth"],
        "embed_dim": vision["hidden_size"],
        "hidden_size": hidden_size,
        "num_heads": vision["heads"],
        "patch_size": patch,
    }
    return Qwen2VLConfig(text_config=text, vision_config=tower, **ids)


def _processor(arch: str, tokenizer: Any, max_pixels: int, template: str, patch: int) -> Any:
    from transformers import Qwen2VLImageProcessor

    size = {"shortest_edge": (patch * 2) ** 2, "longest_edge": max_pixels}
    image_processor = Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
    if arch == "qwen3_vl":
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        video = Qwen3VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
        return Qwen3VLProcessor(image_processor, tokenizer, video, chat_template=template)
    from transformers import Qwen2VLVideoProcessor

    video = Qwen2VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor

        return Qwen2_5_VLProcessor(image_processor, tokenizer, video, chat_template=template)
    from transformers import Qwen2VLProcessor

    return Qwen2VLProcessor(image_processor, tokenizer, video, chat_template=template)


def sinusoids(positions: Any, dim: int) -> Any:
    """``dim`` features (sin, cos pairs) of ``positions`` in [0, 1], periods from 2 down to ~1/100:
    the coarse ones tell far apart, the fine ones tell neighbours apart."""
    import torch

    pairs = dim // 2
    frequencies = 0.5 * 200.0 ** (torch.arange(pairs, dtype=torch.float32) / max(1, pairs - 1))
    angles = 2 * torch.pi * positions.float()[:, None] * frequencies[None, :]
    features = torch.zeros(len(positions), dim)
    features[:, 0 : 2 * pairs : 2], features[:, 1 : 2 * pairs : 2] = torch.sin(angles), torch.cos(angles)
    return features


def _sinusoidal_init(model: Any, tokenizer: Any, whole_numbers: int, vision_width: int) -> None:
    """Number tokens 0..N and the vision position grid as sinusoids, at the model's init scale."""
    import torch

    scale = 0.02 * 2**0.5  # the Qwen-VL configs' initializer_range; a sinusoid's RMS is 1 / sqrt(2)
    ids = torch.tensor(tokenizer.convert_tokens_to_ids([str(v) for v in range(whole_numbers + 1)]))
    values = torch.arange(whole_numbers + 1) / whole_numbers
    # the frequencies of one axis of the vision grid, repeated over the text width
    axis = vision_width // 2
    numbers = scale * sinusoids(values, axis)
    with torch.no_grad():
        for table in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            table[ids] = numbers.repeat(1, -(-table.shape[1] // axis))[:, : table.shape[1]]
        grid = getattr(model.model.visual, "pos_embed", None)  # Qwen3-VL: a side x side table, row-major
        if grid is not None:
            side, width = model.model.visual.num_grid_per_side, grid.weight.shape[1]
            centres = (torch.arange(side) + 0.5) / side
            rows, cols = sinusoids(centres, axis), sinusoids(centres, width - axis)
            table = torch.cat([cols[None, :, :].expand(side, -1, -1), rows[:, None, :].expand(-1, side, -1)], -1)
            grid.weight.copy_(scale * table.reshape(side * side, width))


def build_tiny_qwen_vl(
    out_dir: str | Path,
    arch: Arch = "qwen3_vl",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 600,
    max_pixels: int = 256 * 256,
    seed: int = 0,
    mlp_ratio: int = 2,
    vision_depth: int = 2,
    vision_hidden_size: int = 32,
    tokenizer_texts: Iterable[str] = (),
    phrase_tokens: bool = False,
    chat_template: str = QWEN_VL_TOOL_TEMPLATE,
    patch_size: int | None = None,
    whole_numbers: int = 0,
    sinusoidal_positions: bool = False,
) -> Path:
    """Write a small random Qwen-VL checkpoint (model, tokenizer, processor, chat template) to ``out_dir``.

    It loads with ``AutoProcessor.from_pretrained(out_dir)`` and
    ``AutoModelForImageTextToText.from_pretrained(out_dir)`` like a real checkpoint. ``max_pixels``
    caps the image size the processor feeds the vision tower (few image tokens keep CPU runs fast).
    The same ``seed`` gives the same weights. ``tokenizer_texts`` and ``phrase_tokens`` go to
    :func:`build_tokenizer`; ``chat_template`` is the template text (see
    :func:`medseg_agent.models.chat_template.qwen_vl_tool_template`). ``patch_size`` (default: the
    architecture's own, 16 for Qwen3-VL and 14 before) sets the vision patch; with the 2x2 merge an
    image of side S gives (S / (2 * patch))² image tokens.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown tiny Qwen-VL architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if hidden_size % 8:
        raise ValueError(f"hidden_size must be a multiple of 8 (4 heads, even head size), got {hidden_size}")
    if vision_hidden_size % 32:
        raise ValueError(f"vision_hidden_size must be a multiple of 32 (heads of 16), got {vision_hidden_size}")
    patch = _PATCH[arch] if patch_size is None else patch_size
    if patch < 2:
        raise ValueError(f"patch_size must be at least 2 pixels, got {patch}")
    import torch
    from transformers import AutoModelForImageTextToText

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if sinusoidal_positions and not whole_numbers:
        raise ValueError("sinusoidal_positions needs whole_numbers (one token per coordinate value)")
    tokenizer = build_tokenizer(vocab_size, texts=tokenizer_texts, phrases=phrase_tokens, whole_numbers=whole_numbers)
    tokenizer.chat_template = chat_template
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vision = {"depth": vision_depth, "hidden_size": vision_hidden_size, "heads": vision_hidden_size // 16}
    config = _model_config(arch, len(tokenizer), token_ids, hidden_size, num_layers, mlp_ratio, vision, patch)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    if sinusoidal_positions:
        _sinusoidal_init(model, tokenizer, whole_numbers, vision_hidden_size)
    model.generation_config.eos_token_id = [token_ids["<|im_end|>"], token_ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = token_ids["<|endoftext|>"]
    model.save_pretrained(out)
    _processor(arch, tokenizer, max_pixels, chat_template, patch).save_pretrained(out)
    return out
