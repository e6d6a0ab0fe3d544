"""`medseg-agent segment` on the hostile images of issue 10 item 7: good ones keep their contrast,
bad ones end with a one-line error naming the file, a non-zero exit and no output folder."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from image_files import png_claiming, zero_png
from PIL import Image
from typer.testing import CliRunner

from medseg_agent.cli.app import app
from medseg_agent.io.images import load_mask

runner = CliRunner()


def _disc(h: int = 96, w: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - 60) ** 2 + (yy - 50) ** 2 <= 22**2


def _segment(image, gt, out):
    return runner.invoke(app, ["segment", str(image), "-t", "lesion", "--gt", str(gt), "-o", str(out)])


def _iou(out) -> float:
    predicted, truth = load_mask(out / "mask.png"), _disc()
    return float((predicted & truth).sum() / (predicted | truth).sum())


@pytest.fixture
def gt(tmp_path):
    path = tmp_path / "gt.png"
    Image.fromarray(_disc().astype(np.uint8) * 255).save(path)
    return path


def test_float_tiff_with_nan_is_segmented_not_blacked_out(tmp_path, gt):
    rng = np.random.default_rng(0)
    raw = (np.where(_disc(), 900.0, 300.0) + rng.normal(0, 40, _disc().shape)).astype(np.float32)
    raw[:6, :6] = np.nan
    tifffile.imwrite(tmp_path / "scan.tif", raw)
    result = _segment(tmp_path / "scan.tif", gt, tmp_path / "out")
    assert result.exit_code == 0, result.output
    first_view = np.asarray(Image.open(tmp_path / "out" / "overlay_00.png"))
    assert first_view.max() > 200  # the old path turned the whole image black
    assert _iou(tmp_path / "out") > 0.7


def test_16bit_png_is_segmented(tmp_path, gt):
    rng = np.random.default_rng(1)
    raw = np.clip(np.where(_disc(), 40000, 12000) + rng.normal(0, 2000, _disc().shape), 0, 65535)
    Image.fromarray(raw.astype(np.uint16)).save(tmp_path / "scan.png")
    result = _segment(tmp_path / "scan.png", gt, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _iou(tmp_path / "out") > 0.7


def _tiny(path, h, w):
    Image.fromarray(np.full((h, w), 128, np.uint8)).save(path)


@pytest.mark.parametrize(
    ("name", "write", "expected"),
    [
        ("one.png", lambda p: _tiny(p, 1, 1), "image is 1x1 pixels; at least 2x2"),
        ("row.png", lambda p: _tiny(p, 1, 300), "image is 1x300 pixels; at least 2x2"),
        ("huge.png", lambda p: p.write_bytes(png_claiming(65_000, 65_000)), "4,225,000,000 pixels"),
        ("bomb.png", lambda p: p.write_bytes(zero_png(8_000, 8_000)), "8000x8000 (64,000,000 pixels), above the limit"),
        ("void.tif", lambda p: tifffile.imwrite(p, np.full((8, 8), np.nan, np.float32)), "no finite pixel"),
    ],
)
def test_bad_images_end_with_one_clear_error_and_no_output(tmp_path, gt, name, write, expected):
    write(tmp_path / name)
    out = tmp_path / "out"
    result = _segment(tmp_path / name, gt, out)
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())  # rich may wrap a long line at the test terminal's width
    assert text.startswith("error: ") and text.count("error:") == 1 and "Traceback" not in text
    assert name in text and expected in text
    assert not out.exists()


def test_bad_ground_truth_mask_is_a_clear_error(tmp_path, gt):
    Image.fromarray(np.full(_disc().shape, 128, np.uint8)).save(tmp_path / "scan.png")
    (tmp_path / "gt_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = _segment(tmp_path / "scan.png", tmp_path / "gt_broken.png", tmp_path / "out")
    assert result.exit_code == 2 and "gt_broken.png: not a readable image" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
