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
