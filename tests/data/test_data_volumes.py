"""NIfTI / DICOM volume readers, and the radiological display orientation."""

from __future__ import annotations

import json
import struct

import nibabel as nib
import numpy as np
import pydicom
import pytest
from data_reader_helpers import write_dicom_series

from medseg_agent.data.readers import open_dataset
from medseg_agent.data.volumes import (
    MAX_VOXELS_ENV,
    VolumeError,
    display_slice,
    humanize_label,
    max_volume_voxels,
    read_dicom,
    read_dicom_series,
    read_label_names,
    read_nifti,
    slice_spacing,
)

# World (RAS mm) layout of the synthetic head: voxel (i, j, k) of the LPS grid below sits at
# x = 10 - i (x > 0: patient's right), y = 15 - j (y > 0: anterior), z = k (z > 0: superior).
SHAPE = (20, 30, 12)  # i (R->L), j (A->P), k (I->S)
LPS_AFFINE = np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 15], [0, 0, 2.0, 0], [0, 0, 0, 1]])


def _synthetic_lps():
    """Image + labels on an LPS grid: label 1 = LEFT-ANTERIOR marker (x<0, y>0) on slices 4..7;
    label 2 = RIGHT-SUPERIOR marker (x>0, z high)."""
    img = np.full(SHAPE, 10.0, np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    lab[14:18, 3:7, 4:8] = 1  # i 14..17 -> x -4..-7 (left); j 3..6 -> y 12..9 (anterior)
    lab[2:5, 12:18, 9:11] = 2  # i 2..4 -> x 8..6 (right); k 9..10 -> z 18..20 (superior)
    img[lab == 1] = 200.0
    img[lab == 2] = 100.0
    return img, lab


@pytest.fixture
def lps_pair(tmp_path):
    img, lab = _synthetic_lps()
    nib.save(nib.Nifti1Image(img, LPS_AFFINE), tmp_path / "head.nii.gz")
    nib.save(nib.Nifti1Image(lab, LPS_AFFINE), tmp_path / "head_seg.nii.gz")
    (tmp_path / "labels.txt").write_text("# value name\n1 Marker_L 9001\n2 Marker_R\n")
    return tmp_path


def _centroid(mask):
    r, c = np.nonzero(mask)
    return r.mean(), c.mean()


def test_display_slice_convention_on_ras_array():
    v = np.zeros((4, 5, 6))
    v[3, 4, 2] = 1  # most right (x high), most anterior (y high)
    axial = display_slice(v, 2, "axial")
    assert axial.shape == (5, 4)
    assert axial[0, 0] == 1  # anterior -> top row, patient right -> image left
    cor = display_slice(v, 4, "coronal")
    assert cor.shape == (6, 4) and cor[6 - 1 - 2, 0] == 1
    sag = display_slice(v, 3, "sagittal")
    assert sag.shape == (6, 5) and sag[6 - 1 - 2, 0] == 1  # anterior on the left
    assert slice_spacing((0.5, 0.7, 3.0), "axial") == (0.7, 0.5)
    assert slice_spacing((0.5, 0.7, 3.0), "coronal") == (3.0, 0.5)
    assert slice_spacing((0.5, 0.7, 3.0), "sagittal") == (3.0, 0.7)


def test_axial_orientation_radiological(lps_pair):
    ds = read_nifti(lps_pair / "head.nii.gz", modality="MRI")
    samples = [s for s in ds if s.meta["label_value"] == 1]
    assert len(samples) == 4 and ds.skipped == []
    s = samples[0]
    h, w = s.mask.shape
    assert (h, w) == (SHAPE[1], SHAPE[0])  # rows = A-P, cols = R-L
    r, c = _centroid(s.mask)
    assert r < h / 2, "anterior marker must be in the upper half"
    assert c > w / 2, "patient-left marker must be on the image's right"
    # the image shows the marker where the mask is
    assert s.image[s.mask].mean() > 200 and s.image[~s.mask].mean() < 60
    assert s.spacing == (1.0, 1.0)
    assert s.target == "left marker in MRI"  # names from labels.txt, humanised


def test_coronal_and_sagittal_orientation(lps_pair):
    cor = [s for s in read_nifti(lps_pair / "head.nii.gz", axis="coronal") if s.meta["label_value"] == 2]
    r, c = _centroid(cor[0].mask)
    h, w = cor[0].mask.shape
    assert (h, w) == (SHAPE[2], SHAPE[0]) and cor[0].spacing == (2.0, 1.0)
    assert r < h / 2 and c < w / 2  # superior at the top, patient right on the image's left
    sag = [s for s in read_nifti(lps_pair / "head.nii.gz", axis="sagittal") if s.meta["label_value"] == 1]
    r, c = _centroid(sag[0].mask)
    h, w = sag[0].mask.shape
    assert (h, w) == (SHAPE[2], SHAPE[1])
    assert c < w / 2  # anterior on the image's left


@pytest.mark.parametrize("codes", ["RAS", "LAS", "PSR", "SLA", "IPL"])
def test_any_storage_orientation_displays_the_same(tmp_path, codes):
    img, lab = _synthetic_lps()
    ref_img = nib.as_closest_canonical(nib.Nifti1Image(img, LPS_AFFINE))
    ref_lab = nib.as_closest_canonical(nib.Nifti1Image(lab, LPS_AFFINE))
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(codes))
    other_img, other_lab = ref_img.as_reoriented(ornt), ref_lab.as_reoriented(ornt)
    assert "".join(nib.aff2axcodes(other_img.affine)) == codes
    nib.save(other_img, tmp_path / "v.nii.gz")
    nib.save(other_lab, tmp_path / "v_seg.nii.gz")
    got = {(s.meta["slice_index"], s.meta["label_value"]): s for s in read_nifti(tmp_path / "v.nii.gz")}
    ref = np.asarray(ref_lab.dataobj)
    for (k, v), s in got.items():
        assert np.array_equal(s.mask, display_slice(ref, k, "axial") == v)
    k1 = next(k for k, v in got if v == 1)
    r, c = _centroid(got[(k1, 1)].mask)
    assert r < SHAPE[1] / 2 and c > SHAPE[0] / 2


def test_every_k_min_area_include_and_skips(lps_pair):
    ds = read_nifti(lps_pair / "head.nii.gz", every_k=2, include=[1])
    assert [s.meta["slice_index"] for s in ds] == [4, 6]
    ds = read_nifti(lps_pair / "head.nii.gz", min_area=17)
    assert {s.meta["label_value"] for s in ds} == {2}  # label 1 covers only 16 px per slice
    assert any("min_area" in s.reason for s in ds.skipped)
    with pytest.raises(ValueError):
        read_nifti(lps_pair / "head.nii.gz", axis="oblique")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"window": "garbage"}, "unknown CT window 'garbage'"),
        ({"window": "W0L40"}, "width"),
        ({"every_k": 0}, "every_k must be a whole number >= 1, got 0"),
        ({"every_k": 1.5}, "every_k must be a whole number >= 1, got 1.5"),
        ({"min_area": -5}, "min_area must be a whole number >= 1, got -5"),
        ({"split": "train"}, r"head\.nii\.gz has no split 'train' \(found: test\)"),
    ],
)
def test_a_slip_in_the_reader_options_is_refused_when_the_dataset_is_opened(lps_pair, options, problem):
    """Not at the first volume, mid-iteration, as a traceback (or, for a split, as an empty dataset)."""
    with pytest.raises(ValueError, match=problem):
        open_dataset(lps_pair / "head.nii.gz", **options)


def test_label_names_mapping_overrides_and_ct_window(tmp_path):
    hu = np.full((10, 12, 3), -1000.0, np.float32)
    hu[2:6, 2:8, :] = 40.0
    lab = np.zeros(hu.shape, np.int16)
    lab[2:6, 2:8, 1] = 5
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "ct_label.nii.gz")
    samples = read_nifti(tmp_path / "ct.nii.gz", labels={5: "Liver"}, site="abdomen").load()
    assert len(samples) == 1
    s = samples[0]
    assert s.modality == "CT" and s.meta["window"] == "abdomen"  # guessed from HU values
    assert s.target == "liver in abdomen CT"
    assert s.image[s.mask].min() >= 127 and s.image[~s.mask].max() == 0
    lung = read_nifti(tmp_path / "ct.nii.gz", window="lung").load()[0]
    assert abs(int(lung.image[lung.mask].max()) - 236) <= 1  # (40 + 1350) / 1500 * 255


def test_grid_mismatch_unreadable_and_missing(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 5, 4), np.uint8), np.eye(4)), tmp_path / "a_seg.nii.gz")
    ds = read_nifti(tmp_path / "a.nii.gz")
    assert ds.load() == [] and "does not match" in ds.skipped[0].reason
    assert ds.skipped[0].path.endswith("a_seg.nii.gz")
    (tmp_path / "b.nii.gz").write_bytes(b"garbage")
    ds = read_nifti(tmp_path / "b.nii.gz", label=tmp_path / "a_seg.nii.gz")
    assert ds.load() == [] and ds.skipped[0].reason.startswith("unreadable image volume")
    ds = read_nifti(tmp_path / "a.nii.gz", label=tmp_path / "nope.nii.gz")
    assert ds.load() == [] and ds.skipped[0].reason == "label volume not found"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), tmp_path / "c.nii.gz")
    ds = read_nifti(tmp_path / "a.nii.gz", label=tmp_path / "c.nii.gz")
    assert ds.load() == [] and "no foreground" in ds.skipped[0].reason
    with pytest.raises(ValueError, match="no label volume"):
        read_nifti(tmp_path / "c.nii.gz")
    with pytest.raises(TypeError):
        len(read_nifti(tmp_path / "a.nii.gz"))


def test_volumes_cut_short_are_skipped_naming_the_file_and_the_rest_are_read(tmp_path):
    image, label = _synthetic_lps()
    whole = nib.Nifti1Image(image, LPS_AFFINE).to_bytes()
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for case in ("good", "short", "shortgz", "shortlabel", "claims"):
        nib.save(nib.Nifti1Image(label, LPS_AFFINE), tmp_path / "labelsTr" / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image(image, LPS_AFFINE), tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
    (tmp_path / "imagesTr" / "short_0000.nii.gz").unlink()
    (tmp_path / "imagesTr" / "short_0000.nii").write_bytes(whole[: len(whole) // 2])
    gz = (tmp_path / "imagesTr" / "shortgz_0000.nii.gz").read_bytes()
    (tmp_path / "imagesTr" / "shortgz_0000.nii.gz").write_bytes(gz[: len(gz) // 2])
    labels = nib.Nifti1Image(label, LPS_AFFINE).to_bytes()
    (tmp_path / "labelsTr" / "shortlabel.nii.gz").unlink()
    (tmp_path / "labelsTr" / "shortlabel.nii").write_bytes(labels[:-10])
    header = nib.Nifti1Header()  # a damaged header: 1 GB of voxels, which nibabel would allocate first
    header.set_data_shape((1000, 1000, 500))
    header.set_data_dtype(np.int16)
    (tmp_path / "imagesTr" / "claims_0000.nii.gz").unlink()
    (tmp_path / "imagesTr" / "claims_0000.nii").write_bytes(header.binaryblock + bytes(4) + whole[352:1000])

    ds = open_dataset(tmp_path)
    samples = ds.load()
    assert {s.meta["case_id"] for s in samples} == {"good"} and len(samples) == 6
    reasons = {skip.sample_id: (skip.reason, skip.path) for skip in ds.skipped}
    assert set(reasons) == {"short", "shortgz", "shortlabel", "claims"}
    reason, path = reasons["short"]
    assert reason.startswith("unreadable image volume") and "short_0000.nii holds" in reason
    assert "describes a 20x30x12 float32 volume" in reason and path.endswith("short_0000.nii")
    assert reasons["shortgz"][0].startswith("unreadable image volume: EOFError")
    assert reasons["shortlabel"][0].startswith("unreadable label volume") and "truncated" in reasons["shortlabel"][0]
    claims = reasons["claims"][0]
    assert "holds 1000 bytes, but its header describes a 1000x1000x500 int16 volume needing 1000000000" in claims


def test_volumes_over_the_voxel_limit_are_skipped_from_their_header(tmp_path, monkeypatch):
    image, label = _synthetic_lps()  # 20 x 30 x 12 = 7,200 voxels
    nib.save(nib.Nifti1Image(image, LPS_AFFINE), tmp_path / "head.nii.gz")
    nib.save(nib.Nifti1Image(label, LPS_AFFINE), tmp_path / "head_seg.nii.gz")
    write_dicom_series(tmp_path / "series", np.zeros((12, 30, 20), np.uint16))
    assert max_volume_voxels() == 1 << 30 and read_nifti(tmp_path / "head.nii.gz").load()
    monkeypatch.setenv(MAX_VOXELS_ENV, "7000")
    ds = read_nifti(tmp_path / "head.nii.gz")
    assert ds.load() == [] and ds.skipped[0].reason == (
        "unreadable image volume: VolumeError: head.nii.gz describes a 20x30x12 volume of 7,200 voxels, over the "
        f"limit of 7,000; raise {MAX_VOXELS_ENV} if the volume is genuine")
    with pytest.raises(VolumeError, match=r"series describes a 20x30x12 volume of 7,200 voxels"):
        read_dicom_series(tmp_path / "series")
    monkeypatch.setenv(MAX_VOXELS_ENV, "many")
    with pytest.raises(ValueError, match=f"{MAX_VOXELS_ENV}='many' is not a positive whole number of voxels"):
        max_volume_voxels()


def _with_header_fields(image: nib.Nifti1Image, fields: dict[int, tuple[str, tuple]]) -> bytes:
    """The image as .nii bytes with header fields (byte offset -> struct format, values) overwritten."""
    data = bytearray(image.to_bytes())
    for offset, (fmt, values) in fields.items():
        struct.pack_into(fmt, data, offset, *values)
    return bytes(data)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({46: ("<h", (-13304,))}, "describes a 20x30x-13304 volume: a side of fewer than 1 voxel"),  # dim[3]
        ({70: ("<h", (4096,))}, "HeaderDataError: data code 4096 not recognized"),  # datatype
        ({252: ("<hh", (0, 1)), 280: ("<12f", (0.0,) * 12)}, "VolumeError: the voxel-to-world matrix"),  # sform
    ],
)
def test_a_damaged_nifti_header_skips_its_case_naming_the_field(tmp_path, fields, reason):
    image, label = _synthetic_lps()
    (tmp_path / "head.nii").write_bytes(_with_header_fields(nib.Nifti1Image(image, LPS_AFFINE), fields))
    nib.save(nib.Nifti1Image(label, LPS_AFFINE), tmp_path / "head_seg.nii.gz")
    ds = read_nifti(tmp_path / "head.nii", label=tmp_path / "head_seg.nii.gz")
    assert ds.load() == [] and len(ds.skipped) == 1
    assert ds.skipped[0].reason.startswith("unreadable image volume") and reason in ds.skipped[0].reason


@pytest.mark.parametrize(
    ("description", "problem"),
    [
        ('{"labels": {"1": "marker"}, "training": [', r"dataset\.json is not valid JSON \(Expecting value"),
        ({"labels": {"1": "marker"}, "training": [{"image": ["a.nii.gz"], "label": "b.nii.gz"}]},
         r"dataset\.json: training\[0\] must be \{\"image\": path, \"label\": path\}"),
        ({"labels": {"1": "marker"}, "training": [{"image": "./imagesTr/head_001.nii.gz",
                                                    "label": "./labelsTr/head_001.nii.gz"}, "head_002"]},
         r"training\[1\] must be .*got head_002"),
        ({"labels": ["background", "marker"]}, r"its 'labels' cannot be read as \{value: name\}: label mapping"),
        ('{"labels": {"background": 0, "marker": Infinity}}',
         r"its 'labels' cannot be read .*label 'marker' has the value inf"),
    ],
)
def test_a_damaged_msd_description_is_named_not_ignored(tmp_path, description, problem):
    img, lab = _synthetic_lps()
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(img, LPS_AFFINE), tmp_path / "imagesTr" / "head_001.nii.gz")
    nib.save(nib.Nifti1Image(lab, LPS_AFFINE), tmp_path / "labelsTr" / "head_001.nii.gz")
    text = description if isinstance(description, str) else json.dumps(description)
    (tmp_path / "dataset.json").write_text(text)  # read silently as if absent, label names lost, before
    with pytest.raises(ValueError, match=problem):
        open_dataset(tmp_path, format="nifti")


def test_msd_and_nnunet_folders(tmp_path):
    img, lab = _synthetic_lps()
    msd = tmp_path / "Task99_Head"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(img, LPS_AFFINE), msd / "imagesTr" / "head_001.nii.gz")
    nib.save(nib.Nifti1Image(lab, LPS_AFFINE), msd / "labelsTr" / "head_001.nii.gz")
    (msd / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Head",
                "modality": {"0": "MRI"},
                "labels": {"0": "background", "1": "marker", "2": "other"},
                "training": [{"image": "./imagesTr/head_001.nii.gz", "label": "./labelsTr/head_001.nii.gz"}],
                "test": [],
            }
        )
    )
    ds = open_dataset(msd)
    assert ds.format == "nifti" and ds.name == "Head"
    samples = ds.load()
    assert {s.target for s in samples} == {"marker in MRI", "other in MRI"}
    assert {s.split for s in samples} == {"train"}
    assert len(ds) == len(samples)

    nn = tmp_path / "Dataset001_Head"
    (nn / "imagesTs").mkdir(parents=True)
    (nn / "labelsTs").mkdir()
    nib.save(nib.Nifti1Image(img, LPS_AFFINE), nn / "imagesTs" / "head_002_0000.nii.gz")
    nib.save(nib.Nifti1Image(lab, LPS_AFFINE), nn / "labelsTs" / "head_002.nii.gz")
    (nn / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "marker": 1, "other": 2},
                "file_ending": ".nii.gz",
            }
        )
    )
    ds = open_dataset(nn, split="test")
    samples = ds.load()
    assert samples and all(s.modality == "CT" and s.split == "test" for s in samples)
    assert samples[0].meta["case_id"] == "head_002"


def test_read_label_names_formats(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text('1 Hippocampus_L 4101\n2: right kidney\n3,IVC\n  4   255 0 0  1 1 1  "Left-Lateral-Ventricle"\n')
    assert read_label_names(p) == {1: "Hippocampus_L", 2: "right kidney", 3: "IVC", 4: "Left-Lateral-Ventricle"}
    j = tmp_path / "l.json"
    j.write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    assert read_label_names(j) == {0: "background", 1: "liver"}
    assert humanize_label("Hippocampus_L") == "left hippocampus"
    assert humanize_label("Left-Lateral-Ventricle") == "left lateral ventricle"
    assert humanize_label("IVC") == "IVC"
    assert humanize_label("right kidney") == "right kidney"
    for value in ("Infinity", "1.5"):  # Infinity was an OverflowError out of every reader, 1.5 silently label 1
        j.write_text(f'{{"labels": {{"background": 0, "liver": {value}}}}}')
        with pytest.raises(ValueError, match=f"label 'liver' has the value {value.lower().replace('infinity', 'inf')}"):
            read_label_names(j)


# ------------------------------------------------------------------------------------ DICOM


def _dicom_volume():
    """Stored values (slices, rows, cols) with intercept -1024: background HU 0, bone marker HU
    1000 at rows 1..3 (anterior), cols 15..18 (patient left) of slices 2..3."""
    vol = np.full((5, 16, 20), 1024, np.uint16)
    vol[2:4, 1:4, 15:19] = 2024
    lab = np.zeros((5, 16, 20), np.uint16)
    lab[2:4, 1:4, 15:19] = 1
    return vol, lab


def test_dicom_series_sorted_rescaled_and_oriented(tmp_path):
    vol, lab = _dicom_volume()
    order = [3, 0, 4, 1, 2]  # file order unrelated to geometry
    write_dicom_series(tmp_path / "ct", vol, order=order)
    write_dicom_series(tmp_path / "seg", lab, intercept=0, order=[4, 3, 2, 1, 0])
    (tmp_path / "ct" / "notes.txt").write_text("not dicom")
    img, info = read_dicom_series(tmp_path / "ct")
    assert info["modality"] == "CT" and info["n_files"] == 5 and info["ignored"] == 1
    assert "".join(nib.aff2axcodes(img.affine)) == "LPS"
    data = np.asanyarray(img.dataobj)
    assert data.shape == (20, 16, 5)
    assert data[16, 2, 2] == 1000.0 and data[0, 0, 0] == 0.0  # rescaled to HU, sorted by position
    np.testing.assert_allclose(img.header.get_zooms()[:3], (0.7, 0.8, 2.5))

    ds = read_dicom(tmp_path / "ct", label=tmp_path / "seg", labels={1: "bone marker"})
    samples = ds.load()
    assert [s.meta["slice_index"] for s in samples] == [2, 3] and ds.skipped == []
    s = samples[0]
    assert s.modality == "CT" and s.target == "bone marker in CT"
    assert s.mask.shape == (16, 20) and s.spacing == (0.8, 0.7)
    r, c = _centroid(s.mask)
    assert r < 8 and c > 10  # anterior up, patient left on the image's right
    assert s.image[s.mask].min() == 255  # HU 1000 saturates the abdomen window
    assert abs(int(s.image[~s.mask].max()) - 102) <= 1  # HU 0 -> (0 + 160) / 400 * 255


def test_a_dicom_series_with_a_slice_missing_or_cut_short_is_refused_naming_it(tmp_path):
    vol, _ = _dicom_volume()
    write_dicom_series(tmp_path / "gap", vol)  # files IM0000..IM0004 from the lowest slice up
    (tmp_path / "gap" / "IM0002").write_bytes(b"not a DICOM file any more")
    with pytest.raises(VolumeError, match=r"not evenly spaced: 5 mm between IM0001 and IM0003, 2\.5 mm between the "
                                          r"others; is a slice missing\? \(1 file\(s\) in the folder are not"):
        read_dicom_series(tmp_path / "gap")
    (tmp_path / "gap" / "IM0002").unlink()
    with pytest.raises(VolumeError, match=r"5 mm between IM0001 and IM0003, 2\.5 mm between the others; is a slice "
                                          r"missing\?$"):
        read_dicom_series(tmp_path / "gap")
    write_dicom_series(tmp_path / "cut", vol)
    whole = (tmp_path / "cut" / "IM0003").read_bytes()
    (tmp_path / "cut" / "IM0003").write_bytes(whole[:-100])
    with pytest.raises(VolumeError, match=r"IM0003 in .*cut: unreadable pixel data: The number of bytes"):
        read_dicom_series(tmp_path / "cut")
    rounded = [-10.0, -7.5, -4.98, -2.5, 0.0]  # positions rounded by a scanner are still one step
    write_dicom_series(tmp_path / "rounded", vol)
    for k, z in enumerate(rounded):
        _set_position(tmp_path / "rounded" / f"IM{k:04d}", z)
    assert read_dicom_series(tmp_path / "rounded")[0].shape == (20, 16, 5)


def test_each_dicom_slice_is_rescaled_by_its_own_slope_and_intercept(tmp_path):
    hu = np.full((5, 16, 20), 40.0)  # the same tissue on every slice, stored differently per slice
    write_dicom_series(tmp_path / "ct", np.zeros((5, 16, 20), np.uint16))
    for k, (slope, intercept) in enumerate([(1.0, -1024.0), (2.0, -2048.0), (0.5, -512.0), (1.0, 0.0), (4.0, -1000.0)]):
        ds = pydicom.dcmread(tmp_path / "ct" / f"IM{k:04d}")
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.round((hu[k] - intercept) / slope).astype(np.uint16).tobytes()
        ds.save_as(tmp_path / "ct" / f"IM{k:04d}")
    data = np.asanyarray(read_dicom_series(tmp_path / "ct")[0].dataobj)
    assert np.allclose(data, 40.0)


def test_a_damaged_dicom_element_names_its_file(tmp_path):
    vol, _ = _dicom_volume()
    write_dicom_series(tmp_path / "ct", vol)
    ds = pydicom.dcmread(tmp_path / "ct" / "IM0003")
    ds.ImagePositionPatient = [1.0, 2.0]  # two coordinates
    ds.save_as(tmp_path / "ct" / "IM0003")
    with pytest.raises(VolumeError, match=r"IM0003: ImagePositionPatient must be 3 finite number\(s\), got \[1"):
        read_dicom_series(tmp_path / "ct")
    write_dicom_series(tmp_path / "again", vol)
    ds = pydicom.dcmread(tmp_path / "again" / "IM0003")
    del ds.BitsAllocated
    ds.save_as(tmp_path / "again" / "IM0003")
    with pytest.raises(VolumeError, match=r"IM0003 in .*again: unreadable pixel data: .*Bits Allocated"):
        read_dicom_series(tmp_path / "again")


def _set_position(path, z):
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z]
    ds.save_as(path)


def test_dicom_with_nifti_and_npy_labels(tmp_path):
    vol, lab = _dicom_volume()
    write_dicom_series(tmp_path / "ct", vol)
    img, _ = read_dicom_series(tmp_path / "ct")
    lab_xyz = np.transpose(lab, (2, 1, 0)).astype(np.uint8)
    nib.save(nib.Nifti1Image(lab_xyz, img.affine), tmp_path / "seg.nii.gz")
    np.save(tmp_path / "seg.npy", lab_xyz)
    for label in ("seg.nii.gz", "seg.npy"):
        samples = read_dicom(tmp_path / "ct", label=tmp_path / label, window="bone").load()
        assert len(samples) == 2, label
        r, c = _centroid(samples[0].mask)
        assert r < 8 and c > 10
    np.save(tmp_path / "bad.npy", np.zeros((3, 3, 3)))
    ds = read_dicom(tmp_path / "ct", label=tmp_path / "bad.npy")
    assert ds.load() == [] and "differs from image volume" in ds.skipped[0].reason


def test_dicom_case_folders_autodetected(tmp_path):
    vol, lab = _dicom_volume()
    root = tmp_path / "cases"
    write_dicom_series(root / "patient1" / "image", vol, modality="MR", intercept=0)
    write_dicom_series(root / "patient1" / "label", lab, intercept=0)
    (root / "patient2" / "image").mkdir(parents=True)
    (root / "patient2" / "image" / "x.dcm").write_bytes(b"junk")
    (root / "patient2" / "label.nii.gz").write_bytes(b"junk")
    ds = open_dataset(root)
    assert ds.format == "dicom"
    samples = ds.load()
    assert len(samples) == 2 and samples[0].modality == "MRI"
    assert len(ds.skipped) == 1 and ds.skipped[0].sample_id == "patient2"
    assert "unreadable image volume" in ds.skipped[0].reason or "no DICOM" in ds.skipped[0].reason
