from __future__ import annotations

import json

import numpy as np
import pytest
from data_reader_helpers import box_mask, rgb_image, write_png

from medseg_agent.data.manifest import read_manifest
from medseg_agent.data.readers import open_dataset


@pytest.fixture
def files(tmp_path):
    write_png(tmp_path / "img" / "a.png", rgb_image())
    write_png(tmp_path / "msk" / "a.png", box_mask())
    write_png(tmp_path / "img" / "small.png", rgb_image(10, 10))
    write_png(tmp_path / "msk" / "empty.png", np.zeros((32, 40), np.uint8))
    labels = np.zeros((32, 40), np.uint8)
    labels[0:4, 0:4] = 1
    labels[10:20, 10:20] = 2
    write_png(tmp_path / "msk" / "multi.png", labels)
    hu = np.full((32, 40), -1000, np.int16)
    hu[8:24, 8:32] = 40
    np.save(tmp_path / "img" / "ct.npy", hu)
    return tmp_path


def test_csv_manifest(files):
    (files / "manifest.csv").write_text(
        "image,mask,target,modality,dataset,split,sample_id,spacing,label,window\n"
        "img/a.png,msk/a.png,left kidney in abdomen CT,CT,kits,test,s1,0.8x0.8,,\n"
        "img/a.png,msk/multi.png,tumor,MRI,brats,train,s2,0.5,2,\n"
        "img/ct.npy,msk/a.png,liver,CT,,test,s3,,,abdomen\n"
        "img/small.png,msk/a.png,x,CT,,test,s4,,,\n"
        "img/a.png,msk/empty.png,x,CT,,test,s5,,,\n"
        "img/gone.png,msk/a.png,x,CT,,test,s6,,,\n"
        "img/a.png,msk/a.png,,CT,,test,s7,,,\n"
        "img/a.png,msk/a.png,x,CT,,test,s8,abc,,\n"
    )
    ds = read_manifest(files / "manifest.csv")
    assert len(ds) == 8
    samples = {s.sample_id: s for s in ds}
    assert set(samples) == {"s1", "s2", "s3"}
    s1 = samples["s1"]
    assert s1.spacing == (0.8, 0.8) and s1.dataset == "kits" and s1.modality == "CT"
    assert s1.target == "left kidney in abdomen CT" and s1.image_path.endswith("img/a.png")
    s2 = samples["s2"]
    assert s2.mask.sum() == 100 and s2.split == "train" and s2.spacing == (0.5, 0.5)
    s3 = samples["s3"]
    assert s3.dataset == files.name
    assert s3.image[0, 0, 0] == 0 and abs(int(s3.image[10, 10, 0]) - 128) <= 1  # HU 40 at abdomen level
    reasons = {s.sample_id: s.reason for s in ds.skipped}
    assert "shape mismatch" in reasons["s4"]
    assert reasons["s5"].startswith("empty mask")
    assert reasons["s6"] == "image file not found"
    assert "empty target" in reasons["s7"]
    assert "spacing" in reasons["s8"]
    assert len(list(read_manifest(files / "manifest.csv", split="train"))) == 1


def test_jsonl_and_json_manifests(files):
    rows = [
        {"image": "img/a.png", "mask": "msk/a.png", "target": "liver", "modality": "CT", "spacing": [1.5, 1.0]},
        {"image": "img/a.png", "mask": "msk/a.png", "target": "liver", "modality": "ultrasound"},
    ]
    (files / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n{not json\n")
    ds = open_dataset(files / "rows.jsonl")
    assert ds.format == "manifest"
    samples = list(ds)
    assert [s.spacing for s in samples] == [(1.5, 1.0), None]
    assert samples[1].modality == "Ultrasound"
    assert len(ds.skipped) == 1 and "not valid JSON" in ds.skipped[0].reason
    (files / "samples.json").write_text(json.dumps({"samples": rows}))
    assert len(open_dataset(files / "samples.json").load()) == 2


def test_missing_required_column(files):
    (files / "bad.csv").write_text("image,mask,target\nimg/a.png,msk/a.png,x\n")
    with pytest.raises(ValueError, match="modality"):
        read_manifest(files / "bad.csv")


def test_a_path_the_file_system_cannot_hold_skips_its_row(files):
    too_long = "x" * 300 + ".png"  # longer than a file name may be (255 bytes on Linux)
    rows = [
        {"image": too_long, "mask": "msk/a.png", "target": "liver", "modality": "CT"},
        {"image": "img/a.png", "mask": too_long, "target": "liver", "modality": "CT"},
        {"image": "img/a.png", "mask": "msk/a.png", "target": "liver", "modality": "CT"},
    ]
    (files / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = read_manifest(files / "rows.jsonl")
    assert [s.sample_id for s in ds.load()] == ["a"]
    assert len(ds.skipped) == 2 and all("File name too long" in skip.reason for skip in ds.skipped)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("window", 400, "CT window is a preset name"),
        ("window", [400, 40, 1], "CT window is a preset name"),
        ("window", "bright", "unknown CT window 'bright'"),
        ("label", 1.5, "label 1.5 is not a whole number"),
        ("label", True, "label True is not a whole number"),
        ("label", float("inf"), "label inf is not a whole number"),
    ],
)
def test_a_row_with_a_bad_window_or_label_is_skipped_naming_its_row(files, field, value, reason):
    rows = [
        {"image": "img/ct.npy", "mask": "msk/a.png", "target": "liver", "modality": "CT", field: value},
        {"image": "img/ct.npy", "mask": "msk/a.png", "target": "liver", "modality": "CT", "window": [400, 40]},
    ]
    (files / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = read_manifest(files / "rows.jsonl")
    assert len(ds.load()) == 1
    assert len(ds.skipped) == 1 and ds.skipped[0].reason.startswith("row 1: ") and reason in ds.skipped[0].reason


def test_a_manifest_saved_by_excel_as_unicode_text_is_read(files):
    rows = "image\tmask\ttarget\tmodality\nimg/a.png\tmsk/a.png\tfémur\tCT\n"
    (files / "excel.tsv").write_bytes(rows.encode("utf-16"))  # UTF-16 with its byte-order mark
    [sample] = read_manifest(files / "excel.tsv").load()
    assert sample.target == "fémur" and sample.modality == "CT"


def test_a_csv_excel_saved_with_semicolons_is_read(files):
    (files / "europe.csv").write_text(
        "image;mask;target;modality;site\n"
        'img/a.png;msk/a.png;"kidney; left";CT;abdomen, upper\n'
    )
    [sample] = read_manifest(files / "europe.csv").load()
    assert sample.target == "kidney; left" and sample.modality == "CT" and sample.meta["site"] == "abdomen, upper"
