"""The synthetic lesion scans: a text-conditioned task with look-alikes, split by image, deterministic."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from medseg_agent.data import open_dataset
from medseg_agent.data.synthetic import (
    ATTRIBUTES,
    INFO_NAME,
    MANIFEST_NAME,
    SyntheticConfig,
    build_synthetic_dataset,
    describe,
    generate_image,
    is_complete,
)


def digest(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


def test_same_seed_same_files_and_splits_by_image(tmp_path):
    config = SyntheticConfig(train=4, val=2, test=3, seed=7)
    a = build_synthetic_dataset(tmp_path / "a", config)
    b = build_synthetic_dataset(tmp_path / "b", config)
    assert digest(a) == digest(b) and len(digest(a)) == 2 * 9
    assert (a / MANIFEST_NAME).read_text() == (b / MANIFEST_NAME).read_text()
    other = build_synthetic_dataset(tmp_path / "c", SyntheticConfig(train=4, val=2, test=3, seed=8))
    assert digest(other) != digest(a)

    rows = [json.loads(line) for line in (a / MANIFEST_NAME).read_text().splitlines()]
    by_split = {s: {r["image"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    assert [len(v) for v in by_split.values()] == [4, 2, 3]
    assert not (by_split["train"] & by_split["test"]) and not (by_split["val"] & by_split["test"])
    samples = list(open_dataset(a, split="test"))  # the manifest reader opens it like any dataset
    assert len(samples) == 3 and all(s.split == "test" and s.modality == "CT" for s in samples)
    assert all(s.mask.any() and s.image.shape == (256, 256, 3) for s in samples)
    summary = json.loads((a / INFO_NAME).read_text())["summary"]
    assert summary["images"] == {"train": 4, "val": 2, "test": 3}


def test_the_text_names_exactly_what_tells_the_target_from_its_lookalikes():
    config = SyntheticConfig()
    rng = np.random.default_rng(3)
    for _ in range(25):
        scene = generate_image(256, config, rng)
        target = scene.lesions[scene.target_index]
        named = set(scene.named)
        assert 2 <= len(named) <= 3 and scene.target == describe(target, named)
        matching = [les for les in scene.lesions if all(getattr(les, a) == getattr(target, a) for a in named)]
        assert matching == [target]  # the text picks out one lesion
        differs = [[a for a in ATTRIBUTES if getattr(les, a) != getattr(target, a)] for les in scene.lesions]
        assert {d[0] for d in differs if len(d) == 1} == named  # one look-alike per named attribute
        # the mask is the target's ellipse, on its side of the image
        ys, xs = np.nonzero(scene.mask)
        assert (xs.mean() < 128) == (target.side == "left")
        assert abs(np.count_nonzero(scene.mask) - np.pi * target.axes[0] * target.axes[1]) < 0.15 * scene.mask.sum()


def test_lesion_attributes_show_in_the_pixels():
    rng = np.random.default_rng(0)
    for _ in range(10):
        scene = generate_image(256, SyntheticConfig(), rng)
        gray = scene.image[:, :, 0].astype(float)
        target = scene.lesions[0]
        inside = gray[scene.mask].mean()
        ring = np.zeros_like(scene.mask)
        ys, xs = np.nonzero(scene.mask)
        ring[max(ys.min() - 6, 0) : ys.max() + 7, max(xs.min() - 6, 0) : xs.max() + 7] = True
        tissue = np.median(gray[ring & ~scene.mask])
        assert (inside > tissue + 40) if target.brightness == "bright" else (inside < tissue - 30)


def test_reuse_rebuild_and_refusals(tmp_path):
    config = SyntheticConfig(train=2, val=0, test=1)
    out = build_synthetic_dataset(tmp_path / "d", config)
    stamp = (out / MANIFEST_NAME).stat().st_mtime_ns
    assert is_complete(out, config)
    assert build_synthetic_dataset(out, config) == out and (out / MANIFEST_NAME).stat().st_mtime_ns == stamp
    bigger = SyntheticConfig(train=3, val=0, test=1)
    assert not is_complete(out, bigger)
    build_synthetic_dataset(out, bigger)
    assert len((out / MANIFEST_NAME).read_text().splitlines()) == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        build_synthetic_dataset(tmp_path / "other", config)
    with pytest.raises(ValueError, match="no images"):
        SyntheticConfig(train=0, val=0, test=0)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=64)


def test_the_command_prints_text_not_markup(tmp_path):
    from typer.testing import CliRunner

    from medseg_agent.cli.app import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "build-synthetic", "--out", str(tmp_path / "d"), "--train", "0", "--val", "0",
                                 "--test", "0"])
    assert result.exit_code == 2 and "error: no images requested" in result.output and "[red]" not in result.output
    result = runner.invoke(app, ["data", "build-synthetic", "--out", str(tmp_path / "d"), "--train", "1", "--val", "0",
                                 "--test", "0", "--size", "128"])
    assert result.exit_code == 0 and f"synthetic dataset: {tmp_path / 'd'} (" in " ".join(result.output.split())
    assert "[bold]" not in result.output


def test_a_bare_scene_is_one_lesion_named_lesion_and_extras_need_lookalikes():
    rng = np.random.default_rng(4)
    for _ in range(5):
        scene = generate_image(256, SyntheticConfig(lookalikes=(0, 0), extras=(0, 0)), rng)
        assert len(scene.lesions) == 1 and scene.named == [] and scene.target == "lesion" and scene.mask.any()
    with pytest.raises(ValueError, match="extras need look-alikes"):
        SyntheticConfig(lookalikes=(0, 1), extras=(0, 1))
    with pytest.raises(ValueError, match=r"within \[0, 3\]"):
        SyntheticConfig(lookalikes=(2, 4))


def test_a_scene_keeps_its_label_map_one_label_per_lesion_the_target_first():
    scene = generate_image(256, SyntheticConfig(), np.random.default_rng(7))
    assert sorted(np.unique(scene.labels)) == list(range(len(scene.lesions) + 1))
    assert np.array_equal(scene.labels == 1, scene.mask)
    for index, lesion in enumerate(scene.lesions, start=1):  # each label sits on its lesion's centre
        x, y = (int(round(v)) for v in lesion.center)
        assert scene.labels[y, x] == index
