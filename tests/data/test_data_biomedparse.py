from __future__ import annotations

import numpy as np
import pytest
from data_reader_helpers import box_mask, rgb_image, write_png

from medseg_agent.data.biomedparse import parse_mask_name, read_biomedparse
from medseg_agent.data.readers import open_dataset, summarize_skipped


@pytest.fixture
def bp_dir(tmp_path):
    root = tmp_path / "amos_mini"
    # test split: one CT image with two targets, one plain-named MRI image
    write_png(root / "test" / "amos_0001_66_CT_abdomen.png", rgb_image(32, 40, 1))
    write_png(root / "test_mask" / "amos_0001_66_CT_abdomen_left+kidney.png", box_mask(32, 40))
    write_png(root / "test_mask" / "amos_0001_66_CT_abdomen_liver.png", box_mask(32, 40, (0, 0, 10, 10)))
    write_png(root / "test" / "case7.png", rgb_image(32, 40, 2)[:, :, 0])  # grayscale image
    write_png(root / "test_mask" / "case7_MRI-FLAIR_brain_lower-grade+glioma.png", box_mask(32, 40))
    # train split
    write_png(root / "train" / "covid_1_X-Ray_chest.png", rgb_image(20, 20, 3))
    write_png(root / "train_mask" / "covid_1_X-Ray_chest_COVID-19+infection.png", box_mask(20, 20, (2, 2, 8, 8)))
    return root


def test_reads_samples_with_targets_and_modalities(bp_dir):
    ds = read_biomedparse(bp_dir)
    samples = {s.sample_id: s for s in ds}
    assert set(samples) == {
        "amos_0001_66_CT_abdomen_left+kidney",
        "amos_0001_66_CT_abdomen_liver",
        "case7_MRI-FLAIR_brain_lower-grade+glioma",
        "covid_1_X-Ray_chest_COVID-19+infection",
    }
    kid = samples["amos_0001_66_CT_abdomen_left+kidney"]
    assert kid.target == "left kidney in abdomen CT"
    assert kid.modality == "CT" and kid.dataset == "amos_mini" and kid.split == "test"
    assert kid.image.shape == (32, 40, 3) and kid.image.dtype == np.uint8
    assert kid.mask.dtype == bool and kid.mask.sum() == 10 * 15
    assert kid.image_path.endswith("amos_0001_66_CT_abdomen.png")
    assert kid.meta["site"] == "abdomen" and kid.meta["target_name"] == "left kidney"
    # both masks of one image share it
    assert np.array_equal(kid.image, samples["amos_0001_66_CT_abdomen_liver"].image)
    glioma = samples["case7_MRI-FLAIR_brain_lower-grade+glioma"]
    assert glioma.modality == "MRI" and glioma.meta["sequence"] == "FLAIR"
    assert glioma.target == "lower-grade glioma in brain MRI-FLAIR"
    assert glioma.image.shape == (32, 40, 3)
    xr = samples["covid_1_X-Ray_chest_COVID-19+infection"]
    assert xr.modality == "X-Ray" and xr.split == "train" and xr.target == "COVID-19 infection in chest X-Ray"
    assert ds.skipped == []
    assert len(ds) == 4


def test_split_and_name_options(bp_dir):
    ds = read_biomedparse(bp_dir, split="train", name="AMOS")
    samples = list(ds)
    assert [s.split for s in samples] == ["train"] and samples[0].dataset == "AMOS"
    with pytest.raises(ValueError, match="no split"):
        read_biomedparse(bp_dir, split="val")


def test_problems_are_skipped_with_path_and_reason(bp_dir):
    t, m = bp_dir / "test", bp_dir / "test_mask"
    (t / "broken_CT_abdomen.png").write_bytes(b"not a png at all")
    write_png(m / "broken_CT_abdomen_liver.png", box_mask(32, 40))
    write_png(t / "small_CT_abdomen.png", rgb_image(16, 16))
    write_png(m / "small_CT_abdomen_spleen.png", box_mask(32, 40))  # shape mismatch
    write_png(t / "blank_CT_abdomen.png", rgb_image(32, 40))
    write_png(m / "blank_CT_abdomen_pancreas.png", np.zeros((32, 40), np.uint8))  # empty
    write_png(m / "orphan_CT_abdomen_aorta.png", box_mask(32, 40))  # no image
    (m / "badmask_CT_abdomen_liver.png").write_bytes(b"\x89PNG broken")
    write_png(t / "badmask_CT_abdomen.png", rgb_image(32, 40))
    write_png(t / "lonely_CT_abdomen.png", rgb_image(32, 40))  # image without mask

    ds = read_biomedparse(bp_dir)
    ids = {s.sample_id for s in ds}
    assert len(ids) == 4
    reasons = {s.sample_id: (s.reason, s.path) for s in ds.skipped}
    assert reasons["broken_CT_abdomen_liver"][0].startswith("unreadable image")
    assert reasons["broken_CT_abdomen_liver"][1].endswith("test/broken_CT_abdomen.png")
    assert "shape mismatch" in reasons["small_CT_abdomen_spleen"][0]
    assert "16x16" in reasons["small_CT_abdomen_spleen"][0]
    assert reasons["small_CT_abdomen_spleen"][1].endswith("small_CT_abdomen_spleen.png")
    assert reasons["blank_CT_abdomen_pancreas"][0].startswith("empty mask")
    assert reasons["blank_CT_abdomen_pancreas"][1].endswith("blank_CT_abdomen_pancreas.png")
    assert "no image" in reasons["orphan_CT_abdomen_aorta"][0]
    assert reasons["badmask_CT_abdomen_liver"][0].startswith("unreadable mask")
    assert "no mask" in reasons["lonely_CT_abdomen"][0]
    report = summarize_skipped(ds)
    assert "6 skipped" in report and "empty mask" in report and "blank_CT_abdomen_pancreas.png" in report
    # skipped is rebuilt (not duplicated) on a second pass
    list(ds)
    assert len(ds.skipped) == 6


def test_parse_mask_name_variants():
    images = {"amos_0001_66_CT_abdomen", "img7"}
    p = parse_mask_name("amos_0001_66_CT_abdomen_left+kidney", images)
    assert (p.image_stem, p.target, p.modality_token, p.site) == (
        "amos_0001_66_CT_abdomen",
        "left kidney",
        "CT",
        "abdomen",
    )
    p = parse_mask_name("img7_Ultrasound_breast_benign+tumor", images)
    assert (p.image_stem, p.target, p.modality_token, p.site) == ("img7", "benign tumor", "Ultrasound", "breast")
    assert parse_mask_name("nothing_CT_x_y", images) is None


def test_open_dataset_autodetects(bp_dir):
    ds = open_dataset(bp_dir)
    assert ds.format == "biomedparse" and len(ds.load()) == 4
