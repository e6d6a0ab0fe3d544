"""Two Ray Serve replicas behind one endpoint: every request about an image reaches the replica its
hash picks, so each image is encoded once cluster-wide, also when clients send the image inline."""

from __future__ import annotations

import base64
import hashlib
import io
from collections import defaultdict

import httpx
import numpy as np
import pytest
from PIL import Image
from serving_helpers import free_port

pytest.importorskip("ray.serve")

from medseg_agent.serving.cluster import (  # noqa: E402  (after the importorskip guard)
    REPLICA_HEADER,
    ClusterSpec,
    rendezvous_rank,
    route_key_of_image,
    route_key_of_json,
    route_key_of_path,
)
from medseg_agent.serving.config import ServerConfig  # noqa: E402
from medseg_agent.tools.registry import build_tool  # noqa: E402
from medseg_agent.tools.spec import ToolSpec  # noqa: E402
from medseg_agent.vocabulary.prompts import Prompt  # noqa: E402

KEY = "ab" * 32


def test_routing_keys_come_from_paths_session_ids_and_bodies():
    assert route_key_of_path(f"/v1/images/{KEY}") == route_key_of_path(f"/v1/images/{KEY}/encode") == KEY[:16]
    assert route_key_of_path(f"/v1/sessions/{KEY[:16]}xYz-_09abcdefghij/box") == KEY[:16]
    assert route_key_of_path("/v1/sessions") is None and route_key_of_path("/health") is None
    assert route_key_of_json(b'{"prompts": [], "image_id": "%s"}' % KEY.encode()) == (KEY[:16], None)
    assert route_key_of_json(b'{"image_base64": "aGVsbG8=", "prefetch": true}') == (None, "aGVsbG8=")
    assert route_key_of_json(b'{"coordinate_space": "pixel"}') == (None, None)


def test_rendezvous_hashing_is_stable_when_a_replica_goes():
    replicas = ["r-a", "r-b", "r-c"]
    keys = [route_key_of_image(hashlib.sha256(str(i).encode()).hexdigest()) for i in range(300)]
    home = {k: replicas[rendezvous_rank(k, replicas)[0]] for k in keys}
    assert set(home.values()) == set(replicas)  # every replica gets some images
    survivors = ["r-a", "r-c"]
    for key in keys:
        moved = survivors[rendezvous_rank(key, survivors)[0]]
        assert moved == home[key] or home[key] == "r-b"  # only the lost replica's images move


@pytest.fixture(scope="module", params=[False, True], ids=["replicas", "replicas-with-model-processes"])
def cluster_url(request):
    import ray
    from ray import serve

    from medseg_agent.serving.cluster import run_cluster

    port = free_port()
    spec = ClusterSpec(tool=ToolSpec("classic"), replicas=2, cpus_per_replica=0.5, config=ServerConfig(),
                       model_process=request.param)
    try:
        run_cluster(spec, host="127.0.0.1", port=port, blocking=False)
        yield f"http://127.0.0.1:{port}"
    finally:  # also when the cluster did not come up, so that the next one starts clean
        serve.shutdown()
        ray.shutdown()


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow
def test_two_replicas_serve_each_image_from_one_replica_with_one_encode(cluster_url, make_sample):
    images = [make_sample(seed=40 + i).image for i in range(4)]
    served_by: dict[str, set[str]] = defaultdict(set)
    with httpx.Client(base_url=cluster_url, timeout=60) as http:
        before = http.get("/health").json()
        assert before["replica_count"] == 2
        replica_ids = sorted(r["replica"] for r in before["replicas"])
        for image in images:
            inline = png_base64(image)
            for rollout in range(3):  # each rollout sends the image inline, as a raw API client would
                created = http.post("/v1/sessions", json={"image_base64": inline})
                assert created.status_code == 201, created.text
                image_id, session_id = created.json()["image_id"], created.json()["session_id"]
                served_by[image_id].add(created.headers[REPLICA_HEADER])
                for path, body in (("box", {"bbox_2d": [20 + rollout, 15, 110, 80]}),
                                   ("point", {"point_2d": [64, 48], "point_type": "negative"})):
                    answer = http.post(f"/v1/sessions/{session_id}/{path}", json=body)
                    assert answer.status_code == 200, answer.text
                    served_by[image_id].add(answer.headers[REPLICA_HEADER])
                assert http.delete(f"/v1/sessions/{session_id}").status_code == 204
        after = http.get("/health").json()
    assert len(served_by) == len(images)
    for image_id, replicas in served_by.items():
        expected = replica_ids[rendezvous_rank(route_key_of_image(image_id), replica_ids)[0]]
        assert replicas == {expected}, (image_id, replicas)  # one replica per image: its hash's favourite
    assert after["model"]["encodes"] - before["model"]["encodes"] == len(images)  # once cluster-wide
    assert after["cache"]["misses"] - before["cache"]["misses"] == len(images)
    assert after["model"]["decoded_prompts"] - before["model"]["decoded_prompts"] == 2 * 3 * len(images)


@pytest.mark.slow
def test_the_client_tool_works_unchanged_against_the_cluster(cluster_url, make_sample):
    sample = make_sample(seed=50)
    remote = build_tool(cluster_url)
    local = build_tool("classic")
    embedding = remote.encode(sample.image)  # uploads once (multipart), routed by the image's hash
    prompt = Prompt(box=np.array([30, 20, 100, 80]))
    assert np.array_equal(remote.decode(embedding, prompt).mask, local.set_image(sample.image).predict(prompt).mask)
    assert remote.server_stats()["cache"]["misses"] >= 1


def test_a_replica_whose_model_process_died_fails_ray_serves_health_check():
    """Ray Serve calls ``check_health`` on every replica periodically and replaces one that raises: a
    replica that lost its model process is restarted instead of answering 503 until someone notices."""
    import os
    import signal
    import time

    from medseg_agent.serving.cluster import ToolReplica
    from medseg_agent.vocabulary.errors import ModelUnavailable

    replica = ToolReplica(ClusterSpec(tool=ToolSpec("classic"), model_process=True))
    try:
        replica.check_health()  # a live model process: healthy
        os.kill(replica.tool.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while replica.tool.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ModelUnavailable, match="model process exited"):
            replica.check_health()
    finally:
        replica.tool.close()
    ToolReplica(ClusterSpec(tool=ToolSpec("classic"))).check_health()  # a model in the replica itself
