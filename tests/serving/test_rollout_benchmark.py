"""The rollout benchmark runs end to end (a tiny workload with the classic tool) and its counts prove
what the server saves: one encode per image, against one per action for the reference behaviour.
Its sessions run from several client processes, and every process's actions are counted; a warm-up
round (on other images) is left out of every count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rollout_server.py"


@pytest.mark.slow
def test_benchmark_counts_encodes_per_side_and_resumes(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPT), "--tool", "classic", "--images", "2", "--sessions", "3", "--actions", "2",
               "--image-size", "64", "--reference-actions", "1", "--client-processes", "2", "--warmup-rounds", "1",
               "--out", str(out)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    sides = json.loads(out.read_text())["sides"]
    assert (sides["server"]["encodes"], sides["server"]["decodes"], sides["server"]["actions"]) == (2, 12, 12)
    assert (sides["ideal"]["encodes"], sides["ideal"]["decodes"]) == (2, 12)
    reference = sides["reimplemented"]
    assert reference["encodes"] == reference["actions"] == 6 and reference["extrapolated"]
    expected = reference["create_wall_s"] + 2 * reference["action_wall_s"]  # the action phase scales
    assert reference["extrapolated_wall_s"] == pytest.approx(expected, rel=0.01)
    server = sides["server"]
    assert server["server_cpu_ms_per_action"] > 0 and server["client_cpu_ms_per_action"] > 0
    assert server["server_time_ms_per_action"] > 0 and server["decode_batches"] >= 1
    # the model thread's time in decode calls lies within the action phase
    assert server["model_ms_per_decode_batch"] > 0 and 0 < server["model_busy_share"] <= 1.01
    assert server["client_processes"] == reference["client_processes"] == 2
    # the cores each side kept busy in the action phase: its CPU seconds over the phase's wall time
    for who in ("client", "server"):
        cpu_s = server[f"{who}_cpu_ms_per_action"] * server["actions"] / 1000
        assert server[f"{who}_cores"] == pytest.approx(cpu_s / server["action_wall_s"], rel=0.02, abs=0.002)
    assert "client process(es) kept" in first.stdout
    assert sides["ideal"]["client_work_ms_per_action"] > 0  # the same click rule runs there too
    assert "GRPO rollout workload" in first.stdout and "extrapolated" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stderr.count("already measured") == 3


@pytest.mark.slow
def test_benchmark_serves_from_a_model_process_with_a_launch_bound_test_double(tmp_path):
    """--model-process with the zero-cost tool holding the interpreter per decoder call: the server's
    model runs in a child process (its CPU counted with the server's), and the counts are unchanged."""
    out = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPT), "--tool", "zero-cost", "--zero-cost-launch-ms", "5", "--model-process",
               "--sides", "server", "--images", "2", "--sessions", "3", "--actions", "2", "--image-size", "64",
               "--client-processes", "1", "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    server = result["sides"]["server"]
    assert (server["encodes"], server["decodes"], server["actions"]) == (2, 12, 12)
    assert result["settings"]["model_process"] and result["settings"]["zero_cost_launch_ms"] == 5
    assert server["model_ms_per_decode_batch"] >= 5  # every decoder call held the interpreter 5 ms


def test_cuda_graphs_are_refused_where_they_cannot_run():
    run = subprocess.run([sys.executable, str(SCRIPT), "--cuda-graphs", "--tool", "zero-cost"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2
    assert "--cuda-graphs needs --tool sam2 --device cuda, got --tool zero-cost --device cpu" in run.stderr
