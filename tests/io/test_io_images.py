"""The one image loader: the hostile files of issue 10 item 7, and the same pixels from every entry
point (`segment`'s loader call, the dataset readers, the server's upload decoding)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import tifffile
from image_files import png_claiming, zero_png
from PIL import Image, ImageFile

from medseg_agent.data.readers import open_dataset
from medseg_agent.io.images import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    EncodedImage,
    ImageLimits,
    ImageLoadError,
    ImageNotFoundError,
    load_image,
    load_mask,
    max_image_pixels,
    read_image_array,
)
from medseg_agent.io.intensity import percentile_normalize
from medseg_agent.serving.images import ImageRejected, decode_image_bytes
from sibling_helpers import helper_module


def _disc(h: int = 40, w: int = 50) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2


def _write_manifest(folder, image_name: str, modality: str) -> None:
    Image.fromarray(_disc().astype(np.uint8) * 255).save(folder / "mask.png")
    row = {"image": image_name, "mask": "mask.png", "target": "disc", "modality": modality, "sample_id": "s"}
    (folder / "manifest.jsonl").write_text(json.dumps(row) + "\n")


def _never_decode(monkeypatch) -> None:
    def refuse(self):
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# ------------------------------------------------------------------------- NaN / inf float TIFF


def test_float_tiff_with_nan_keeps_its_contrast(tmp_path):
    raw = np.where(_disc(), 900.0, 100.0).astype(np.float32) + np.linspace(0, 50, 50, dtype=np.float32)
    raw[:5, :5] = np.nan
    raw[0, -1] = np.inf
    tifffile.imwrite(tmp_path / "nan.tif", raw)
    image = load_image(tmp_path / "nan.tif")
    assert image.shape == (40, 50, 3) and image.dtype == np.uint8 and image.flags.writeable
    gray = image[:, :, 0]
    finite = np.isfinite(raw)
    expected = percentile_normalize(raw)  # the readers' rule: percentiles of finite values
    assert np.array_equal(gray[finite], expected[finite])
    assert (gray[:5, :5] == 0).all() and gray[0, -1] == 255  # NaN darkest, +inf brightest
    assert gray[_disc()].mean() > 200 and gray[~_disc() & finite].mean() < 60  # not all black


def test_float_tiff_without_any_finite_value_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "void.tif", np.full((8, 8), np.nan, np.float32))
    with pytest.raises(ImageLoadError, match=r"void\.tif: no finite pixel value"):
        load_image(tmp_path / "void.tif")


# ------------------------------------------------------------------------- 16-bit PNG


def test_16bit_png_gives_the_same_pixels_to_every_caller(tmp_path):
    raw = (np.where(_disc(), 3000, 1100) + np.arange(50) * 7).astype(np.uint16)
    Image.fromarray(raw).save(tmp_path / "u16.png")
    assert Image.open(tmp_path / "u16.png").mode == "I;16"
    _write_manifest(tmp_path, "u16.png", "MRI")
    from_loader = load_image(tmp_path / "u16.png")  # what `segment` calls
    (sample,) = open_dataset(tmp_path / "manifest.jsonl").load()  # what `evaluate` reads
    from_server = decode_image_bytes((tmp_path / "u16.png").read_bytes(), max_side=64)
    assert np.array_equal(from_loader, sample.image) and np.array_equal(from_loader, from_server)
    assert np.array_equal(from_loader[:, :, 0], percentile_normalize(raw))


def test_ct_window_that_blanks_the_image_is_a_clear_skip(tmp_path):
    """16-bit PNGs rarely hold Hounsfield units: windowing the stored values made every pixel white
    (Dice 0.071 in `evaluate`); now the sample is skipped with the reason."""
    raw = (np.where(_disc(), 33000, 32000)).astype(np.uint16)
    Image.fromarray(raw).save(tmp_path / "ct16.png")
    _write_manifest(tmp_path, "ct16.png", "CT")
    dataset = open_dataset(tmp_path / "manifest.jsonl")
    assert dataset.load() == []
    (skip,) = dataset.skipped
    assert skip.path.endswith("ct16.png")
    assert "shows every pixel white" in skip.reason and "Hounsfield" in skip.reason
    with pytest.raises(ImageLoadError, match="W400 L40"):
        load_image(tmp_path / "ct16.png", "CT")
    hu = np.where(_disc(), 60, -100).astype(np.int16)  # real HU: windowed as before
    np.save(tmp_path / "hu.npy", hu)
    windowed = load_image(tmp_path / "hu.npy", "CT")[:, :, 0]
    assert windowed[_disc()].min() > windowed[~_disc()].max()


# ------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 300), (300, 1)])
def test_images_below_two_pixels_a_side_are_refused(tmp_path, height, width):
    path = tmp_path / f"tiny{height}x{width}.png"
    Image.fromarray(np.full((height, width), 128, np.uint8)).save(path)
    with pytest.raises(ImageLoadError, match=rf"tiny{height}x{width}\.png: image is {height}x{width} pixels"):
        load_image(path)
    assert load_image(path, limits=ImageLimits(min_side=1)).shape == (height, width, 3)


def test_png_header_claiming_65000_squared_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming(65_000, 65_000))
    assert path.stat().st_size < 200
    _never_decode(monkeypatch)
    with pytest.raises(ImageLoadError, match=r"huge\.png: the header announces 4,225,000,000 pixels, above the limit"):
        load_image(path)
    with pytest.raises(ImageRejected, match="4,225,000,000 pixels, above the limit of 67,108,864 pixels$"):
        decode_image_bytes(path.read_bytes(), max_side=8192)
    with pytest.raises(ImageLoadError, match=r"more than Pillow decodes \(178,956,970"):
        load_image(path, limits=ImageLimits(max_pixels=5_000_000_000))  # Pillow's own guard still holds
    path.write_bytes(png_claiming(20_000, 2_000))  # within Pillow's guard: our limit speaks
    explicit_limit = r"image is 2000x20000 \(40,000,000 pixels\), above the limit of 25,000,000 pixels$"
    with pytest.raises(ImageLoadError, match=explicit_limit):
        load_image(path, limits=ImageLimits(max_pixels=DEFAULT_MAX_PIXELS // 2))


def test_decompression_bomb_png_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(zero_png(8_000, 8_000))  # valid: 64 megapixels in under 300 KB
    assert path.stat().st_size < 300_000
    _never_decode(monkeypatch)
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    assert str(err.value).startswith(f"{path}: image is 8000x8000 (64,000,000 pixels)")
    assert f"limit of {DEFAULT_MAX_PIXELS:,} pixels" in str(err.value) and MAX_PIXELS_ENV in str(err.value)
    with pytest.raises(ImageLoadError, match="8000x8000"):
        load_mask(path)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    assert max_image_pixels() == 1000
    with pytest.raises(ImageLoadError, match="limit of 1,000 pixels"):
        load_image(path)
    assert load_image(path, limits=ImageLimits(max_pixels=1200)).shape == (30, 40, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ImageLoadError, match=f"{MAX_PIXELS_ENV}='lots' is not a positive whole number"):
        load_image(path)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    assert max_image_pixels() == DEFAULT_MAX_PIXELS


# ------------------------------------------------------------------------- other formats and failures


def test_npy_with_a_malformed_header_is_a_load_error():
    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (10, 10"
    header += b" " * (64 - (10 + len(header) + 1) % 64) + b"\n"
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(100)
    with pytest.raises(ImageLoadError, match=r"^upload: not a valid \.npy array"):
        load_image(EncodedImage(data, "upload"))


def test_missing_unreadable_and_non_image_files(tmp_path):
    with pytest.raises(ImageNotFoundError, match="file not found") as err:
        load_image(tmp_path / "absent.png")
    assert isinstance(err.value, FileNotFoundError)
    (tmp_path / "junk.png").write_bytes(b"this is not a picture")
    with pytest.raises(ImageLoadError, match=r"junk\.png: not a readable image file"):
        load_image(tmp_path / "junk.png")
    np.save(tmp_path / "complex.npy", np.zeros((4, 4), np.complex64))
    with pytest.raises(ImageLoadError, match="complex64 is not an image intensity"):
        load_image(tmp_path / "complex.npy")
    np.save(tmp_path / "stack.npy", np.zeros((5, 6, 7), np.uint8))
    with pytest.raises(ImageLoadError, match=r"expected a 2-D image"):
        read_image_array(tmp_path / "stack.npy")


def test_uploads_and_files_share_decoders():
    rgb = np.random.default_rng(1).integers(0, 255, (12, 9, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rgb)
    assert np.array_equal(load_image(EncodedImage(buffer.getvalue())), rgb)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="TIFF", compression="tiff_lzw")  # tifffile needs imagecodecs
    assert np.array_equal(load_image(EncodedImage(buffer.getvalue())), rgb)


def _tiff_with_tag(tag: int, field_type: int, count: int, value: bytes) -> bytes:
    """A small TIFF whose IFD entry ``tag`` is rewritten in place, as a damaged file would have it."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.arange(32 * 48, dtype=np.int16).reshape(32, 48))
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, entry)[0] == tag:
            struct.pack_into("<HHI4s", data, entry, tag, field_type, count, value)
            return bytes(data)
    raise AssertionError(f"no tag {tag} in the TIFF written by tifffile")


@pytest.mark.parametrize(
    "entry",
    [
        (256, 3, 2, struct.pack("<HH", 48, 48)),  # two widths: tifffile computes with a tuple (TypeError)
        (256, 3, 1, struct.pack("<HH", 0, 0)),  # width 0: tifffile divides by it (ZeroDivisionError)
    ],
)
def test_a_tiff_with_damaged_tags_is_an_image_load_error(tmp_path, entry):
    (tmp_path / "scan.tif").write_bytes(_tiff_with_tag(*entry))
    with pytest.raises(ImageLoadError, match=r"scan\.tif: not a readable TIFF image"):
        load_image(tmp_path / "scan.tif")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda data: data.replace(b"-1024.0", b"-1\xde24.0"), r"a damaged DICOM header \(could not convert"),
        (lambda data: data[:-100], "undecodable DICOM pixel data \\(The number of bytes of pixel data is less"),
        (lambda data: data[:400], "the DICOM file holds no pixel data"),
    ],
)
def test_a_damaged_dicom_image_is_an_image_load_error_naming_what_broke(tmp_path, damage, problem):
    stored = np.full((1, 40, 50), 1064, np.uint16)  # HU 40 through the intercept -1024
    folder = helper_module("data", "data_reader_helpers").write_dicom_series(tmp_path / "series", stored)
    good = (folder / "IM0000").read_bytes()
    assert np.allclose(read_image_array(EncodedImage(good, "slice.dcm")), 40.0)
    with pytest.raises(ImageLoadError, match=problem) as caught:
        read_image_array(EncodedImage(damage(good), "slice.dcm"))
    assert "slice.dcm" in str(caught.value)
