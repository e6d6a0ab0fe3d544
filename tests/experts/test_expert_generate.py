from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from expert_samples import discs, sample_from_mask
from typer.testing import CliRunner

from medseg_agent.cli.trajectories import trajectories_app
from medseg_agent.experts.generate import (
    STORE_NAME,
    GenerationConfig,
    generate_for_sample,
    load_generation,
    trajectory_signature,
)
from medseg_agent.io.masks import write_image_png, write_mask_png


def write_biomedparse(root: Path, count: int, size: int = 64) -> Path:
    """A BiomedParse-layout folder of noisy bright discs (one target per image)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        r = int(rng.integers(8, 14))
        cx, cy = (int(v) for v in rng.integers(r + 4, size - r - 4, 2))
        sample = sample_from_mask(discs(size, size, [(cx, cy)], r), seed=i)
        write_image_png(root / "test" / f"case{i:02d}_CT_abdomen.png", sample.image)
        write_mask_png(root / "test_mask" / f"case{i:02d}_CT_abdomen_bright+blob.png", sample.mask)
    return root


def stored_actions(folder: Path) -> dict[str, list[str]]:
    return {s.key: [trajectory_signature(r) for r in s.records] for s in load_generation(folder)}


def test_distinct_reproducible_trajectories_per_sample(shape_tool):
    sample = sample_from_mask(discs(96, 96, [(48, 48)], 20))
    config = GenerationConfig(per_sample=4, expert={"other_share": 0.5, "box_jitter": 0.2})
    records = generate_for_sample(shape_tool, sample, config)
    signatures = [trajectory_signature(r) for r in records]
    assert len(records) == 4 and len(set(signatures)) == 4
    assert shape_tool.encode_count == 1  # one encode for all trajectories of the sample
    assert all("expert" in r.meta and "seed" in r.meta for r in records)
    again = generate_for_sample(type(shape_tool)(), sample, config)
    assert [trajectory_signature(r) for r in again] == signatures
    # the clicker recipe has a single possible trajectory: it is kept once, however many are asked for
    fixed = GenerationConfig(mode="clicks", per_sample=3)
    assert len(generate_for_sample(shape_tool, sample, fixed)) == 1


def test_generate_command_writes_records_summary_and_refuses_other_settings(tmp_path):
    data = write_biomedparse(tmp_path / "data", 3)
    out = tmp_path / "traj"
    runner = CliRunner()
    args = [
        "generate",
        "--data",
        str(data),
        "--out",
        str(out),
        "--per-sample",
        "2",
        "--quiet",
        "--protocol",
        "ibis",
    ]
    result = runner.invoke(trajectories_app, args)
    assert result.exit_code == 0, result.output
    samples = load_generation(out)
    assert len(samples) == 3 and all(1 <= len(s.records) <= 2 for s in samples)
    record = samples[0].records[0]
    assert record.protocol == "ibis" and record.turns[0].raw_text.startswith("<think>")  # ibis: reasoning on
    assert all(s.image_path.exists() for s in samples)
    summary = json.loads((out / "summary.json").read_text())
    overall = summary["overall"]
    assert overall["samples"] == 3 and overall["trajectories"] == sum(len(s.records) for s in samples)
    assert set(summary["per_modality"]) == {"CT"} and overall["mean_final_iou"] > 0.5
    assert "add_point:positive" in overall["actions"] and "add_bbox" not in overall["actions"]
    # rerun: nothing left to do
    result = runner.invoke(trajectories_app, args)
    assert result.exit_code == 0 and "0 sample(s) generated now, 3 already" in result.output
    # other settings on the same folder are refused, naming what changed
    result = runner.invoke(trajectories_app, [*args[:-2], "--protocol", "medsam"])
    assert result.exit_code == 2 and "protocol" in result.output
    result = runner.invoke(trajectories_app, ["summary", str(out)])
    assert result.exit_code == 0 and "summary.json" in result.output


@pytest.mark.slow
def test_killed_generation_resumes_with_no_duplicate_and_no_lost_record(tmp_path):
    data = write_biomedparse(tmp_path / "data", 10)
    command = [
        sys.executable,
        "-m",
        "medseg_agent.cli.trajectories",
        "generate",
        "--data",
        str(data),
        "--per-sample",
        "2",
        "--quiet",
    ]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run([*command, "--out", str(reference)], check=True, capture_output=True, timeout=300)
    total = len(load_generation(reference))
    assert total == 10

    process = subprocess.Popen(
        [*command, "--out", str(resumed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    store = resumed / STORE_NAME
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if store.exists() and store.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    done_before = len(load_generation(resumed))
    assert 3 <= done_before < total  # killed mid-run

    subprocess.run([*command, "--out", str(resumed)], check=True, capture_output=True, timeout=300)
    keys = [json.loads(line)["key"] for line in store.read_text().splitlines() if line.strip()]
    assert len(keys) == len(set(keys)) == total  # no duplicate, none lost
    assert stored_actions(resumed) == stored_actions(reference)  # the same trajectories as an unbroken run


def test_a_broken_stored_sample_is_named_by_its_line_in_the_file(tmp_path):
    (tmp_path / STORE_NAME).write_bytes(b'garbage\n{"key": "d/a", "trajectories": []}\n')
    with pytest.raises(ValueError, match=rf"{STORE_NAME} line 2: missing field 'sample_id'"):
        load_generation(tmp_path)
