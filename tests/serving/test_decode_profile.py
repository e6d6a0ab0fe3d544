"""The decode profile times every batch shape's first call before anything is profiled, passes the
tool's rows per call through, and with ``--contend`` times the same calls beside a thread of pure
Python (what the server's event loop costs its model thread)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sam2")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_profile.py"


@pytest.mark.slow
def test_profile_reports_first_calls_contention_and_calls_per_batch(tmp_path):
    out = tmp_path / "profile.json"
    command = [sys.executable, str(SCRIPT), "--images", "1", "--image-size", "96", "--batches", "1,2",
               "--repeats", "1", "--tool-max-batch", "1", "--contend", "0.3", "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    rows = {(row["structure"], row["rows"]): row for row in result["batches"]}
    assert set(rows) == {(s, n) for s in ("box", "box+click+logits") for n in (1, 2)}
    for row in rows.values():
        assert row["first_call_ms"] > 0 and row["batch_ms"] > 0 and row["contended_batch_ms"] > 0
    for structure in ("box", "box+click+logits"):  # one row per decoder call: two rows, twice the operators
        one, two = rows[structure, 1]["aten_calls"], rows[structure, 2]["aten_calls"]
        assert 1.8 * one <= two <= 2.2 * one
    assert "beside load" in run.stdout


def test_contention_share_is_checked():
    run = subprocess.run([sys.executable, str(SCRIPT), "--contend", "1.5"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "--contend is a share of the time in [0, 1), got 1.5" in run.stderr


def test_cuda_graphs_need_a_cuda_device():
    run = subprocess.run([sys.executable, str(SCRIPT), "--cuda-graphs"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--cuda-graphs needs --device cuda, got --device cpu" in run.stderr


@pytest.mark.slow
def test_graph_pass_times_every_batch_and_compares_answers(host_capture):
    """The ``--cuda-graphs`` pass, with the host stand-in for the capture (tests/graph_capture.py):
    every batch timed again through the graphs, one graph per batch shape, answers as eager."""
    import argparse

    import torch

    sys.path.insert(0, str(SCRIPT.parent))
    import decode_profile
    import rollout_server

    from medseg_agent.tools.graphs import GraphedForward
    from medseg_agent.tools.sam2 import build_sam2_tool

    torch.manual_seed(0)
    tool = build_sam2_tool(allow_random_weights=True, image_size=512)
    tool.decoder = GraphedForward(tool.decoder_forward, enabled=False, capture=host_capture)
    images = [rollout_server.make_image(i, 96) for i in range(2)]
    embeddings = [tool.encode(image) for image, _ in images]
    prompts = decode_profile.workload_prompts(tool, embeddings, [gt for _, gt in images], 2)
    args = argparse.Namespace(batch_sizes=[1, 2], repeats=1, contend=0.0, trace=None, device="cpu")
    result = decode_profile.graphs_against_eager(tool, prompts, args)
    assert {(row["structure"], row["rows"]) for row in result["batches"]} == {
        (s, n) for s in decode_profile.STRUCTURES for n in (1, 2)}
    assert result["graphs"] == 4 and result["eager_calls"] == 0
    assert not tool.decoder.enabled  # what the profile measures after this pass runs eagerly again
    assert result["agreement"] == {"rows": 4, "mask_pixels_differing_max_fraction": 0.0, "logits_abs_diff_max": 0.0}
