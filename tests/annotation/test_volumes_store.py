"""Volumes shown slice by slice as the readers show them, a slice's mask saved on the source grid,
and saved sessions that ``trajectories export`` reads as training data."""

from __future__ import annotations

import json
import struct

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medseg_agent.annotation.episode import SharedEpisode
from medseg_agent.annotation.store import AnnotationStore
from medseg_agent.annotation.volumes import Contrast, Volume, VolumeOpenError, open_volume
from medseg_agent.cli.trajectories import trajectories_app
from medseg_agent.data.volumes import canonical, display_slice
from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import final_mask
from medseg_agent.experts.generate import load_generation
from medseg_agent.io.intensity import apply_window, percentile_range, rescale_to_uint8
from medseg_agent.io.masks import read_mask_png
from sibling_helpers import helper_module


def oblique_volume(ct: bool = False) -> nib.Nifti1Image:
    """A 3-D volume stored in LPI-like order (not RAS), with anisotropic voxels."""
    rng = np.random.default_rng(0)
    data = rng.normal(300 if not ct else -200, 80, (20, 24, 12)).astype(np.float32)
    data[5:12, 6:14, 3:9] += 400
    if ct:
        data[0, 0, 0] = -1000
    affine = np.array([[-0.8, 0, 0, 30], [0, -0.7, 0, 40], [0, 0, -2.5, 50], [0, 0, 0, 1]], dtype=float)
    return nib.Nifti1Image(data, affine)


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_a_slices_mask_goes_back_to_the_source_grid(axis):
    source = oblique_volume()
    volume = Volume(source, "case")
    index = volume.slices(axis) // 2
    h, w = volume.slice_size(axis)
    mask = np.zeros((h, w), dtype=bool)
    mask[1 : h // 2, 2 : w - 1] = True
    out = volume.mask_image(mask, axis, index)
    assert out.shape == source.shape and np.allclose(out.affine, source.affine)
    assert out.get_data_dtype() == np.uint8
    back = display_slice(np.asanyarray(canonical(out).dataobj), index, axis).astype(bool)
    assert np.array_equal(back, mask)
    assert int(np.asanyarray(out.dataobj).sum()) == int(mask.sum())
    round_trip = nib.Nifti1Image.from_bytes(out.to_bytes())
    assert np.allclose(round_trip.affine, source.affine)
    with pytest.raises(ValueError, match="does not match"):
        volume.mask_image(mask[:-1], axis, index)


def test_slices_share_the_readers_intensity_mapping():
    mri = Volume(oblique_volume(), "mri")
    assert mri.modality == "MRI" and mri.default_contrast() == Contrast()
    lo, hi = percentile_range(mri.data)
    expected = rescale_to_uint8(display_slice(mri.data, 4, "axial"), lo, hi)
    assert np.array_equal(mri.render("axial", 4)[:, :, 0], expected)
    narrow = mri.render("axial", 4, Contrast(percentiles=(2.0, 98.0)))
    assert not np.array_equal(narrow, mri.render("axial", 4))

    ct = Volume(oblique_volume(ct=True), "ct")
    assert ct.modality == "CT" and ct.default_contrast().window == "abdomen"
    raw = display_slice(ct.data, 3, "coronal")
    assert np.array_equal(ct.render("coronal", 3, Contrast(window="lung"))[:, :, 1], apply_window(raw, "lung"))
    assert np.array_equal(ct.render("coronal", 3, Contrast(window=(80, 40)))[:, :, 2], apply_window(raw, "brain"))
    assert Contrast(window="bone").describe() == {"mode": "window", "preset": "bone", "width": 1800.0,
                                                  "level": 400.0}
    with pytest.raises(ValueError, match="unknown CT window"):
        Contrast(window="kidney")
    with pytest.raises(ValueError, match="percentiles"):
        Contrast(percentiles=(90.0, 10.0))
    with pytest.raises(IndexError, match=r"slices 0\.\.11"):
        ct.render("axial", 12)


def test_open_volume_reads_nifti_and_dicom_and_names_bad_files(tmp_path):
    path = tmp_path / "case.nii.gz"
    nib.save(oblique_volume(), path)
    assert open_volume(path).shape == (20, 24, 12)
    stored = np.random.default_rng(1).integers(0, 2000, (5, 16, 12)).astype(np.uint16)
    folder = helper_module("data", "data_reader_helpers").write_dicom_series(tmp_path / "series", stored, modality="CT")
    series = open_volume(folder)
    assert series.modality == "CT" and series.slices("axial") == 5 and series.slice_size("axial") == (16, 12)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume")
    with pytest.raises(VolumeOpenError, match="broken.nii.gz"):
        open_volume(broken)
    with pytest.raises(VolumeOpenError, match="no such file"):
        open_volume(tmp_path / "missing.nii")


@pytest.mark.parametrize(
    ("offset", "fmt", "values", "problem"),
    [
        (46, "<h", (-13304,), "a side of fewer than 1 voxel"),  # dim[3] negative: nibabel memory-mapped -1 MB
        (70, "<h", (4096,), "data code 4096 not recognized"),  # datatype
    ],
)
def test_a_damaged_header_is_a_volume_open_error(tmp_path, offset, fmt, values, problem):
    data = bytearray(oblique_volume().to_bytes())
    struct.pack_into(fmt, data, offset, *values)
    (tmp_path / "scan.nii").write_bytes(bytes(data))
    with pytest.raises(VolumeOpenError, match=f"scan.nii: not a readable NIfTI volume or DICOM series: .*{problem}"):
        open_volume(tmp_path / "scan.nii")


def test_saved_sessions_export_as_sft_data(tmp_path, shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=8))
    episode = SharedEpisode(env, disc, shape_tool.set_image(disc.image), has_ground_truth=True)
    episode.person_box(50, 30, 110, 90)
    episode.person_point(60, 40, positive=False)
    episode.person_stop()
    store = AnnotationStore(tmp_path / "app")
    record = episode.annotated_record({"annotator": "ann"})
    first = store.save("ann/synthetic/disc-0/ep", disc, record, episode.mask, extra={"annotator": "ann"})
    again = store.save("ann/synthetic/disc-0/ep", disc, record, episode.mask)
    assert again.key == "ann/synthetic/disc-0/ep#2"
    assert np.array_equal(read_mask_png(first.mask), episode.mask)

    samples = load_generation(tmp_path / "app")
    assert [s.key for s in samples] == [first.key, again.key]
    loaded = samples[0].records[0]
    assert np.array_equal(final_mask(loaded), episode.mask)
    assert [t.actor for t in loaded.turns] == ["person", "person", "person"]
    assert loaded.meta["annotation"]["person_turns"] == 3

    out = tmp_path / "sft"
    result = CliRunner().invoke(trajectories_app, ["export", str(tmp_path / "app"), "--out", str(out), "-f",
                                                   "sharegpt", "--name", "people"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "people.sharegpt.json").read_text())
    assert len(rows) == 2
    replies = [m["content"] for m in rows[0]["messages"] if m["role"] == "assistant"]
    assert replies == [turn.raw_text for turn in loaded.turns]
    assert '"point_type": "negative"' in replies[1] and "stop_action" in replies[2]


def test_a_volume_slice_saves_as_nifti(tmp_path, shape_tool):
    from medseg_agent.vocabulary.sample import Sample

    volume = Volume(oblique_volume(), "case")
    image = volume.render("axial", 6)
    sample = Sample(image, np.zeros(image.shape[:2], bool), "bright block", "MRI", "volume", "case_axial006")
    env = SegmentationEnv(shape_tool, EpisodeConfig())
    episode = SharedEpisode(env, sample, shape_tool.set_image(image))
    episode.person_box(3, 3, 15, 10)
    saved = AnnotationStore(tmp_path).save(
        "k", sample, episode.annotated_record(), episode.mask, mask_volume=volume.mask_image(episode.mask, "axial", 6)
    )
    assert saved.mask.name.endswith(".nii.gz")
    written = nib.load(saved.mask)
    assert written.shape == volume.source_image.shape
    assert np.array_equal(display_slice(np.asanyarray(canonical(written).dataobj), 6, "axial") > 0, episode.mask)
