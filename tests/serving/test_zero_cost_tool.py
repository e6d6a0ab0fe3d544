"""The benchmark's zero-cost test double (benchmarks/zero_cost_tool.py): what it answers is exact, the
same wherever the runs are found, and its noisy mask looks like the random-weight checkpoint's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from medseg_agent.io.masks import decode_rle, run_boundaries
from medseg_agent.vocabulary.prompts import Prompt

_SPEC = importlib.util.spec_from_file_location(
    "zero_cost_tool", Path(__file__).resolve().parents[2] / "benchmarks" / "zero_cost_tool.py")
zero_cost_tool = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(zero_cost_tool)


@pytest.mark.parametrize("kind", ["ellipse", "noisy"])
def test_device_and_host_runs_give_the_mask_exactly(kind):
    image = np.zeros((200, 300, 3), np.uint8)
    prompt = Prompt(box=(10.0, 10.0, 50.0, 60.0))
    answers = []
    for runs in ("device", "host"):
        tool = zero_cost_tool.build_zero_cost_tool(mask_runs=runs, mask=kind)
        embedding = tool.encode(image)
        answers.append(tool.decode_encoded([(embedding, prompt), (embedding, prompt)]))
    expected = zero_cost_tool.MASKS[kind](200, 300)
    for answer in (*answers[0], *answers[1]):
        assert np.array_equal(decode_rle(answer.rle), expected)
        assert answer.area == int(expected.sum())


def test_the_noisy_mask_has_the_random_weight_masks_statistics():
    tool = zero_cost_tool.build_zero_cost_tool(mask="noisy")
    embedding = tool.encode(np.zeros((1024, 1024), np.uint8))
    answer = tool.decode_encoded([(embedding, Prompt(points=[(5.0, 5.0)], labels=[1]))])[0]
    mask = decode_rle(answer.rle)
    assert 0.90 < mask.mean() < 0.95  # the random-weight masks: 93 % of the image
    assert 25_000 < len(run_boundaries(mask)) < 45_000  # theirs: a median of 32,124 runs
    assert len(answer.rle["counts"]) > 30_000  # tens of kB per answer, against under 1 kB for the ellipse


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="mask must be one of"):
        zero_cost_tool.build_zero_cost_tool(mask="blob")
    with pytest.raises(ValueError, match="takes only mask_runs, mask and launch_ms"):
        zero_cost_tool.build_zero_cost_tool(size=3)
    with pytest.raises(ValueError, match="launch_ms must be >= 0"):
        zero_cost_tool.build_zero_cost_tool(launch_ms=-1)


@pytest.mark.parametrize("runs", ["device", "host"])
def test_launch_ms_holds_the_interpreter_once_per_decoder_call(runs):
    """Like a launch-bound forward: the time is per call, not per row."""
    import time

    tool = zero_cost_tool.build_zero_cost_tool(mask_runs=runs, launch_ms=50)
    embedding = tool.encode(np.zeros((64, 64), np.uint8))
    start = time.perf_counter()
    answers = tool.decode_encoded([(embedding, Prompt(box=(1.0, 1.0, 30.0, 30.0)))] * 8)
    assert time.perf_counter() - start >= 0.05 and tool.launches == 1 and len(answers) == 8
    assert answers[0].logits is not answers[1].logits  # every row its own logits, as a real model's
