"""`medseg-agent evaluate` killed with SIGKILL mid-run resumes with no duplicate and no lost record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from evalfixtures import write_disc_dataset

SAMPLES = 40


def _lines(path):
    return path.read_bytes().splitlines() if path.exists() else []


@pytest.mark.slow
def test_sigkill_then_resume_gives_each_sample_exactly_once(tmp_path):
    data = write_disc_dataset(tmp_path / "data", SAMPLES)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "medseg_agent.cli.app", "evaluate", "--data", str(data), "--out", str(out),
               "--policy", "clicker", "--tool", "classic", "--max-turns", "4", "--no-plots", "-q"]
    records = out / "records.jsonl"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_lines(records)) < 3:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no records after 120 s"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    before = [line for line in _lines(records) if line.endswith(b"}")]
    assert 3 <= len(before) < SAMPLES, "the run finished before it could be killed"

    finished = subprocess.run(command, capture_output=True, timeout=300)
    assert finished.returncode == 0, finished.stderr.decode()
    after = _lines(records)
    keys = [json.loads(line)["key"] for line in after]
    assert len(keys) == len(set(keys)) == SAMPLES
    assert after[: len(before)] == before  # what was written before the kill is kept as it was
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"][0]["n"] == SAMPLES
