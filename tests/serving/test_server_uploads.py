"""Uploads are identified by a hash of their bytes before any decoding: the rollouts of a GRPO group
that each send the same image cost one decode; masks come back exact and compact."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image
from serving_helpers import start_server

from medseg_agent.io.masks import decode_rle
from medseg_agent.serving import api_images
from medseg_agent.tools.registry import build_tool


def test_the_same_upload_bytes_are_decoded_once(monkeypatch, make_sample):
    decodes: list[int] = []
    original = api_images.decode_upload

    def counting(data: bytes, max_side: int) -> np.ndarray:
        decodes.append(len(data))
        return original(data, max_side)

    monkeypatch.setattr(api_images, "decode_upload", counting)
    image = make_sample(seed=31).image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    png = buffer.getvalue()
    inline = base64.b64encode(png).decode()
    server = start_server(build_tool("classic"))
    try:
        ids = set()
        for _ in range(4):  # four rollouts send the image inline
            answer = httpx.post(f"{server.url}/v1/sessions", json={"image_base64": inline}, timeout=30)
            assert answer.status_code == 201, answer.text
            ids.add(answer.json()["image_id"])
        for _ in range(2):  # and twice as a file
            answer = httpx.post(f"{server.url}/v1/images", files={"file": ("a.png", png, "image/png")}, timeout=30)
            ids.add(answer.json()["image_id"])
        assert len(ids) == 1 and len(decodes) == 2  # one decode per distinct byte string
        session = httpx.post(f"{server.url}/v1/sessions", json={"image_id": ids.pop()}, timeout=30).json()
        state = httpx.post(f"{server.url}/v1/sessions/{session['session_id']}/box",
                           json={"bbox_2d": [20, 15, 110, 80]}, timeout=30).json()
        mask = decode_rle(state["mask"])
        assert mask.shape == image.shape[:2] and state["mask_area"] == int(mask.sum()) > 0
        light = httpx.post(f"{server.url}/v1/sessions/{session['session_id']}/point",
                           params={"include_mask": "false"}, json={"point_2d": [60, 40], "point_type": "positive"},
                           timeout=30).json()
        assert light["mask"] is None and light["mask_area"] > 0
    finally:
        server.stop()


def test_concurrent_uploads_of_the_same_bytes_share_one_decode(monkeypatch, make_sample):
    decodes: list[int] = []
    original = api_images.decode_upload

    def slow(data: bytes, max_side: int) -> np.ndarray:
        decodes.append(len(data))
        time.sleep(0.3)  # every request arrives while the first decode runs
        return original(data, max_side)

    monkeypatch.setattr(api_images, "decode_upload", slow)
    buffer = io.BytesIO()
    Image.fromarray(make_sample(seed=32).image).save(buffer, format="PNG")
    inline = base64.b64encode(buffer.getvalue()).decode()
    server = start_server(build_tool("classic"))
    try:
        def create(_: int) -> httpx.Response:
            return httpx.post(f"{server.url}/v1/sessions", json={"image_base64": inline}, timeout=30)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(create, range(8)))
        assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
        assert len({a.json()["image_id"] for a in answers}) == 1 and len(decodes) == 1
    finally:
        server.stop()
