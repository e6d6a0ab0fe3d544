from __future__ import annotations

import json

import pytest
from data_reader_helpers import box_mask, rgb_image, write_png

from medseg_agent.data.json_annotations import read_json_annotations
from medseg_agent.data.readers import open_dataset


@pytest.fixture
def coco_dir(tmp_path):
    root = tmp_path / "evalset"
    write_png(root / "test" / "liver_12_CT_abdomen.png", rgb_image())
    write_png(root / "test_mask" / "liver_12_CT_abdomen_liver.png", box_mask())
    write_png(root / "test_mask" / "liver_12_CT_abdomen_liver+tumor.png", box_mask(box=(1, 1, 4, 4)))
    write_png(root / "images" / "polyp3.png", rgb_image(20, 30))
    write_png(root / "masks" / "polyp3_mask.png", box_mask(20, 30))
    data = {
        "images": [
            {"id": 0, "file_name": "liver_12_CT_abdomen.png", "height": 32, "width": 40},
            {"id": 1, "file_name": "polyp3.png"},
        ],
        "annotations": [
            {
                "id": 0,
                "image_id": 0,
                "mask_file": "liver_12_CT_abdomen_liver.png",
                "split": "test",
                "sentences": [{"raw": "liver in abdomen CT", "sent": "liver in abdomen CT", "sent_id": 0}],
            },
            {
                "id": 1,
                "image_id": 0,
                "mask_file": "liver_12_CT_abdomen_liver+tumor.png",
                "split": "test",
                "sentences": [{"sent": "liver tumor in liver CT"}],
                "spacing": [0.7, 0.7],
            },
            {
                "id": 2,
                "image_file": "images/polyp3.png",
                "mask_file": "masks/polyp3_mask.png",
                "sentences": ["neoplastic polyp in colon endoscope"],
                "modality": "endoscope",
            },
            {"id": 3, "image_id": 0, "mask_file": "missing.png", "split": "test", "sentences": [{"sent": "x"}]},
            {"id": 4, "image_id": 99, "mask_file": "liver_12_CT_abdomen_liver.png", "sentences": [{"sent": "y"}]},
            {"id": 5, "image_id": 0, "split": "test", "sentences": [{"sent": "no mask field"}]},
        ],
    }
    (root / "test.json").write_text(json.dumps(data))
    return root


def test_reads_refcoco_style_json(coco_dir):
    ds = read_json_annotations(coco_dir / "test.json")
    assert ds.name == "evalset" and len(ds) == 6
    samples = {s.sample_id: s for s in ds}
    assert set(samples) == {"liver_12_CT_abdomen_liver", "liver_12_CT_abdomen_liver+tumor", "polyp3_mask"}
    liver = samples["liver_12_CT_abdomen_liver"]
    assert liver.target == "liver in abdomen CT" and liver.modality == "CT" and liver.meta["site"] == "abdomen"
    assert liver.image.shape == (32, 40, 3) and liver.mask.sum() == 150
    assert samples["liver_12_CT_abdomen_liver+tumor"].spacing == (0.7, 0.7)
    polyp = samples["polyp3_mask"]
    assert polyp.modality == "Endoscope" and polyp.target == "neoplastic polyp in colon endoscope"
    assert polyp.image.shape == (20, 30, 3)
    reasons = sorted(s.reason for s in ds.skipped)
    assert len(reasons) == 3
    assert any(r == "mask file not found" for r in reasons)
    assert any("names no image" in r for r in reasons)
    assert any("no mask file field" in r for r in reasons)
    missing = next(s for s in ds.skipped if s.reason == "mask file not found")
    assert missing.path.endswith("test_mask/missing.png")


def test_bare_list_and_split_filter(tmp_path):
    write_png(tmp_path / "a.png", rgb_image())
    write_png(tmp_path / "a_m.png", box_mask())
    rows = [
        {"image": "a.png", "mask_file": "a_m.png", "text": "optic disc in retinal fundus", "split": "val"},
        {"image": "a.png", "mask_file": "a_m.png", "text": "optic cup in retinal fundus", "split": "test"},
    ]
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(rows))
    ds = open_dataset(path, split="val")
    assert ds.format == "json"
    samples = list(ds)
    assert len(samples) == 1 and samples[0].modality == "Fundus" and samples[0].split == "val"


def test_not_an_annotation_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"foo": 1}')
    with pytest.raises(ValueError):
        read_json_annotations(p)
    p.write_text("{broken")
    with pytest.raises(ValueError):
        read_json_annotations(p)


def test_fields_of_the_wrong_type_skip_their_annotation_naming_the_field(coco_dir):
    data = json.loads((coco_dir / "test.json").read_text())
    data["images"].append({"id": [7], "file_name": "liver_12_CT_abdomen.png"})  # an id nothing can refer to
    first = data["annotations"][0]
    data["annotations"] = [
        {**first, "id": 10, "image_id": 0.0},  # an exporter's float id still finds image 0
        {**first, "id": 11, "image_id": [0]},
        {**first, "id": 12, "modality": ["CT"]},
        {**first, "id": 13, "mask_file": {"path": "liver_12_CT_abdomen_liver.png"}},
        {**first, "id": 14, "site": 3},
        {**first, "id": 15, "split": "x" * 300},  # a folder name the file system cannot hold
    ]
    (coco_dir / "test.json").write_text(json.dumps(data))
    ds = read_json_annotations(coco_dir / "test.json")
    assert [s.meta["annotation_id"] for s in ds.load()] == [10]
    assert [skip.reason for skip in ds.skipped] == [
        "annotation #1 names no image (image_id [0])",
        "annotation #2: modality must be text, got list ['CT']",
        "annotation #3: mask file must be text, got dict {'path': 'liver_12_CT_abdomen_liver.png'}",
        "annotation #4: site must be text, got int 3",
        "unreadable image: cannot open: File name too long",
    ]
    data["images"] = 3
    (coco_dir / "test.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"test\.json: 'images' must be a list of image objects, got int"):
        read_json_annotations(coco_dir / "test.json")
