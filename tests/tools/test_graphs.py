"""Decoder forwards replayed from captured graphs (``tools/graphs.py``).

A CUDA graph cannot be captured on this CPU-only machine, so most tests capture with the
``host_capture`` fixture (``tests/graph_capture.py``), a stand-in with a graph's buffer semantics. What a real
capture would refuse, an operator that waits for the host, is checked on the host with the
``host_waits`` fixture. The last test captures real CUDA graphs where a GPU is.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from medseg_agent.tools.graphs import GraphedForward, replay_agrees, resolve_cuda_graphs, shape_key
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.prompts import Prompt


def affine(inputs, *, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    x, bias = inputs
    y = x * scale
    if bias is not None:
        y = y + bias
    return y, y.sum(dim=-1)


@pytest.fixture
def graphed(host_capture):
    def make(**options: Any) -> GraphedForward:
        return GraphedForward(affine, enabled=True, capture=host_capture, **options)

    return make


def test_replays_answer_each_call_from_its_own_inputs_and_keep_earlier_answers(graphed):
    """Every call copies its inputs into the graph's buffers and gets copies of the outputs: an
    answer kept from an earlier call is not overwritten by the next replay of the same graph."""
    runner = graphed()
    first = runner((torch.ones(2, 3), torch.zeros(3)), scale=2.0)
    second = runner((torch.full((2, 3), 5.0), torch.ones(3)), scale=2.0)
    assert torch.equal(first[0], torch.full((2, 3), 2.0)) and torch.equal(first[1], torch.full((2,), 6.0))
    assert torch.equal(second[0], torch.full((2, 3), 11.0)) and torch.equal(second[1], torch.full((2,), 33.0))
    assert runner.graphs == 1 and runner.replays == 2 and runner.eager_calls == 0
    assert runner.stats() == {"decoder_graphs": 1, "decoder_graph_replays": 2, "decoder_graph_eager_calls": 0,
                              "decoder_graphs_rejected": 0}


def test_one_graph_per_shape_dtype_and_static_argument(graphed):
    runner = graphed()
    calls = [
        ((torch.ones(2, 3), None), 1.0),
        ((torch.ones(4, 3), None), 1.0),          # another row count
        ((torch.ones(2, 3), torch.ones(3)), 1.0),  # an input present
        ((torch.ones(2, 3, dtype=torch.float64), None), 1.0),
        ((torch.ones(2, 3), None), 3.0),          # another static argument
    ]
    for inputs, scale in calls * 2:
        expected = affine(inputs, scale=scale)
        for got, want in zip(runner(inputs, scale=scale), expected, strict=True):
            assert torch.equal(got, want)
    assert runner.graphs == len(calls) and runner.replays == 2 * len(calls)
    # input buffers are shared by graphs whose inputs have the same shapes (the last call only
    # changes a static argument): 4 distinct inputs of 24, 48, 12 and 48 bytes
    assert runner.buffer_bytes == 4 * (6 + 12 + 3) + 8 * 6


def test_strides_do_not_make_a_new_graph(graphed):
    """A broadcast (stride-0) embedding and a dense one of the same shape share a graph: the call's
    inputs are copied into the graph's own buffers whatever their layout."""
    runner = graphed()
    dense = torch.arange(6.0).reshape(2, 3)
    broadcast = torch.arange(3.0)[None].expand(2, 3)
    assert shape_key((dense, None), {}) == shape_key((broadcast, None), {})
    runner((dense, None), scale=1.0)
    assert torch.equal(runner((broadcast, None), scale=1.0)[0], broadcast)
    assert runner.graphs == 1


def test_a_shape_that_cannot_be_captured_runs_eagerly_with_one_warning():
    attempts = []

    def refuse(forward, inputs, static, pool):
        attempts.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    runner = GraphedForward(affine, enabled=True, capture=refuse)
    inputs = (torch.ones(2, 3), None)
    with pytest.warns(RuntimeWarning, match=r"cannot be captured in a CUDA graph.*not permitted"):
        out = runner(inputs, scale=2.0)
    assert torch.equal(out[0], torch.full((2, 3), 2.0))
    again = runner(inputs, scale=2.0)  # no second attempt, no second warning
    assert torch.equal(again[0], out[0])
    assert len(attempts) == 1 and runner.graphs == 0 and runner.eager_calls == 2


def test_a_graph_whose_first_replay_differs_from_eager_is_dropped(host_capture):
    """A graph that reads memory it does not own (here: a replay that answers from a zeroed buffer)
    gives the caller the eager answer, one warning, and that shape runs eagerly from then on."""

    def misread(forward, inputs, static, pool):
        replay, outputs, pool = host_capture(forward, inputs, static, pool)

        def wrong() -> None:
            replay()
            for output in outputs:
                output.zero_()

        return wrong, outputs, pool

    runner = GraphedForward(affine, enabled=True, capture=misread)
    inputs = (torch.ones(2, 3), torch.ones(3))
    with pytest.warns(RuntimeWarning, match=r"first replay differs from the eager answer"):
        out = runner(inputs, scale=2.0)
    assert torch.equal(out[0], torch.full((2, 3), 3.0))
    again = runner(inputs, scale=2.0)
    assert torch.equal(again[0], out[0])
    assert runner.stats() == {"decoder_graphs": 0, "decoder_graph_replays": 0, "decoder_graph_eager_calls": 2,
                              "decoder_graphs_rejected": 1}
    with pytest.warns(RuntimeWarning, match=r"first replay differs"):  # another shape is still tried
        other = runner((torch.ones(4, 3), None), scale=1.0)
    assert torch.equal(other[0], torch.ones(4, 3)) and runner.rejected == 2


def test_a_replay_agrees_with_rounding_not_with_another_answer():
    logits = torch.linspace(-20, 20, 4000).reshape(4, 1000)
    rounded = logits.to(torch.bfloat16).float()  # every value rounded to bf16
    few_off = logits.clone()
    few_off[0, :3] += 1.0  # 3 of 4,000 values (kernels that accumulate in another order)
    assert replay_agrees((rounded, torch.ones(4)), (logits, torch.ones(4)))
    assert replay_agrees((few_off,), (logits,))
    many_off = logits.clone()
    many_off[0] += 1.0  # a whole row: another call's row, or a stale buffer
    assert not replay_agrees((many_off,), (logits,))
    assert not replay_agrees((torch.zeros_like(logits),), (logits,))
    assert not replay_agrees((logits > 0,), (logits > 0.5,))  # booleans must be equal
    assert not replay_agrees((logits[:2],), (logits,))
    assert not replay_agrees((logits.double(),), (logits,))
    assert not replay_agrees((logits,), (logits, logits))
    assert replay_agrees((torch.full((2,), float("nan")),), (torch.full((2,), float("nan")),))


def test_graphs_are_bounded_and_the_pool_is_shared(host_capture):
    pools = []

    def record_pool(forward, inputs, static, pool):
        pools.append(pool)
        return host_capture(forward, inputs, static, pool)

    runner = GraphedForward(affine, enabled=True, capture=record_pool, max_graphs=2)
    for rows in (1, 2, 4, 4):
        out = runner((torch.ones(rows, 3), None), scale=1.0)
        assert torch.equal(out[0], torch.ones(rows, 3))
    assert runner.graphs == 2 and runner.replays == 2 and runner.eager_calls == 2  # past the bound: eager
    assert pools == [None, "host-pool"]  # the first capture's pool is handed to the next


def test_off_runs_the_forward_as_it_is(host_capture):
    runner = GraphedForward(affine, enabled=False, capture=host_capture)
    out = runner((torch.ones(2, 3), None), scale=2.0)
    assert torch.equal(out[0], torch.full((2, 3), 2.0))
    assert runner.graphs == 0 and runner.replays == 0 and runner.stats() == {}  # nothing to report when off


def test_concurrent_callers_of_one_graph_each_get_their_own_answer(host_capture):
    """The buffers of a shape are shared; the server's threads must not interleave copy-in, replay
    and copy-out."""

    def slow(inputs, *, scale):
        (x,) = inputs
        total = x.clone()
        for _ in range(20):  # many small operators: a thread switch can fall between them
            total = total + x * 0
        return (total * scale,)

    runner = GraphedForward(slow, enabled=True, capture=host_capture)
    results: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        for _ in range(25):
            results[i] = runner((torch.full((4, 64), float(i)),), scale=1.0)[0]
            assert torch.equal(results[i], torch.full((4, 64), float(i)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2, 3] and runner.graphs == 1
    assert all(torch.equal(results[i], torch.full((4, 64), float(i))) for i in results)


def test_cuda_graphs_need_a_cuda_device():
    assert resolve_cuda_graphs(None, torch.device("cpu")) is False
    assert resolve_cuda_graphs(None, torch.device("cuda")) is False  # off until measured on a GPU
    assert resolve_cuda_graphs(True, torch.device("cuda")) is True
    with pytest.raises(ToolError, match="cuda_graphs needs a CUDA device; this tool runs on cpu"):
        resolve_cuda_graphs(True, torch.device("cpu"))


# -- the SAM 2 tool's decoder through the graphs ------------------------------------------------
pytest.importorskip("sam2")

from medseg_agent.tools.sam2 import Sam2Tool, build_sam2_tool  # noqa: E402  (after the importorskip guard)


def disc(h: int, w: int, cx: int, cy: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    gray = np.where((xx - cx) ** 2 + (yy - cy) ** 2 <= 30**2, 200, 40).astype(np.uint8)
    return np.stack([gray] * 3, axis=2)


def rollout_requests(tool: Sam2Tool, embeddings) -> list:
    """A rollout turn's mix: boxes on every image, then box + click + previous logits rows."""
    requests = [(e, Prompt(box=np.array([40.0 + i, 30.0, 120.0, 110.0 + i], np.float32)))
                for i, e in enumerate(embeddings)]
    seeds = tool.decode_many(requests)
    requests += [(e, Prompt(box=np.array([40.0, 30.0, 120.0, 110.0], np.float32), points=[[70.0 + i, 60.0]],
                            labels=[i % 2], mask_input=s.logits))
                 for i, (e, s) in enumerate(zip(embeddings, seeds, strict=True))]
    return requests


@pytest.fixture(scope="module")
def small_sam2() -> Sam2Tool:
    torch.manual_seed(0)
    return build_sam2_tool(allow_random_weights=True, image_size=512)


@pytest.mark.slow
def test_sam2_answers_are_the_same_through_graphs(small_sam2, host_capture):
    """Rows of several images and prompt structures, bucketed as on a GPU: replayed graphs give the
    eager decoder's masks and logits, one graph per (rows, structure, image sharing) shape."""
    tool = small_sam2
    embeddings = [tool.encode(disc(160, 192, 70 + 10 * i, 70)) for i in range(3)]
    calls = [rollout_requests(tool, embeddings),
             [(embeddings[0], Prompt(box=np.array([50.0 + i, 40.0, 110.0, 100.0], np.float32))) for i in range(2)]]
    calls += [list(reversed(requests)) for requests in calls]  # the same shapes, other rows in each place
    tool.bucket_batches = True
    eager = [tool.decode_encoded(requests) for requests in calls]
    tool.decoder = GraphedForward(tool.decoder_forward, enabled=True, capture=host_capture)
    for requests, expected in zip(calls, eager, strict=True):
        replayed = tool.decode_encoded(requests)
        for a, b in zip(expected, replayed, strict=True):
            assert a.rle == b.rle and a.score == pytest.approx(b.score, abs=1e-6)
            np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
    # box rows of 3 images -> 4 rows; box + click + logits rows -> 4 rows; two boxes on one image
    # (its embedding repeated inside the decoder) -> 2 rows: three shapes, captured once each.
    assert tool.decoder.graphs == 3 and tool.decoder.replays == 6 and tool.decoder.eager_calls == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures real CUDA graphs")
def test_sam2_cuda_graphs_match_eager_on_a_gpu():
    torch.manual_seed(0)
    tool = build_sam2_tool(allow_random_weights=True, device="cuda")
    embeddings = [tool.encode(disc(512, 512, 200 + 40 * i, 250)) for i in range(3)]
    requests = rollout_requests(tool, embeddings)
    eager = tool.decode_encoded(requests)
    tool.decoder = GraphedForward(tool.decoder_forward, enabled=True)
    replayed = tool.decode_encoded(requests)
    assert tool.decoder.graphs >= 2 and tool.decoder.eager_calls == 0
    for a, b in zip(eager, replayed, strict=True):
        assert abs(a.area - b.area) <= 1e-3 * 512 * 512
        np.testing.assert_allclose(a.logits, b.logits, rtol=2e-2, atol=5e-2)  # bf16: cuBLAS may pick other kernels


@pytest.mark.parametrize("option", ["cuda_graphs", "bucket_batches"])
def test_switches_of_the_sam_tools_take_true_or_false_only(option):
    """--tool-option cuda_graphs=off reaches the tool as the text 'off', which bool() reads as on."""
    with pytest.raises(ToolError, match=rf"{option} must be true or false, got 'off'"):
        build_sam2_tool(allow_random_weights=True, **{option: "off"})
