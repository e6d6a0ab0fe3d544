"""The server over real HTTP with the classic tool: client tool, sessions, isolation, auth, limits,
expiry, metrics and the client's error handling."""

from __future__ import annotations

import base64
import dataclasses
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from serving_helpers import AUTH, TOKEN, free_port, start_server

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.io.masks import decode_rle
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.runner import run_episode
from medseg_agent.serving.app import create_app
from medseg_agent.serving.client import HttpSegmentationTool, ServerError, ToolServerClient
from medseg_agent.serving.config import ServerConfig
from medseg_agent.serving.server import BackgroundServer
from medseg_agent.tools.registry import build_tool
from medseg_agent.vocabulary.actions import AddBox, AddPoint, CoordinateSpace
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.prompts import Prompt
from medseg_agent.vocabulary.stop import StopReason


@pytest.fixture(scope="module")
def client(classic_server):
    c = ToolServerClient(classic_server.url, token=TOKEN, retries=1, backoff_s=0.01)
    yield c
    c.close()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# -- the client tool --------------------------------------------------------------------------------
def two_blob_sample(make_sample):
    """Two separate bright blobs, both the target: one click cannot finish it (the classic tool adds
    only the part connected to a click), so the episode runs several clicks."""
    left, right = make_sample(seed=1, centre=(36, 48), radius=14), make_sample(seed=1, centre=(96, 40), radius=10)
    return dataclasses.replace(left, image=np.maximum(left.image, right.image), mask=left.mask | right.mask,
                               target="two bright blobs", sample_id="two-blobs-1")


def test_http_tool_runs_episodes_exactly_like_the_local_tool(classic_server, make_sample):
    sample = two_blob_sample(make_sample)
    remote = build_tool(classic_server.url, token=TOKEN)
    assert isinstance(remote, HttpSegmentationTool) and remote.name == "classic"
    config = EpisodeConfig(max_turns=4)
    remote_record = run_episode(SegmentationEnv(remote, config), ClickerPolicy(stop_iou=None), sample)
    local_record = run_episode(SegmentationEnv(build_tool("classic"), config), ClickerPolicy(stop_iou=None), sample)
    assert len(remote_record.turns) == 4 and remote_record.stop_reason is StopReason.TURN_LIMIT
    assert [t.action for t in remote_record.turns] == [t.action for t in local_record.turns]
    assert [t.iou for t in remote_record.turns] == [t.iou for t in local_record.turns]
    assert remote_record.final_mask_rle == local_record.final_mask_rle
    # box then points: the previous logits travel to the server and back unchanged
    envs = [SegmentationEnv(t, EpisodeConfig(max_turns=3)) for t in (remote, build_tool("classic"))]
    masks = []
    for env in envs:
        env.reset(sample)
        obs = [env.step(AddBox(250, 200, 750, 800)), env.step(AddPoint(500, 500, False)),
               env.step(AddPoint(420, 480, True))]
        masks.append([o.mask for o in obs])
    for remote_mask, local_mask in zip(*masks, strict=True):
        assert np.array_equal(remote_mask, local_mask)
    assert remote.encode_count == 2 and remote.decode_count == 7


def test_client_uploads_again_when_the_server_lost_the_image(classic_server, make_sample):
    sample = make_sample(seed=2)
    first = build_tool(classic_server.url, token=TOKEN)
    embedding = first.encode(sample.image)
    with BackgroundServer(create_app(build_tool("classic"))) as fresh:  # knows nothing of the image
        second = HttpSegmentationTool(fresh.url)
        prediction = second.decode(embedding, Prompt(box=np.array([30, 20, 100, 80])))
        assert prediction.mask.shape == sample.mask.shape and prediction.mask.any()
        assert second.server_stats()["cache"]["misses"] == 1


def predict_requests(metrics_text: str) -> float:
    line = 'medseg_http_requests_total{method="POST",route="/v1/predict",status="200"} '
    return sum(float(row.split()[-1]) for row in metrics_text.splitlines() if row.startswith(line))


def test_batch_decode_sends_one_request(classic_server, client, make_sample):
    tool = build_tool(classic_server.url, token=TOKEN)
    session = tool.set_image(make_sample(seed=3).image)
    before = predict_requests(client.metrics())
    prompts = [Prompt(box=np.array([30, 20, 100, 80])), Prompt(points=[[64, 48]], labels=[1])]
    predictions = tool.decode_batch(session.embedding, prompts)
    assert len(predictions) == 2 and all(p.mask.shape == (96, 128) for p in predictions)
    assert not np.array_equal(predictions[0].mask, predictions[1].mask)
    assert tool.decode_count == 2 and predict_requests(client.metrics()) == before + 1


# -- sessions -----------------------------------------------------------------------------------------
def test_session_lifecycle_with_model_coordinates(client, make_sample):
    sample = make_sample(seed=4)
    session = client.create_session(sample.image, coordinate_space="norm1000")
    assert session.state["num_actions"] == 0 and session.state["mask"] is None
    state = session.add_box([200, 200, 800, 800])
    assert state["box"] == pytest.approx([25.6, 19.2, 102.4, 76.8])  # 0-999 grid -> pixels of 96x128
    assert state["num_actions"] == 1 and state["mask_area"] == session.mask(state).sum() > 0
    state = session.add_point([500, 500], "negative")
    assert state["points"] == [[64.0, 48.0]] and state["labels"] == [0] and state["box"] is not None
    assert np.array_equal(session.mask(), session.mask(state))  # GET mask == the action's answer
    png_mask = httpx.get(f"{client.url}/v1/sessions/{session.id}/mask", params={"format": "png"}, headers=AUTH)
    assert png_mask.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_mask.content))) > 0, session.mask(state))
    state = session.add_box([100, 100, 400, 400])  # a new box drops earlier points
    assert state["points"] == [] and state["num_actions"] == 3
    state = session.undo()
    assert state["points"] == [[64.0, 48.0]] and state["num_actions"] == 2
    state = session.reset()
    assert state["num_actions"] == 0 and state["mask_area"] == 0 and state["box"] is None
    assert session.undo()["num_actions"] == 2  # reset is undoable
    session.close()
    with pytest.raises(ServerError, match="does not exist") as error:
        session.status()
    assert error.value.status == 404


def test_sessions_create_from_inline_image_and_share_one_image(client, make_sample):
    image = make_sample(seed=5).image
    inline = client.json(
        "POST", "/v1/sessions", json={"image_base64": base64.b64encode(png(image)).decode()}, ok=(201,)
    )
    by_id = client.create_session(image_id=inline["image_id"])
    assert by_id.image_id == inline["image_id"] and by_id.id != inline["session_id"]


def test_sessions_are_isolated(client, make_sample):
    image = make_sample(seed=6).image
    a = client.create_session(image, coordinate_space="pixel")
    b = client.create_session(image, coordinate_space="pixel")
    a.add_box([20, 15, 110, 80])
    a.add_point([64, 48], "negative")
    status_b = b.status()
    assert status_b["num_actions"] == 0 and status_b["mask_area"] == 0 and status_b["points"] == []
    b.add_box([5, 5, 30, 30])
    assert a.status()["points"] == [[64.0, 48.0]] and a.status()["num_actions"] == 2
    a.close()
    assert b.status()["num_actions"] == 1  # deleting one leaves the other
    assert len({a.id, b.id}) == 2 and all(len(s.id) >= 32 for s in (a, b))


def test_concurrent_sessions_on_one_image_share_one_encode(classic_server, client, make_sample):
    image = make_sample(seed=7).image
    before = client.health()
    image_id = client.upload(image)["image_id"]

    def rollout(i: int) -> int:
        session = client.create_session(image_id=image_id, prefetch=False)
        state = session.add_box([20 + i, 15, 110, 80])
        session.close()
        return state["mask_area"]

    with ThreadPoolExecutor(8) as pool:
        areas = list(pool.map(rollout, range(8)))
    after = client.health()
    assert all(area > 0 for area in areas)
    assert after["model"]["encodes"] - before["model"]["encodes"] == 1
    assert after["cache"]["misses"] - before["cache"]["misses"] == 1
    assert after["cache"]["hits"] - before["cache"]["hits"] == 7


# -- errors ------------------------------------------------------------------------------------------
def test_auth(classic_server, make_sample):
    url = classic_server.url
    assert httpx.get(f"{url}/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx.post(f"{url}/v1/sessions", json={"image_id": "0" * 64}, headers=headers)
        assert response.status_code == 401 and "token" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/metrics", headers=headers).status_code == 401
    # an unauthenticated request learns nothing about validation
    assert httpx.post(f"{url}/v1/predict", content=b"{broken").status_code == 401
    with pytest.raises(ServerError, match="401.*token") as error:
        build_tool(url, token="wrong").encode(make_sample().image)
    assert error.value.status == 401


def test_malformed_and_unknown_requests_get_named_errors(classic_server, client, make_sample):
    url = classic_server.url
    session = client.create_session(make_sample(seed=8).image, coordinate_space="norm1000")
    image_id = session.image_id

    def post(path, headers=None, **kwargs):
        return httpx.post(f"{url}{path}", headers={**AUTH, **(headers or {})}, **kwargs)

    cases = [
        (post(f"/v1/sessions/{session.id}/box", json={"bbox_2d": [1, 2, 3]}), 422, "bbox_2d"),
        (post(f"/v1/sessions/{session.id}/box", json={"bbox_2d": [True, 300, 600, 600]}), 422, "got True"),
        (post(f"/v1/sessions/{session.id}/point", json={"point_2d": ["4_5_0", 2], "point_type": "positive"}), 422,
         "plain decimal numbers"),
        (post("/v1/predict", json={"image_id": image_id, "prompts": [{"box": [False, 1, 30, 40]}]}), 422, "got False"),
        (post(f"/v1/sessions/{session.id}/box", json={"bbox_2d": [1, 2, 3, 1000]}), 422, "outside the image"),
        (post(f"/v1/sessions/{session.id}/box", json={"bbox_2d": [500, 2, 300, 9]}), 422, "inverted"),
        (post(f"/v1/sessions/{session.id}/point", json={"point_2d": [1, 2], "point_type": "maybe"}), 422,
         "point_type"),
        (post(f"/v1/sessions/{session.id}/box", content=b"{nope", headers={"content-type": "application/json"}),
         422, "not valid JSON"),
        (post("/v1/sessions/nonexistent/box", json={"bbox_2d": [1, 2, 3, 4]}), 404, "does not exist"),
        (post("/v1/sessions", json={"image_id": "ab" * 32}), 404, "not on this server"),
        (post("/v1/sessions", json={"image_id": "not-a-hash"}), 422, "image_id"),
        (post("/v1/sessions", json={}), 422, "exactly one of image_id"),
        (post("/v1/sessions", json={"image_base64": "%%%"}), 422, "base64"),
        (post("/v1/sessions", json={"image_base64": "\u00f2\u009a\u00be\u00a6"}), 422, "base64"),  # not ASCII
        (post("/v1/predict", json={"image_id": image_id, "prompts": [{}]}), 422, "needs a box"),
        (post("/v1/predict", json={"image_id": image_id, "prompts": [{"points": [[10, 500]], "labels": [1]}]}),
         422, "prompts[0].points[0]"),
        (post("/v1/predict", json={"image_id": image_id, "prompts": [{"points": [[10, 50]], "labels": []}]}),
         422, "one label per point"),
        (post("/v1/predict", content=b'{"image_id": "%s", "prompts": [{"box": [1, 2, 3, NaN]}]}' % image_id.encode(),
              headers={"content-type": "application/json"}), 422, "box"),
        (post("/v1/images", files={"file": ("x.png", b"garbage", "image/png")}), 422, "not a readable image"),
        (post("/v1/images", files={"file": ("x.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '|u1'   \n", "x")}), 422,
         "not a valid .npy"),
        (post("/v1/images", files={"file": ("x.png", png(np.zeros((1100, 4), np.uint8)), "image/png")}), 422,
         "at most 1024 pixels"),
        (httpx.get(f"{url}/v1/images/{'cd' * 32}", headers=AUTH), 404, "not on this server"),
        (post(f"/v1/sessions/{session.id}/undo"), 409, "nothing to undo"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert words in response.json()["detail"], response.text


def test_body_size_limit(classic_server):
    big = b"x" * 2_100_000
    response = httpx.post(f"{classic_server.url}/v1/predict", content=big, headers=AUTH)
    assert response.status_code == 413 and "at most 2000000 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(40):
            yield b"y" * 60_000

    response = httpx.post(f"{classic_server.url}/v1/predict", content=chunks(), headers=AUTH)
    assert response.status_code == 413


def test_limits_and_idle_expiry(make_sample):
    image = make_sample(seed=9).image
    server = start_server(build_tool("classic"), max_points=2, max_sessions=2, session_ttl_s=1.5,
                          sweep_interval_s=0.2)
    try:
        client = ToolServerClient(server.url, retries=0)
        first = client.create_session(image)
        first.add_point([60, 40], "positive")
        first.add_point([64, 48], "positive")
        with pytest.raises(ServerError, match="limit") as error:
            first.add_point([66, 50], "positive")
        assert error.value.status == 409
        client.create_session(image)
        with pytest.raises(ServerError, match="sessions") as error:
            client.create_session(image)
        assert error.value.status == 503
        time.sleep(2.0)  # both sessions idle past the TTL: the sweeper deletes them
        health = client.health()
        assert health["sessions"] == 0
        metrics = client.metrics()
        assert "medseg_sessions_expired_total 2.0" in metrics and "medseg_sessions_active 0.0" in metrics
        with pytest.raises(ServerError, match="does not exist"):
            first.status()
        client.create_session(image)  # room again
    finally:
        server.stop()


def test_metrics_report_requests_cache_and_sessions(client, make_sample):
    session = client.create_session(make_sample(seed=12).image)
    session.add_box([20, 15, 110, 80])
    text = client.metrics()
    for name in ("medseg_http_requests_total", "medseg_http_request_duration_seconds_bucket",
                 "medseg_embedding_cache_hits_total", "medseg_embedding_cache_misses_total",
                 "medseg_sessions_active", "medseg_model_encodes_total", "medseg_model_queue_depth",
                 'medseg_tool_counter{name="decode_count"}'):
        assert f"\n{name}" in text
    assert 'route="/v1/sessions/{session_id}/box",status="200"' in text
    assert session.id not in text  # labels use route templates, never ids
    active = [row for row in text.splitlines() if row.startswith("medseg_sessions_active ")]
    assert float(active[0].split()[-1]) >= 1


# -- the client's handling of an absent or late server -----------------------------------------------
def test_client_reports_an_unreachable_server():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match="cannot reach the medseg-agent server.*2 attempt") as error:
        HttpSegmentationTool(url, retries=1, backoff_s=0.01)
    assert error.value.status is None


def test_client_retries_until_a_late_server_is_up(make_sample):
    port = free_port()
    server = BackgroundServer(create_app(build_tool("classic"), ServerConfig()), port=port)
    timer = threading.Timer(0.6, server.start)
    timer.start()
    try:
        tool = HttpSegmentationTool(f"http://127.0.0.1:{port}", retries=6, backoff_s=0.1)
        assert tool.set_image(make_sample().image).predict(Prompt(box=np.array([30, 20, 100, 80]))).mask.any()
    finally:
        timer.join()
        server.stop()


def _other_server(health: Response, predict: dict) -> FastAPI:
    """A server that is not a medseg-agent tool server behind the URL (a model server, a proxy)."""
    app = FastAPI()
    app.get("/health")(lambda: health)
    app.get("/v1/images/{key}")(lambda key: {"image_id": key})
    app.post("/v1/predict")(lambda: predict)
    return app


@pytest.mark.parametrize(
    "health",
    [
        Response(b"", status_code=200),  # vLLM's /health
        HTMLResponse("<html>Jupyter</html>"),
        JSONResponse({"status": "ok"}),
    ],
)
def test_a_url_that_is_not_a_tool_server_is_named_at_once(health):
    with BackgroundServer(_other_server(health, {})) as other, pytest.raises(ServerError) as caught:
        HttpSegmentationTool(other.url, retries=0)
    assert other.url in str(caught.value)
    assert "not JSON" in str(caught.value) or "not a medseg-agent tool server" in str(caught.value)


def test_a_prediction_answer_of_another_shape_is_a_server_error(make_sample):
    with BackgroundServer(_other_server(JSONResponse({"tool": "classic"}), {"masks": []})) as other:
        tool = HttpSegmentationTool(other.url, retries=0, prefetch=False)
        with pytest.raises(ServerError, match=r"/v1/predict at .* answered \"\{'masks': \[\]\}\", not 1 prediction"):
            tool.set_image(make_sample().image).predict(Prompt(box=np.array([30, 20, 100, 80])))


def test_client_rejects_local_model_options():
    with pytest.raises(Exception, match="do not apply to a tool server URL"):
        build_tool("http://127.0.0.1:1", allow_random_weights=True)


def test_client_checks_an_image_id_before_sending_it():
    from medseg_agent.serving.client import ToolServerClient

    client = ToolServerClient("http://127.0.0.1:1", retries=0)  # nothing listens there: no request may be made
    with pytest.raises(ToolError, match="64 hex digits"):
        client.create_session(image_id="scan.png")


def test_mask_rle_roundtrip_matches_the_session_state(client, make_sample):
    session = client.create_session(make_sample(seed=10).image)
    state = session.add_box([20, 15, 110, 80])
    rle = client.json("GET", f"/v1/sessions/{session.id}/mask")
    assert np.array_equal(decode_rle(rle), session.mask(state))
    assert CoordinateSpace(state["coordinate_space"]) is CoordinateSpace.PIXEL


@pytest.mark.parametrize("owns_tool", [True, False])
def test_a_server_closes_the_tool_it_owns_when_it_shuts_down(owns_tool):
    """``medseg-agent serve`` owns its tool (a model process to stop); a tool lent to an app by a
    caller who goes on using it is left open."""
    tool = build_tool("classic")
    closed: list[bool] = []
    tool.close = lambda: closed.append(True)  # type: ignore[method-assign]
    with BackgroundServer(create_app(tool, owns_tool=owns_tool)) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert not closed  # not while serving
    assert closed == ([True] if owns_tool else [])
