from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from data_reader_helpers import box_mask, rgb_image, write_dicom_series, write_png

from medseg_agent.data import Dataset, SkippedSample, open_dataset, summarize_skipped
from medseg_agent.data.readers import available_formats, detect_format, register_reader
from medseg_agent.vocabulary.sample import Sample


def _bp(root):
    write_png(root / "test" / "a_CT_abdomen.png", rgb_image())
    write_png(root / "test_mask" / "a_CT_abdomen_liver.png", box_mask())
    return root


def test_detect_every_layout(tmp_path):
    bp = _bp(tmp_path / "bp")
    # BiomedParse folders also carry test.json: the folder layout wins
    (bp / "test.json").write_text(json.dumps({"images": [], "annotations": []}))
    assert detect_format(bp) == ("biomedparse", bp)

    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "refs.json").write_text(json.dumps({"images": [], "annotations": []}))
    assert detect_format(coco) == ("json", coco / "refs.json")
    ds_json = tmp_path / "coco2"
    ds_json.mkdir()
    (ds_json / "dataset.json").write_text(json.dumps({"images": [], "annotations": []}))
    assert detect_format(ds_json) == ("json", ds_json / "dataset.json")

    man = tmp_path / "man"
    man.mkdir()
    (man / "list.csv").write_text("image,mask,target,modality\n")
    assert detect_format(man) == ("manifest", man / "list.csv")
    (man / "other.jsonl").write_text("")
    with pytest.raises(ValueError, match="several"):
        detect_format(man)
    assert detect_format(man / "other.jsonl") == ("manifest", man / "other.jsonl")

    vol = tmp_path / "vol"
    vol.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), vol / "x.nii.gz")
    assert detect_format(vol) == ("nifti", vol)
    assert detect_format(vol / "x.nii.gz") == ("nifti", vol / "x.nii.gz")
    msd = tmp_path / "msd"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "dataset.json").write_text(json.dumps({"labels": {"0": "bg"}, "training": []}))
    assert detect_format(msd) == ("nifti", msd)
    assert detect_format(msd / "dataset.json") == ("nifti", msd)

    dcm = write_dicom_series(tmp_path / "dcm", np.zeros((2, 4, 4), np.uint16))
    assert detect_format(dcm) == ("dicom", dcm)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="cannot detect"):
        detect_format(empty)
    with pytest.raises(FileNotFoundError):
        open_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown dataset format"):
        open_dataset(bp, format="hdf5")
    (tmp_path / "cut.json").write_text('{"annotations": [')  # a copy cut short
    with pytest.raises(ValueError, match=r"cut\.json is not valid JSON \(Expecting value"):
        detect_format(tmp_path / "cut.json")
    (tmp_path / "latin1.json").write_bytes(b'[{"target": "f\xe9mur"}]')
    with pytest.raises(ValueError, match=r"latin1\.json is not UTF-8 text \(byte 14 is 0xe9\)"):
        detect_format(tmp_path / "latin1.json")


def test_open_dataset_aliases_and_split(tmp_path):
    bp = _bp(tmp_path / "bp")
    assert len(open_dataset(bp, format="biomedparse").load()) == 1
    ds = open_dataset(tmp_path / "bp", split="test")
    assert all(s.split == "test" for s in ds)
    assert "auto" in available_formats() and "nifti" in available_formats()


def test_dataset_len_skipped_and_summary():
    img = np.zeros((4, 4, 3), np.uint8)
    mask = np.ones((4, 4), bool)

    def produce():
        yield Sample(img, mask, "t", "CT", "d", "s1")
        yield SkippedSample("s2", "/x/s2.png", "empty mask (no foreground pixels)")
        yield Sample(img, mask, "t", "CT", "d", "s3", split="train")
        yield SkippedSample("s4", "/x/s4.png", "unreadable image: OSError: truncated")

    ds = Dataset("d", produce, length_hint=4)
    assert len(ds) == 4 and not ds.complete
    report = summarize_skipped(ds)  # makes the pass itself
    assert ds.complete and len(ds) == 2
    assert "2 skipped" in report and "1 x empty mask" in report and "/x/s4.png" in report
    assert [s.sample_id for s in ds] == ["s1", "s3"] and len(ds.skipped) == 2
    only_train = Dataset("d", produce, split="train")
    assert [s.sample_id for s in only_train] == ["s3"]
    clean = Dataset("c", lambda: iter([Sample(img, mask, "t", "CT", "c", "a")]))
    assert summarize_skipped(clean) == "c: 1 samples, none skipped"


def test_register_reader(tmp_path):
    calls = {}

    def reader(path, split=None, **kw):
        calls["args"] = (path, split, kw)
        return Dataset("custom", lambda: iter(()))

    register_reader("custom", reader)
    ds = open_dataset(tmp_path, format="custom", split="val", foo=1)
    assert ds.name == "custom" and calls["args"] == (tmp_path, "val", {"foo": 1})
