from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import load_dataset
from PIL import Image
from trl.data_utils import is_conversational, prepare_multimodal_messages
from typer.testing import CliRunner

from medseg_agent.cli.trajectories import trajectories_app
from medseg_agent.environment.replay import replay_views
from medseg_agent.experts.generate import GenerationConfig, generate_dataset, load_generation
from medseg_agent.exports import write_exports
from medseg_agent.io.images import load_image
from medseg_agent.io.masks import decode_rle
from medseg_agent.protocols import get_protocol
from medseg_agent.training.verl.episodes import AGENT_NAME, episode_spec_from_tools_kwargs
from medseg_agent.vocabulary.actions import CoordinateSpace
from medseg_agent.vocabulary.coordinates import CoordinateFrame
from medseg_agent.vocabulary.sample import Sample

ALL = ["sharegpt", "hf", "verl-sft", "verl-rl"]


def samples() -> list[Sample]:
    """A compact disc and two separate discs: box-first and point-first trajectories."""
    h, w = 96, 128
    yy, xx = np.mgrid[:h, :w]
    one = (xx - 64) ** 2 + (yy - 48) ** 2 <= 22**2
    two = ((xx - 35) ** 2 + (yy - 48) ** 2 <= 15**2) | ((xx - 95) ** 2 + (yy - 48) ** 2 <= 15**2)
    out = []
    for i, (mask, target) in enumerate([(one, "liver in abdomen CT"), (two, "kidneys in abdomen CT")]):
        rng = np.random.default_rng(i)
        gray = np.clip(60 + 120 * mask + rng.normal(0, 10, mask.shape), 0, 255).astype(np.uint8)
        out.append(
            Sample(np.stack([gray] * 3, axis=2), mask, target, "CT", "synthetic", f"case{i}", split="train")
        )
    return out


def generate(folder: Path, tool, protocol: str = "medsam") -> Path:
    config = GenerationConfig(
        protocol=protocol,
        per_sample=2,
        reasoning=True,
        max_turns=4,
        expert={"other_share": 0.5, "box_jitter": 0.2},
    )
    generate_dataset(
        samples(), folder, config, tool_factory=lambda: tool, tool_id={"name": "shape"}, show_progress=False
    )
    return folder


def records_by_id(folder: Path) -> dict:
    return {f"{s.key}#{i}": (s, r) for s in load_generation(folder) for i, r in enumerate(s.records)}


def frame(record) -> CoordinateFrame:
    return CoordinateFrame(
        CoordinateSpace(record.coordinate_space), tuple(record.image_size), tuple(record.view_size)
    )


def assert_one_valid_action(text: str, record) -> None:
    parsed = get_protocol(record.protocol).parse(text, frame(record))
    assert parsed.ok, (text, parsed.error)
    assert text.count("<tool_call>") + text.count("<action>") == 1


def pil(value) -> np.ndarray:
    image = value if isinstance(value, Image.Image) else Image.open(io.BytesIO(value["bytes"]))
    return np.asarray(image.convert("RGB"))


def test_every_export_loads_with_its_library(tmp_path, shape_tool):
    folder = generate(tmp_path / "traj", shape_tool)
    out = tmp_path / "sft"
    written = write_exports(folder, out, ALL, name="demo")
    by_id = records_by_id(folder)
    n = len(by_id)
    assert {fmt: rows for fmt, (_, rows) in written.items()} == {
        "sharegpt": n,
        "hf": n,
        "verl-sft": n,
        "verl-rl": 2,
    }

    # LLaMA-Factory: dataset_info entry + ShareGPT JSON, read the way it reads it (datasets' json loader)
    info = json.loads((out / "dataset_info.json").read_text())["demo"]
    assert info["formatting"] == "sharegpt" and info["columns"] == {
        "messages": "messages",
        "images": "images",
    }
    share = load_dataset("json", data_files=str(out / info["file_name"]), split="train")
    assert len(share) == n
    for row in share:
        roles = [m["role"] for m in row["messages"]]
        assert roles[:2] == ["system", "user"] and roles[-1] == "assistant"
        assert roles[1:] == ["user", "assistant"] * (len(roles[1:]) // 2)
        tokens = sum(m["content"].count("<image>") for m in row["messages"])
        assert tokens == len(row["images"]) >= 1
        assert all((out / path).is_file() for path in row["images"])
        assert all("<image>" not in m["content"] for m in row["messages"] if m["role"] != "user")

    # TRL SFTTrainer: messages with {"type": "image"} placeholders in user turns, PIL images
    hf = load_dataset("parquet", data_files=str(out / "demo.hf.parquet"), split="train")
    assert len(hf) == n
    for row in hf:
        assert is_conversational(row)
        filled = prepare_multimodal_messages(row["messages"], row["images"])  # raises on a count mismatch
        placed = [p for m in filled for p in m["content"] if p["type"] == "image"]
        assert len(placed) == len(row["images"]) and all(isinstance(p["image"], Image.Image) for p in placed)
        assert all(
            m["role"] == "user" for m in row["messages"] if any(p["type"] == "image" for p in m["content"])
        )
        sample, record = by_id[row["trajectory_id"]]
        assistant = [m for m in row["messages"] if m["role"] == "assistant"]
        assert len(assistant) == len(record.turns)
        for message in assistant:
            text = "".join(p["text"] for p in message["content"] if p["type"] == "text")
            assert_one_valid_action(text, record)
            assert text.startswith("<think>")
        # every overlay is the view the expert's episode produced after that turn
        views = replay_views(record, load_image(sample.image_path, sample.modality))
        for image, view in zip(row["images"][1:], views, strict=False):
            assert np.array_equal(pil(image), view)
        assert row["final_iou"] == pytest.approx(record.final_metrics["iou"])

    # verl multi-turn SFT: read with pandas as MultiTurnSFTDataset does; <image> tokens match images
    sft = pd.read_parquet(out / "demo.verl_sft.parquet")
    assert list(sft.columns[:2]) == ["messages", "images"] and len(sft) == n
    for messages, images, trajectory_id in zip(
        sft["messages"], sft["images"], sft["trajectory_id"], strict=True
    ):
        segments = [s for m in messages for s in re.split("(<image>)", m["content"]) if s == "<image>"]
        assert len(segments) == len(images)
        assert all(pil(image).shape[2] == 3 for image in images)
        record = by_id[trajectory_id][1]
        for m in messages:
            if m["role"] == "assistant":
                assert_one_valid_action(m["content"], record)

    # verl RL: the rows of `train rl-data`, read back by the RL stage's own episode spec and reward payload
    rl = load_dataset("parquet", data_files=str(out / "demo.verl_rl.parquet"), split="train")
    assert set(rl.column_names) >= {
        "data_source",
        "prompt",
        "images",
        "agent_name",
        "reward_model",
        "extra_info",
    }
    truth = {s.sample_id: s for s in samples()}
    assert sorted(row["extra_info"]["index"] for row in rl) == [0, 1]
    for row in rl:
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["prompt"][1]["content"].count("<image>") == len(row["images"]) == 1
        assert row["agent_name"] == AGENT_NAME
        extra = row["extra_info"]
        sample = truth[extra["sample_id"]]
        assert extra["modality"] == "CT" and extra["target"] == sample.target and extra["split"] == "train"
        mask = decode_rle(json.loads(row["reward_model"]["ground_truth"])["gt_mask_rle"])
        assert np.array_equal(mask, sample.mask)
        spec = episode_spec_from_tools_kwargs(extra["tools_kwargs"])
        assert np.array_equal(spec.load_image(), sample.image) and spec.target == sample.target
        assert np.array_equal(decode_rle(spec.gt_mask_rle), sample.mask)


def test_ibis_export_keeps_think_and_action_and_filters(tmp_path, shape_tool):
    folder = generate(tmp_path / "traj", shape_tool, protocol="ibis")
    out = tmp_path / "sft"
    by_id = records_by_id(folder)
    write_exports(folder, out, ["hf"], max_images=2)
    rows = load_dataset("parquet", data_files=str(out / "medseg_expert.hf.parquet"), split="train")
    for row in rows:
        assert 1 <= len(row["images"]) <= 2
        prepare_multimodal_messages(row["messages"], row["images"])
        record = by_id[row["trajectory_id"]][1]
        for message in row["messages"]:
            if message["role"] == "assistant":
                text = message["content"][0]["text"]
                assert text.startswith("<think>") and "<action>" in text
                assert_one_valid_action(text, record)
    ious = sorted(r.final_metrics["iou"] for _, r in by_id.values())
    cut = (ious[0] + ious[-1]) / 2
    written = write_exports(folder, tmp_path / "best", ["sharegpt"], min_final_iou=cut)
    assert written["sharegpt"][1] == sum(v >= cut for v in ious) < len(ious)
    with pytest.raises(ValueError, match="no trajectory"):
        write_exports(folder, tmp_path / "none", ["sharegpt"], min_final_iou=1.01)
    with pytest.raises(ValueError, match="medsam protocol"):
        write_exports(folder, tmp_path / "rl", ["verl-rl"])
    assert not (tmp_path / "rl" / "medseg_expert.verl_rl.parquet").exists()


def test_export_command(tmp_path, shape_tool):
    folder = generate(tmp_path / "traj", shape_tool)
    out = tmp_path / "sft"
    result = CliRunner().invoke(
        trajectories_app, ["export", str(folder), "--out", str(out), "-f", "hf", "-f", "verl-rl"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "medseg_expert.hf.parquet").is_file() and (out / "medseg_expert.verl_rl.parquet").is_file()
    assert not (out / "dataset_info.json").exists()
    assert list((out / "images").rglob("*.png"))
    result = CliRunner().invoke(trajectories_app, ["export", str(folder), "--out", str(out), "-f", "csv"])
    assert result.exit_code == 2 and "unknown --format csv" in result.output


def test_exports_add_to_the_folders_dataset_list_and_a_damaged_one_stops_before_any_work(tmp_path, shape_tool):
    folder = generate(tmp_path / "traj", shape_tool)
    out = tmp_path / "sft"
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps({"theirs": {"file_name": "theirs.json"}}))
    result = CliRunner().invoke(trajectories_app, ["export", str(folder), "--out", str(out), "-f", "sharegpt"])
    assert result.exit_code == 0, result.output
    assert set(json.loads((out / "dataset_info.json").read_text())) == {"theirs", "medseg_expert"}

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "dataset_info.json").write_text('{"theirs": {"file_name": ')  # cut short by a full disk
    result = CliRunner().invoke(trajectories_app, ["export", str(folder), "--out", str(damaged), "-f", "sharegpt"])
    assert result.exit_code == 2
    assert "LLaMA-Factory dataset list" in result.output and "is not valid JSON" in result.output
    assert not (damaged / "medseg_expert.sharegpt.json").exists() and not list(damaged.glob("images"))


@pytest.mark.parametrize("name", ["../outside", "", ".hidden", "a/b"])
def test_a_dataset_name_that_is_not_a_file_name_is_refused(tmp_path, shape_tool, name):
    folder = generate(tmp_path / "traj", shape_tool)
    result = CliRunner().invoke(trajectories_app, ["export", str(folder), "--out", str(tmp_path / "o"), "--name", name])
    assert result.exit_code == 2 and f"--name {name!r}: a dataset name starts with" in " ".join(result.output.split())
    assert not list(tmp_path.glob("outside*")) and not list((tmp_path / "o").glob("*.*"))


def test_ibis_trajectories_with_the_default_formats_skip_verl_rl_and_say_so(tmp_path, shape_tool):
    """Issue 10 item 13: the default (all formats) used to abort on verl-rl and write nothing."""
    folder = generate(tmp_path / "traj", shape_tool, protocol="ibis")
    out = tmp_path / "export"
    result = CliRunner().invoke(trajectories_app, ["export", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    message = " ".join(result.output.split())
    assert "warning: verl-rl skipped:" in message and "medsam protocol" in message
    written = {p.name for p in out.glob("*.*")}
    assert written == {"medseg_expert.sharegpt.json", "dataset_info.json", "medseg_expert.hf.parquet",
                       "medseg_expert.verl_sft.parquet"}
    assert not list(out.glob(".*.tmp"))  # the dropped writer left no temporary file
    explicit = CliRunner().invoke(trajectories_app, ["export", str(folder), "--out", str(tmp_path / "rl"), "-f",
                                                     "verl-rl"])
    assert explicit.exit_code == 2 and "medsam protocol" in " ".join(explicit.output.split())


def test_export_files_are_readable_by_the_team(tmp_path, shape_tool):
    """Issue 10 item 13: exports were 0600 (mkstemp's mode survived the rename); rl-data writes 0644."""
    import os

    folder = generate(tmp_path / "traj", shape_tool)
    out = tmp_path / "export"
    old = os.umask(0o022)
    try:
        write_exports(folder, out, ["sharegpt", "hf", "verl-sft", "verl-rl"])
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}
