"""The demo builder: offline unit tests of its plumbing, and one slow test that builds the REAL
demo (fetching Debian mricron-data and the PyPI stardist wheel once into the cache, honouring
$MEDSEG_AGENT_CACHE)."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from medseg_agent.data import demo
from medseg_agent.data.demo import debian
from medseg_agent.data.readers import open_dataset


def _ar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, body in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
        assert len(header) == 60
        out.write(header + body + (b"\n" if len(body) % 2 else b""))
    return out.getvalue()


def _fake_deb(files: dict[str, bytes]) -> bytes:
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w:xz") as tf:
        for name, body in files.items():
            info = tarfile.TarInfo(f"./{demo.MRICRON_TEMPLATES}/{name}")
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return _ar({"debian-binary": b"2.0\n", "control.tar.xz": b"x", "data.tar.xz": tar_buf.getvalue()})


def test_default_dirs_honour_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSEG_AGENT_CACHE", str(tmp_path / "c"))
    assert demo.default_demo_dir() == tmp_path / "c" / "demo"
    assert demo.downloads_dir() == tmp_path / "c" / "downloads"
    monkeypatch.delenv("MEDSEG_AGENT_CACHE")
    assert demo.default_demo_dir() == Path.home() / ".cache" / "medseg-agent" / "demo"


def test_fetch_mricron_without_apt_or_dpkg(monkeypatch, tmp_path):
    files = {n: f"content of {n}".encode() for n in demo.MRICRON_FILES}
    deb_bytes = _fake_deb(files)
    monkeypatch.setattr(debian, "INSTALLED_TEMPLATES", tmp_path / "not-installed")
    monkeypatch.setattr(debian, "_apt_download", lambda tmp, log: None)
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    monkeypatch.setattr(debian, "url_download", lambda url, dest, sha: dest.write_bytes(deb_bytes))
    got = demo.fetch_mricron_templates(tmp_path / "cache")
    assert got == tmp_path / "cache" / demo.MRICRON_PACKAGE
    assert {p.name: p.read_bytes() for p in got.iterdir()} == files
    # second call: served from the cache, no download attempted
    monkeypatch.setattr(debian, "url_download", lambda *a: pytest.fail("downloaded again"))
    assert demo.fetch_mricron_templates(tmp_path / "cache") == got


def test_fetch_mricron_failure_names_package_and_command(monkeypatch, tmp_path):
    monkeypatch.setattr(debian, "INSTALLED_TEMPLATES", tmp_path / "not-installed")
    monkeypatch.setattr(debian, "_apt_download", lambda tmp, log: None)

    def offline(url, dest, sha):
        raise OSError("network unreachable")

    monkeypatch.setattr(debian, "url_download", offline)
    with pytest.raises(demo.DemoBuildError) as err:
        demo.fetch_mricron_templates(tmp_path / "cache")
    assert "mricron-data" in str(err.value) and "apt-get download mricron-data" in str(err.value)


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(demo.DemoBuildError, match="not empty"):
        demo.build_demo_dataset(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    assert not demo.is_complete(tmp_path)


# ------------------------------------------------------------------------------------ real build


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    start = time.perf_counter()
    path = demo.build_demo_dataset(demo.default_demo_dir())
    print(f"demo dataset at {path} ({time.perf_counter() - start:.1f} s)")
    return path


@pytest.mark.slow
def test_real_demo_dataset(demo_dir):
    assert demo.is_complete(demo_dir)
    ds = open_dataset(demo_dir)
    samples = ds.load()
    assert ds.format == "biomedparse" and ds.skipped == []
    assert 20 <= len(samples) <= 40
    modalities = {s.modality for s in samples}
    assert {"MRI", "Microscopy"} <= modalities
    targets = {s.meta["target_name"] for s in samples}
    assert len(targets) >= 4
    for s in samples:
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
        assert s.mask.dtype == bool and s.mask.shape == s.image.shape[:2]
        assert s.mask.any() and not s.mask.all()
        assert s.target.startswith(s.meta["target_name"])
        # masks sit on visible structures, not on empty background
        assert s.image[s.mask].mean() > 20
    # the manifest lists the same samples and is itself a readable manifest
    manifest = json.loads((demo_dir / demo.MANIFEST_NAME).read_text())
    assert manifest["n_samples"] == len(samples)
    assert len(open_dataset(demo_dir / demo.MANIFEST_NAME).load()) == len(samples)
    readme = (demo_dir / "README.txt").read_text()
    for ref in ("Tzourio-Mazoyer", "Holmes", "Caicedo", "Schmidt"):
        assert ref in readme


@pytest.mark.slow
def test_real_demo_mri_is_radiological(demo_dir):
    mri = [s for s in open_dataset(demo_dir) if s.modality == "MRI"]
    assert mri and all(s.spacing == (1.0, 1.0) for s in mri)
    sided = [s for s in mri if s.meta["target_name"].startswith(("left ", "right "))]
    assert len(sided) >= 8
    for s in sided:
        h, w = s.mask.shape
        col = np.nonzero(s.mask)[1].mean()
        if s.meta["target_name"].startswith("left "):
            assert col > w / 2, f"{s.sample_id}: patient-left structure must be on the image's right"
        else:
            assert col < w / 2, f"{s.sample_id}: patient-right structure must be on the image's left"
    for s in mri:
        if "caudate" in s.meta["target_name"]:
            assert np.nonzero(s.mask)[0].mean() < s.mask.shape[0] / 2, "caudate heads are anterior: top half"
    brain = [s for s in mri if s.meta["target_name"] == "whole brain"]
    for s in brain:
        assert 0.3 < s.mask.mean() < 0.7
        # the face / frontal pole is at the top: more head rows above the brain centre than below
        rows = np.nonzero(s.mask)[0]
        assert rows.min() < s.mask.shape[0] * 0.2


@pytest.mark.slow
def test_real_demo_microscopy_targets_are_unambiguous(demo_dir):
    micro = [s for s in open_dataset(demo_dir) if s.modality == "Microscopy"]
    central = [s for s in micro if s.meta["target_name"] == demo.CENTRAL_NUCLEUS]
    assert len(central) >= 4
    for s in central:
        h, w = s.mask.shape
        assert s.mask[h // 2, w // 2], "the target nucleus covers the image centre"
        assert 0.02 < s.mask.mean() < 0.25
        rows, cols = np.nonzero(s.mask)
        assert rows.min() > 0 and cols.min() > 0 and rows.max() < h - 1 and cols.max() < w - 1
    fields = [s for s in micro if s.meta["target_name"] == demo.ALL_NUCLEI]
    assert fields and all(s.mask.mean() > 0.1 for s in fields)


@pytest.mark.slow
def test_real_demo_is_cached(demo_dir):
    marker = (demo_dir / demo.MARKER_NAME).stat().st_mtime
    start = time.perf_counter()
    assert demo.build_demo_dataset(demo_dir) == demo_dir
    assert time.perf_counter() - start < 5
    assert (demo_dir / demo.MARKER_NAME).stat().st_mtime == marker


@pytest.mark.slow
def test_the_demo_command_segments_every_sample_and_keeps_every_turn(demo_dir, tmp_path):
    """`make demo` runs this command; here with two clicks, so the table is quick to make."""
    from typer.testing import CliRunner

    from medseg_agent.cli.app import app

    result = CliRunner().invoke(app, ["demo", "--data", str(demo_dir), "--out", str(tmp_path), "--clicks", "2"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    records = sorted((tmp_path / "records").glob("*.json"))
    assert len(records) == 28 and "demo: classic tool + clicker on 28 real samples" in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│ all "))
    assert [cell.strip() for cell in row.split("│")[1:3]] == ["all", "28"]
    for path in records:  # an overlay per view: the first view and one per click
        record = json.loads(path.read_text())
        assert len(list((tmp_path / "overlays" / path.stem).glob("turn_*.png"))) == len(record["turns"]) + 1
    assert (tmp_path / "tool_eval.json").is_file()
