"""The annotation app's HTTP API on a live server: opening images and volumes, episodes a person
and an agent share, saving, and the errors each endpoint documents."""

from __future__ import annotations

import gzip
import io
import json

import cv2
import httpx
import nibabel as nib
import numpy as np
import pytest
import schemathesis
import tifffile
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance
from serving_helpers import AUTH, TOKEN, blob_sample

from medseg_agent.annotation.library import Library, LibraryVolume
from medseg_agent.data.volumes import canonical, display_slice
from medseg_agent.experts.generate import load_generation
from medseg_agent.io.masks import decode_rle, read_mask_png
from medseg_agent.serving.app import create_app
from medseg_agent.serving.app_api import install_app
from medseg_agent.serving.app_state import AppConfig
from medseg_agent.serving.config import ServerConfig
from medseg_agent.serving.server import BackgroundServer
from medseg_agent.tools.registry import build_tool
from scripted_chat import scripted_chat_server
from sibling_helpers import helper_module

pytestmark = pytest.mark.slow


def volume_file(path):
    rng = np.random.default_rng(3)
    data = rng.normal(100, 20, (40, 48, 16)).astype(np.float32)
    data[10:30, 12:36, 4:12] += 150
    nib.save(nib.Nifti1Image(data, np.diag([-0.9, 0.9, 3.0, 1.0])), path)
    return path


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    library = Library([blob_sample(seed=11)], [LibraryVolume(volume_file(root / "vol.nii.gz"), "phantom", "block")])
    app = create_app(build_tool("classic"), ServerConfig(token=TOKEN))
    install_app(app, AppConfig(out_dir=root / "out", library=library, annotator="team"))
    with BackgroundServer(app) as server:
        server.out = root / "out"
        yield server


@pytest.fixture
def client(app_server):
    with httpx.Client(base_url=app_server.url, headers=AUTH, timeout=60) as http:
        yield http


def png_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def open_library(client, kind: str) -> dict:
    entry = next(e for e in client.get("/v1/app/library").json() if e["kind"] == kind)
    answer = client.post(f"/v1/app/library/{entry['entry_id']}/open")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_page_and_the_api_need_the_token(app_server):
    page = httpx.get(f"{app_server.url}/app/")
    assert page.status_code == 200 and "medseg-agent annotator" in page.text
    assert httpx.get(f"{app_server.url}/app/app.js").status_code == 200
    assert httpx.get(f"{app_server.url}/", follow_redirects=False).headers["location"] == "/app/"
    assert httpx.get(f"{app_server.url}/v1/app/info").status_code == 401
    info = httpx.get(f"{app_server.url}/v1/app/info", headers=AUTH).json()
    assert info["tool"] == "classic" and info["annotator"] == "team" and info["library_size"] == 2
    assert "lung" in info["window_presets"]
    paths = httpx.get(f"{app_server.url}/openapi.json").json()["paths"]
    for path in ("/v1/app/open", "/v1/app/episodes", "/v1/app/episodes/{episode_id}/agent",
                 "/v1/app/volumes/{volume_id}/slice", "/v1/app/images/{image_id}.png"):
        assert path in paths


def test_a_person_segments_a_library_sample_and_saves(client, app_server):
    opened = open_library(client, "image")
    assert opened["has_reference"] and opened["target"] == "bright blob"
    image = cv2.imdecode(np.frombuffer(client.get(f"/v1/app/images/{opened['image_id']}.png").content, np.uint8), 1)
    assert image.shape == (opened["height"], opened["width"], 3)
    assert client.post("/v1/app/episodes", json={"image_id": opened["image_id"], "target": ""}).status_code == 422
    created = client.post("/v1/app/episodes", json={"image_id": opened["image_id"], "target": "bright blob",
                                                   "annotator": "ann.1"})
    assert created.status_code == 201, created.text
    episode = created.json()
    eid = episode["episode_id"]
    assert episode["turns"] == [] and episode["annotator"] == "ann.1" and not episode["can_undo"]
    assert episode["stop_reason"] is None and not episode["done"]

    boxed = client.post(f"/v1/app/episodes/{eid}/box", json={"box": [30, 20, 100, 80]}).json()
    assert boxed["turns"][0]["actor"] == "person" and boxed["turns"][0]["name"] == "add_bbox"
    pixels = boxed["turns"][0]["action_pixels"]  # the box back in pixels, through the 0-999 grid
    assert pixels["name"] == "add_bbox" and pixels["arguments"]["bbox_2d"] == pytest.approx([30, 20, 100, 80], abs=0.5)
    assert boxed["mask_area"] > 0 and boxed["turns"][0]["iou"] is not None and boxed["score"] is not None
    inside = np.argwhere(decode_rle(boxed["mask"]))[0]
    clicked = client.post(f"/v1/app/episodes/{eid}/point",
                          json={"point": [float(inside[1]), float(inside[0])], "positive": False}).json()
    assert clicked["prompt"]["labels"] == [0] and not decode_rle(clicked["mask"])[inside[0], inside[1]]
    undone = client.post(f"/v1/app/episodes/{eid}/undo").json()
    assert undone["mask"] == boxed["mask"] and undone["can_redo"] and len(undone["turns"]) == 1
    redone = client.post(f"/v1/app/episodes/{eid}/redo").json()
    assert redone["mask"] == clicked["mask"]
    assert client.post(f"/v1/app/episodes/{eid}/redo").status_code == 409
    assert client.post(f"/v1/app/episodes/{eid}/point", json={"point": [500, 5]}).status_code == 422
    # the tool server's number rule: JSON true is not 1 (nor is NaN a coordinate)
    for body in ('{"point": [true, 5]}', '{"box": [NaN, 2, 30, 12]}'):
        refused = client.post(f"/v1/app/episodes/{eid}/{'point' if 'point' in body else 'box'}", content=body,
                              headers={"Content-Type": "application/json"})
        assert refused.status_code == 422 and "coordinates must hold" in refused.json()["detail"], refused.text

    saved = client.post(f"/v1/app/episodes/{eid}/save").json()
    assert saved["done"] and saved["turns"][-1]["name"] == "stop_action" and saved["turns"][-1]["actor"] == "person"
    assert client.post(f"/v1/app/episodes/{eid}/point", json={"point": [5, 5]}).status_code == 409
    files = saved["saved"][0]
    assert files["mask_format"] == "png" and files["key"].startswith("ann.1/synthetic/blob-11/")
    mask = read_mask_png(app_server.out / files["mask"])
    assert np.array_equal(mask, decode_rle(saved["mask"]))
    downloaded = client.get(f"/v1/app/episodes/{eid}/mask?format=png")
    assert np.array_equal(cv2.imdecode(np.frombuffer(downloaded.content, np.uint8), 0) > 0, mask)
    record = client.get(f"/v1/app/episodes/{eid}/record").json()
    assert [t["actor"] for t in record["turns"]] == ["person", "person", "person"]
    assert record["meta"]["annotation"]["annotator"] == "ann.1"
    stored = [s for s in load_generation(app_server.out) if s.key == files["key"]][0]
    assert stored.records[0].final_metrics["iou"] > 0
    assert client.get(f"/v1/app/episodes/{eid}/mask?format=nifti").status_code == 422
    assert client.delete(f"/v1/app/episodes/{eid}").status_code == 204
    assert client.get(f"/v1/app/episodes/{eid}").status_code == 404


def test_uploads_open_images_volumes_and_dicom(client, tmp_path):
    sixteen = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 9)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, sixteen)
    opened = client.post("/v1/app/open", files={"files": ("cells.tif", buffer.getvalue())}).json()
    assert opened["kind"] == "image" and (opened["height"], opened["width"]) == (64, 80)
    assert opened["name"] == "cells"

    nifti = volume_file(tmp_path / "upload.nii.gz").read_bytes()
    volume = client.post("/v1/app/open", files={"files": ("upload.nii.gz", nifti)}, data={"modality": "MRI"}).json()
    assert volume["kind"] == "volume" and volume["slices"] == {"axial": 16, "coronal": 48, "sagittal": 40}
    assert volume["contrast"]["mode"] == "percentile"

    garbage = client.post("/v1/app/open", files={"files": ("scan.png", b"not an image")})
    assert garbage.status_code == 422 and "scan.png" in garbage.json()["detail"]
    assert client.post("/v1/app/open", files={"files": ("v.nii.gz", b"xx")}).status_code == 422


def test_a_small_upload_describing_a_huge_volume_is_refused_before_it_is_read(client):
    header = nib.Nifti1Header()  # 2048^3 int16 zeros: 16 GiB decompressed from a few kilobytes of gzip
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.int16)
    compressed = gzip.compress(header.binaryblock + bytes(4) + bytes(1 << 20))
    answer = client.post("/v1/app/open", files={"files": ("bomb.nii.gz", compressed)})
    assert answer.status_code == 422
    assert "bomb.nii.gz describes a 2048x2048x2048 volume of 8,589,934,592 voxels, over the limit of 1,073,741,824" in (
        answer.json()["detail"])


def test_a_slice_one_voxel_thick_is_refused_naming_the_axis(client, tmp_path):
    single = nib.Nifti1Image(np.random.default_rng(4).normal(100, 20, (30, 24, 1)).astype(np.float32), np.eye(4))
    nib.save(single, tmp_path / "single.nii.gz")
    volume = client.post("/v1/app/open", files={"files": ("single.nii.gz", (tmp_path / "single.nii.gz").read_bytes())})
    volume_id = volume.json()["volume_id"]
    axial = client.post(f"/v1/app/volumes/{volume_id}/slice", json={"index": 0, "axis": "axial"})
    assert axial.status_code == 200 and (axial.json()["height"], axial.json()["width"]) == (24, 30)
    coronal = client.post(f"/v1/app/volumes/{volume_id}/slice", json={"index": 0, "axis": "coronal"})
    assert coronal.status_code == 422 and coronal.json()["detail"] == (
        "single.nii.gz: a coronal slice is 1x30 pixels, at least 2x2 are needed; view the volume along another axis")


def test_dicom_series_upload(client, tmp_path):
    stored = np.random.default_rng(2).integers(0, 1500, (6, 20, 24)).astype(np.uint16)
    folder = helper_module("data", "data_reader_helpers").write_dicom_series(tmp_path / "series", stored)
    files = [("files", (p.name, p.read_bytes())) for p in sorted(folder.iterdir())]
    volume = client.post("/v1/app/open", files=files).json()
    assert volume["kind"] == "volume" and volume["modality"] == "CT" and volume["slices"]["axial"] == 6
    assert volume["contrast"] == {"mode": "window", "preset": "abdomen", "width": 400.0, "level": 40.0,
                                  "percentiles": None}
    shown = client.post(f"/v1/app/volumes/{volume['volume_id']}/slice", json={"index": 2}).json()
    assert (shown["height"], shown["width"]) == (20, 24)


def test_an_upload_of_a_whole_study_says_which_series_it_shows(client, tmp_path):
    write = helper_module("data", "data_reader_helpers").write_dicom_series
    rng = np.random.default_rng(5)
    big = write(tmp_path / "big", rng.integers(0, 1500, (5, 20, 24)).astype(np.uint16))
    small = write(tmp_path / "small", rng.integers(0, 1500, (3, 16, 16)).astype(np.uint16))
    files = [("files", (f"{folder.name}_{p.name}", p.read_bytes())) for folder in (big, small)
             for p in sorted(folder.iterdir())]
    files.append(("files", ("notes.txt", b"scanned on the old machine")))
    volume = client.post("/v1/app/open", files=files).json()
    assert volume["slices"]["axial"] == 5
    assert volume["name"] == ("DICOM series (9 files): the largest of 2 series, 5 slices; 1 file(s) that are not "
                              "DICOM images left out")

    junk = client.post("/v1/app/open", files=[("files", ("a.dcm", b"junk")), ("files", ("b.dcm", b"junk"))])
    assert junk.status_code == 422 and junk.json()["detail"].endswith("no DICOM images in the upload")
    nifti = volume_file(tmp_path / "v.nii.gz").read_bytes()
    two = client.post("/v1/app/open", files=[("files", ("a.nii.gz", nifti)), ("files", ("b.nii.gz", nifti))])
    assert two.status_code == 422 and two.json()["detail"].startswith("open one NIfTI volume at a time")


def test_a_slice_of_a_volume_saves_as_nifti(client, app_server):
    volume = open_library(client, "volume")
    vid = volume["volume_id"]
    shown = client.post(f"/v1/app/volumes/{vid}/slice", json={"axis": "axial", "index": 8, "window": "brain"}).json()
    assert shown["slice"] == {"volume_id": vid, "axis": "axial", "index": 8}
    assert shown["contrast"]["preset"] == "brain"
    custom = client.post(f"/v1/app/volumes/{vid}/slice", json={"axis": "axial", "index": 8, "width": 200,
                                                               "level": 150}).json()
    assert custom["image_id"] != shown["image_id"]
    for bad in ({"axis": "axial", "index": 99}, {"axis": "axial", "index": 1, "window": "lung", "width": 3},
                {"axis": "axial", "index": 1, "window": "kidney"}, {"axis": "axial", "index": 1, "level": 3},
                {"axis": "axial", "index": 1, "window": "lung", "percentiles": [1, 99]}):
        answer = client.post(f"/v1/app/volumes/{vid}/slice", json=bad)
        assert answer.status_code == 422, bad
    assert client.post("/v1/app/volumes/nope/slice", json={"index": 1}).status_code == 404

    pct = client.post(f"/v1/app/volumes/{vid}/slice", json={"axis": "coronal", "index": 20,
                                                            "percentiles": [1, 99]}).json()
    eid = client.post("/v1/app/episodes", json={"image_id": pct["image_id"], "target": "block"}).json()["episode_id"]
    episode = client.post(f"/v1/app/episodes/{eid}/box", json={"box": [4, 2, 30, 12]}).json()
    assert episode["slice"]["axis"] == "coronal" and episode["mask_area"] > 0
    saved = client.post(f"/v1/app/episodes/{eid}/save").json()["saved"][0]
    assert saved["mask_format"] == "nifti"
    written = nib.load(app_server.out / saved["mask"])
    assert written.shape == (40, 48, 16) and np.allclose(written.affine, np.diag([-0.9, 0.9, 3.0, 1.0]))
    shown_mask = display_slice(np.asanyarray(canonical(written).dataobj), 20, "coronal") > 0
    assert np.array_equal(shown_mask, decode_rle(episode["mask"]))
    download = client.get(f"/v1/app/episodes/{eid}/mask?format=nifti")
    assert download.headers["content-type"] == "application/gzip"


def test_the_agent_proposes_and_the_person_corrects(client, app_server):
    opened = open_library(client, "image")
    with scripted_chat_server() as chat:
        chat.reply(
            {"content": "<think>The blob is left of centre.</think>\n<tool_call>\n"
                        '{"name": "add_bbox", "arguments": {"bbox_2d": [200, 150, 800, 850]}}\n</tool_call>'},
            {"tool_calls": [("stop_action", {})]},
        )
        body = {"image_id": opened["image_id"], "target": "bright blob",
                "agent": {"kind": "openai", "base_url": chat.base_url}}
        episode = client.post("/v1/app/episodes", json=body).json()
        assert episode["agent"] == {"kind": "openai", "base_url": chat.base_url, "model": "tiny-agent"}
        eid = episode["episode_id"]
        first = client.post(f"/v1/app/episodes/{eid}/agent").json()
        turn = first["turns"][0]
        assert turn["actor"] == "agent" and turn["name"] == "add_bbox"
        assert turn["reasoning"] == "The blob is left of centre." and turn["tool_score"] is not None
        assert turn["action"]["arguments"]["bbox_2d"] == [200, 150, 800, 850]
        corrected = client.post(f"/v1/app/episodes/{eid}/point", json={"point": [30, 30], "positive": False}).json()
        assert [t["actor"] for t in corrected["turns"]] == ["agent", "person"]
        done = client.post(f"/v1/app/episodes/{eid}/agent").json()
        assert done["done"] and done["stop_reason"] == "stop_action"
        last_request = chat.requests[-1]["messages"]
        assistant = [m["content"] for m in last_request if m["role"] == "assistant"]
        assert "add_bbox" in assistant[0] and '"point_type": "negative"' in assistant[1]

        chat.reply({"status": 500}, {"status": 500}, {"status": 500}, {"status": 500})
        client.post(f"/v1/app/episodes/{eid}/undo")
        failed = client.post(f"/v1/app/episodes/{eid}/agent")
        assert failed.status_code == 502 and "agent" in failed.json()["detail"]
        still = client.get(f"/v1/app/episodes/{eid}").json()
        assert [t["actor"] for t in still["turns"]] == ["agent", "person"]

        manual = client.post("/v1/app/episodes", json={"image_id": opened["image_id"], "target": "blob"}).json()
        assert client.post(f"/v1/app/episodes/{manual['episode_id']}/agent").status_code == 409
        chat.reply({"tool_calls": [("add_point", {"point_2d": [500, 500], "point_type": "positive"})]})
        handed = client.put(f"/v1/app/episodes/{manual['episode_id']}/agent",
                            json={"kind": "openai", "base_url": chat.base_url}).json()
        assert handed["agent"]["kind"] == "openai"
        took = client.post(f"/v1/app/episodes/{manual['episode_id']}/agent").json()
        assert took["turns"][0]["actor"] == "agent" and took["turns"][0]["name"] == "add_point"

    unreachable = client.post("/v1/app/episodes", json={**body, "agent": {"kind": "openai"}})
    assert unreachable.status_code == 422 and "base_url" in unreachable.json()["detail"]
    missing = client.post("/v1/app/episodes", json={**body, "agent": {"kind": "hf", "checkpoint": "/no/such/dir"}})
    assert missing.status_code == 422 and "/no/such/dir" in missing.json()["detail"]
    assert json.loads(json.dumps(took))  # answers are plain JSON


# The app's endpoints under generated requests: no 500, only documented status codes.
_fuzz_app = create_app(build_tool("classic"))
install_app(_fuzz_app, AppConfig())
app_schema = schemathesis.openapi.from_dict(_fuzz_app.openapi()).include(path_regex="^/v1/app")


@app_schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_app_request_gets_a_server_error(case, app_server):
    case.call_and_validate(base_url=app_server.url, headers=AUTH, checks=[not_a_server_error,
                                                                           status_code_conformance], timeout=60)


def test_a_local_checkpoint_agent_reads_the_persons_turns(client, tmp_path_factory):
    """The hf agent: a tiny random Qwen-VL built here (no download); its replies are garbage, so
    each becomes an error turn the person can undo."""
    from medseg_agent.models.tiny_qwen import build_tiny_qwen_vl

    checkpoint = build_tiny_qwen_vl(tmp_path_factory.mktemp("tiny") / "qwen3_vl", "qwen3_vl", max_pixels=64 * 64)
    opened = open_library(client, "image")
    agent = {"kind": "hf", "checkpoint": str(checkpoint), "max_tokens": 8}
    created = client.post("/v1/app/episodes", json={"image_id": opened["image_id"], "target": "blob", "agent": agent})
    assert created.status_code == 201, created.text
    eid = created.json()["episode_id"]
    client.post(f"/v1/app/episodes/{eid}/box", json={"box": [30, 20, 100, 80]})
    turned = client.post(f"/v1/app/episodes/{eid}/agent").json()
    assert [t["actor"] for t in turned["turns"]] == ["person", "agent"]
    assert turned["turns"][1]["raw_text"] and turned["turns"][1]["error"] is not None
    assert turned["agent"]["kind"] == "hf" and turned["mask_area"] > 0  # the person's mask stays
    undone = client.post(f"/v1/app/episodes/{eid}/undo").json()
    assert [t["actor"] for t in undone["turns"]] == ["person"]
