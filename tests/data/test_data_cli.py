from __future__ import annotations

import json

import numpy as np
from data_reader_helpers import box_mask, rgb_image, write_png
from typer.testing import CliRunner

from medseg_agent.cli import data as cli_data
from medseg_agent.cli.data import data_app

runner = CliRunner()


def test_list_prints_counts_and_skipped(tmp_path):
    root = tmp_path / "mini"
    write_png(root / "test" / "a_CT_abdomen.png", rgb_image())
    write_png(root / "test_mask" / "a_CT_abdomen_liver.png", box_mask())
    write_png(root / "test_mask" / "a_CT_abdomen_spleen.png", box_mask())
    write_png(root / "test" / "b_MRI_brain.png", rgb_image())
    write_png(root / "test_mask" / "b_MRI_brain_tumor.png", np.zeros((32, 40), np.uint8))
    result = runner.invoke(data_app, ["list", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "mini" in out and "liver" in out and "spleen" in out and "CT" in out
    assert "skipped: 1" in out and "empty mask" in out and "b_MRI_brain_tumor" in out
    result = runner.invoke(data_app, ["list", str(root), "--split", "train"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "no split" in result.output


def test_list_refuses_volume_options_that_cannot_work(tmp_path):
    import nibabel as nib

    labels = np.zeros((12, 12, 4), np.uint8)
    labels[3:8, 3:8, 1:3] = 1
    image = np.random.default_rng(0).random((12, 12, 4), np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "v_seg.nii.gz")
    ok = runner.invoke(data_app, ["list", str(tmp_path / "v.nii.gz"), "--every-k", "2"], env={"COLUMNS": "200"})
    assert ok.exit_code == 0 and "splits: test: 1" in ok.output, ok.output
    result = runner.invoke(data_app, ["list", str(tmp_path / "v.nii.gz"), "--window", "garbage"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)  # said, not a traceback
    assert "unknown CT window 'garbage'" in result.output
    for option in ("--every-k", "--min-area"):
        result = runner.invoke(data_app, ["list", str(tmp_path / "v.nii.gz"), option, "0"])
        assert result.exit_code == 2 and option in result.output


def test_list_unknown_layout_fails_cleanly(tmp_path):
    result = runner.invoke(data_app, ["list", str(tmp_path)])
    assert result.exit_code == 2 and "cannot" in result.output


def test_build_demo_command(tmp_path, monkeypatch):
    out = tmp_path / "demo"

    def fake_build(target, force=False, progress=None):
        progress("pretending")
        out.mkdir(exist_ok=True)
        (out / "demo_manifest.json").write_text(
            json.dumps(
                {
                    "n_samples": 3,
                    "n_images": 2,
                    "counts": {
                        "modality": {"MRI": 2, "Microscopy": 1},
                        "target": {"left thalamus": 2, "all cell nuclei": 1},
                    },
                }
            )
        )
        assert force is True and target == out
        return out

    import medseg_agent.data.demo as demo

    monkeypatch.setattr(demo, "build_demo_dataset", fake_build)
    result = runner.invoke(data_app, ["build-demo", "--out", str(out), "--force"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "") and "3 samples" in result.output
    assert "left thalamus" in result.output and "Microscopy: 1" in result.output

    def failing(target, force=False, progress=None):
        raise demo.DemoBuildError("package mricron-data unavailable")

    monkeypatch.setattr(demo, "build_demo_dataset", failing)
    result = runner.invoke(data_app, ["build-demo", "--out", str(out)])
    assert result.exit_code == 1 and "mricron-data" in result.output and "samples" not in result.output
    # `medseg-agent data build-demo` of the main command runs this same command
    from medseg_agent.cli.app import app

    result = runner.invoke(app, ["data", "build-demo", "--out", str(out)])
    assert result.exit_code == 1 and "mricron-data" in result.output


def test_register_adds_the_data_group():
    import typer

    app = typer.Typer()

    @app.command()
    def other() -> None:
        pass

    cli_data.register(app)
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0 and "build-demo" in result.output and "list" in result.output
