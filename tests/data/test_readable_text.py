"""File names whose bytes are not UTF-8 (a folder unzipped from a Windows archive) reach the toolkit
as strings with lone surrogates; samples carry readable text and records keep the exact paths."""

from __future__ import annotations

import os

import cv2
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from medseg_agent.cli.app import app
from medseg_agent.data.readers import open_dataset
from medseg_agent.io.atomic import append_jsonl, atomic_write_json, read_jsonl
from medseg_agent.vocabulary.sample import readable_text


@given(st.text())
def test_readable_text_is_always_encodable_and_leaves_valid_text_alone(text):
    readable = readable_text(text)
    readable.encode("utf-8")
    assert readable == text or any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def test_bytes_kept_as_surrogates_are_read_as_windows_1252():
    assert readable_text(b"f\xe9mur".decode("utf-8", "surrogateescape")) == "fémur"
    assert readable_text("é" + b"\xe9".decode("utf-8", "surrogateescape")) == "éé"  # valid text stays as it is
    assert readable_text("a\ud800b") == "a\ufffdb"  # a surrogate no byte stands for


def test_json_files_keep_a_surrogate_path_exactly(tmp_path):
    path = str(tmp_path / b"f\xe9mur.png".decode("utf-8", "surrogateescape"))
    atomic_write_json(tmp_path / "r.json", {"image_path": path})
    append_jsonl(tmp_path / "r.jsonl", {"image_path": path})
    assert b"\\udce9" in (tmp_path / "r.json").read_bytes()
    assert read_jsonl(tmp_path / "r.jsonl") == [{"image_path": path}]


def test_a_dataset_with_a_latin1_file_name_is_evaluated_and_generated(tmp_path):
    yy, xx = np.mgrid[:64, :80]
    mask = (xx - 40) ** 2 + (yy - 30) ** 2 <= 14**2
    image = np.clip(60 + 120 * mask + np.random.default_rng(0).normal(0, 8, mask.shape), 0, 255).astype(np.uint8)
    root = os.fsencode(tmp_path / "data")
    for folder in (b"test", b"test_mask"):
        os.makedirs(os.path.join(root, folder))
    name = b"f\xe9mur_01"  # cp1252 bytes, as unzip leaves a Windows archive's names
    for path, pixels in ((b"test/" + name + b".png", image), (b"test_mask/" + name + b"_CT_leg_bone.png", mask)):
        ok, encoded = cv2.imencode(".png", pixels.astype(np.uint8) * (255 if pixels.dtype == bool else 1))
        with open(os.path.join(root, path), "wb") as handle:
            handle.write(encoded.tobytes())
    [sample] = open_dataset(tmp_path / "data").load()
    assert sample.sample_id == "fémur_01_CT_leg_bone" and os.path.isfile(sample.image_path)

    runner = CliRunner()
    for command in (["evaluate", "--policy", "clicker", "-o", str(tmp_path / "eval")],
                    ["trajectories", "generate", "--out", str(tmp_path / "traj")]):
        result = runner.invoke(app, [*command, "--data", str(tmp_path / "data")])
        assert result.exit_code == 0, result.output
    [row] = read_jsonl(tmp_path / "eval" / "records.jsonl")
    assert row["key"] == "data/fémur_01_CT_leg_bone" and os.path.isfile(row["record"]["image_path"])
