"""The server with the MedSAM2 architecture (SAM 2.1 hiera-t, random weights, 256 input): remote
episodes match local ones, concurrent rollouts share one encode and batched decodes, the event loop
stays responsive while the model works, and one bad prompt in a batch fails alone."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from serving_helpers import start_server

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.runner import run_episode
from medseg_agent.serving.client import ToolServerClient
from medseg_agent.tools.registry import build_tool
from medseg_agent.vocabulary.actions import AddBox, AddPoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sam2_server(sam2_tool):
    server = start_server(sam2_tool)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(sam2_server):
    c = ToolServerClient(sam2_server.url)
    yield c
    c.close()


def test_remote_sam2_episodes_match_the_local_tool(sam2_server, sam2_tool, make_sample):
    sample = make_sample(seed=20)
    remote = build_tool(sam2_server.url)
    assert remote.name == "sam2"
    remote_env = SegmentationEnv(remote, EpisodeConfig(max_turns=3))
    local_env = SegmentationEnv(sam2_tool, EpisodeConfig(max_turns=3))
    masks = []
    for env in (remote_env, local_env):
        env.reset(sample)
        steps = [env.step(AddBox(200, 150, 800, 850)), env.step(AddPoint(500, 500, False)),
                 env.step(AddPoint(300, 400, True))]
        assert steps[-1].done
        masks.append([s.mask for s in steps])
    for remote_mask, local_mask in zip(*masks, strict=True):
        assert remote_mask.shape == sample.mask.shape
        assert (remote_mask == local_mask).mean() > 0.999
    record = run_episode(SegmentationEnv(remote, EpisodeConfig(max_turns=2)), ClickerPolicy(stop_iou=None), sample)
    assert record.num_interactions == 2 and all(t.iou is not None for t in record.turns)
    assert remote.encode_count == 2  # one per episode; the server encoded the image once
    assert remote.server_stats()["cache"]["misses"] == 1


def test_concurrent_rollouts_share_one_encode_and_batch_their_decodes(sam2_server, client, make_sample):
    image_id = client.upload(make_sample(seed=21).image)["image_id"]
    before = client.health()

    def rollout(i: int) -> list[int]:
        session = client.create_session(image_id=image_id, coordinate_space="norm1000")
        areas = [session.add_box([200 + 10 * i, 150, 800, 850])["mask_area"],
                 session.add_point([500, 500], "positive")["mask_area"]]
        session.close()
        return areas

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(rollout, range(8)))
    after = client.health()
    assert len(results) == 8
    assert after["model"]["encodes"] - before["model"]["encodes"] == 1
    assert after["cache"]["misses"] - before["cache"]["misses"] == 1
    assert after["cache"]["hits"] - before["cache"]["hits"] >= 7
    assert after["model"]["decoded_prompts"] - before["model"]["decoded_prompts"] == 16
    assert after["model"]["decode_batches"] - before["model"]["decode_batches"] < 16  # some went together
    assert after["model"]["largest_batch"] >= 2


def test_health_answers_while_the_model_encodes(sam2_server, client, make_sample):
    image = make_sample(seed=22, h=200, w=180).image
    worker = threading.Thread(target=client.upload, args=(image,), kwargs={"encode": True})
    worker.start()
    latencies, busy = [], 0
    while worker.is_alive():
        start = time.perf_counter()
        health = httpx.get(f"{sam2_server.url}/health", timeout=10).json()
        latencies.append(time.perf_counter() - start)
        busy += health["queue_depth"] > 0
        time.sleep(0.05)
    worker.join()
    assert busy >= 1, "the encode finished before /health could see it"
    assert max(latencies) < 1.0, latencies


def test_one_bad_prompt_in_a_batch_fails_alone(sam2_server, client, make_sample):
    image_id = client.upload(make_sample(seed=23).image)["image_id"]  # not encoded yet
    stats = sam2_server.app.state.server.worker.stats
    pairs_before = stats.batch_sizes.get(2, 0)
    wrong = np.zeros((1, 10, 10), "<f4")
    bad_prompt = {"box": [10, 10, 60, 60],
                  "mask_input": {"shape": [1, 10, 10], "data": base64.b64encode(wrong.tobytes()).decode()}}
    bodies = [{"image_id": image_id, "prompts": [{"box": [10, 10, 60, 60]}]},
              {"image_id": image_id, "prompts": [bad_prompt]}]
    # Both wait for the same encode, then reach the model together: one batch of two.
    with ThreadPoolExecutor(2) as pool:
        good, bad = pool.map(lambda b: httpx.post(f"{sam2_server.url}/v1/predict", json=b, timeout=60), bodies)
    assert good.status_code == 200 and good.json()["predictions"][0]["logits"]["shape"] == [1, 64, 64]
    assert bad.status_code == 422 and "mask_input" in bad.json()["detail"], bad.text
    assert stats.batch_sizes.get(2, 0) == pairs_before + 1


def test_a_server_on_a_model_process_answers_like_the_model_in_this_process(sam2_tool, make_sample, tmp_path):
    """serve --model-process: the same checkpoint in a process of its own gives the same masks, batches
    concurrent decodes, and a bad prompt's error still comes back as that prompt's 422."""
    import torch

    from medseg_agent.tools.process import ProcessTool
    from medseg_agent.tools.spec import ToolSpec

    checkpoint = tmp_path / "sam2-random.pt"
    torch.save({"model": sam2_tool.model.state_dict()}, checkpoint)
    tool = ProcessTool(ToolSpec("sam2", checkpoint=checkpoint, options={"image_size": 256}))
    server = start_server(tool)
    try:
        sample = make_sample(seed=24)
        masks = []
        for segmenter in (build_tool(server.url), sam2_tool):
            env = SegmentationEnv(segmenter, EpisodeConfig(max_turns=3))
            env.reset(sample)
            masks.append([env.step(AddBox(200, 150, 800, 850)).mask, env.step(AddPoint(500, 500, False)).mask,
                          env.step(AddPoint(300, 400, True)).mask])
        for remote_mask, local_mask in zip(*masks, strict=True):
            assert (remote_mask == local_mask).mean() > 0.999

        client = ToolServerClient(server.url)
        image_id = client.upload(sample.image)["image_id"]
        with ThreadPoolExecutor(8) as pool:
            areas = list(pool.map(lambda i: client.create_session(image_id=image_id, coordinate_space="norm1000")
                                  .add_box([200 + 10 * i, 150, 800, 850])["mask_area"], range(8)))
        assert len(areas) == 8 and all(area > 0 for area in areas)
        health = client.health()
        assert health["model"]["encodes"] == 1 and health["model"]["largest_batch"] >= 2
        wrong = np.zeros((1, 10, 10), "<f4")
        bad = {"box": [10, 10, 60, 60],
               "mask_input": {"shape": [1, 10, 10], "data": base64.b64encode(wrong.tobytes()).decode()}}
        answer = httpx.post(f"{server.url}/v1/predict", json={"image_id": image_id, "prompts": [bad]}, timeout=60)
        assert answer.status_code == 422 and "mask_input" in answer.json()["detail"], answer.text
        client.close()
    finally:
        server.stop()
        tool.close()
    assert not tool.is_alive()


def test_health_and_metrics_show_whether_the_decoder_graphs_are_used(make_sample, host_capture):
    """A server whose tool replays its decoder from captured graphs (the host stand-in here) says so:
    captured shapes, replays and eager calls in /health's tool counters and in /metrics."""
    from medseg_agent.tools.graphs import GraphedForward

    tool = build_tool("sam2", allow_random_weights=True, image_size=256)
    tool.decoder = GraphedForward(tool.decoder_forward, enabled=True, capture=host_capture)
    server = start_server(tool)
    client = ToolServerClient(server.url)
    try:
        assert client.health()["tool_counters"]["decoder_graph_replays"] == 0
        image_id = client.upload(make_sample(seed=23).image)["image_id"]
        for i in range(3):
            session = client.create_session(image_id=image_id, coordinate_space="norm1000")
            session.add_box([200 + 10 * i, 150, 800, 850])
            session.add_point([500, 500], "positive")
        counters = client.health()["tool_counters"]
        assert counters["decoder_graph_replays"] == 6 and counters["decoder_graph_eager_calls"] == 0
        assert counters["decoder_graphs"] == 2 and counters["decode_count"] == 6  # box; box + click + logits
        assert 'medseg_tool_counter{name="decoder_graph_replays"} 6.0' in client.metrics()
    finally:
        client.close()
        server.stop()
