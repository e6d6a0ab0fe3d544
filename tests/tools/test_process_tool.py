"""The model in a process of its own (ProcessTool): the same answers as in-process, errors that keep
their type, embeddings freed when their handles go, a dead model process reported, and a server on it."""

from __future__ import annotations

import gc
import os
import signal

import numpy as np
import pytest
from process_tool_plugin import NAME as FAILING_TOOL

from medseg_agent.io.masks import decode_rle
from medseg_agent.tools.process import ProcessTool
from medseg_agent.tools.registry import build_tool
from medseg_agent.tools.spec import ToolSpec
from medseg_agent.vocabulary.errors import ModelUnavailable, ToolError
from medseg_agent.vocabulary.prompts import Prompt


def _image(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(60, 10, (h, w))
    cy, cx = 30 + 10 * seed, 40 + 12 * seed
    yy, xx = np.mgrid[:h, :w]
    image[np.hypot(yy - cy, xx - cx) < 14] += 110
    return np.clip(image, 0, 255).astype(np.uint8)


PROMPTS = [
    Prompt(box=np.array([20, 12, 70, 52])),
    Prompt(points=[[40, 30]], labels=[1]),
    Prompt(box=np.array([30, 20, 90, 70]), points=[[64, 50], [35, 25]], labels=[1, 0]),
]


@pytest.fixture(scope="module")
def remote():
    tool = ProcessTool(ToolSpec(FAILING_TOOL, preload=("process_tool_plugin",)))
    yield tool
    tool.close()


def test_the_model_process_answers_exactly_like_the_tool_in_this_process(remote):
    local = build_tool("classic")
    assert remote.name == FAILING_TOOL and remote.pid != os.getpid()
    images = [_image(0), _image(1)]
    ours = [remote.encode(image) for image in images]
    theirs = [local.encode(image) for image in images]
    assert [e.image_size for e in ours] == [e.image_size for e in theirs] == [(96, 128)] * 2

    single = remote.decode(ours[1], PROMPTS[0])
    assert np.array_equal(single.mask, local.decode(theirs[1], PROMPTS[0]).mask)

    requests = [(i, prompt) for prompt in PROMPTS for i in (0, 1)]  # prompts of both images, interleaved
    many = remote.decode_many([(ours[i], p) for i, p in requests])
    encoded = remote.decode_encoded([(ours[i], p) for i, p in requests])
    expected = local.decode_many([(theirs[i], p) for i, p in requests])
    for got, rle, want in zip(many, encoded, expected, strict=True):
        assert got.mask.dtype == bool and np.array_equal(got.mask, want.mask)
        assert np.array_equal(decode_rle(rle.rle), want.mask) and rle.area == int(want.mask.sum())
    batch = remote.decode_batch(ours[0], PROMPTS)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(batch, expected[0::2], strict=True))
    assert remote.encode_count >= 2 and remote.decode_count >= 1 + 6 + 6 + 3  # counted on this side too
    stats = remote.stats()  # this side's counts, and the model process's own counters beside them
    assert stats["counted_in_pid"] == remote.pid and stats["decode_count"] == remote.decode_count


def test_errors_keep_their_type_and_message_and_the_process_goes_on(remote):
    embedding = remote.encode(_image(2))
    with pytest.raises(ToolError, match="refused by the test tool"):
        remote.decode(embedding, Prompt(box=np.array([1, 10, 40, 40])))
    with pytest.raises(ToolError, match="UnpicklableError: the test tool's own failure"):
        remote.decode_encoded([(embedding, Prompt(box=np.array([2, 10, 40, 40])))])
    with pytest.raises(ToolError, match="needs a box or at least one point"):  # refused before crossing
        remote.decode_encoded([(embedding, Prompt())])
    with pytest.raises(ToolError, match="not made by this"):
        remote.decode(build_tool("classic").encode(_image(2)), PROMPTS[0])
    assert remote.decode(embedding, PROMPTS[0]).mask.any()  # still serving


def test_an_embedding_is_freed_in_the_model_process_when_its_handle_goes(remote):
    gc.collect()
    remote.held_embeddings()  # sends the releases of earlier tests' embeddings
    before = remote.held_embeddings()
    embeddings = [remote.encode(_image(seed)) for seed in (3, 4, 5)]
    assert remote.held_embeddings() == before + 3
    del embeddings[0:2]
    gc.collect()
    assert remote.held_embeddings() == before + 1  # released with the next call
    assert remote.decode(embeddings[0], PROMPTS[1]).mask.shape == (96, 128)


def test_a_tool_that_cannot_be_built_fails_at_construction_with_the_reason():
    with pytest.raises(ToolError, match="could not build tool 'no-such-tool'.*unknown tool 'no-such-tool'"):
        ProcessTool(ToolSpec("no-such-tool"))
    with pytest.raises(ToolError, match="takes no checkpoint"):
        ProcessTool(ToolSpec("classic", checkpoint="weights.pt"))


def test_a_dead_model_process_is_reported_on_every_later_call_and_by_the_server():
    """Not a ToolError (the request's fault, 422) but ModelUnavailable: the server answers 503, its
    /health too, so that an orchestrator restarts it."""
    import httpx

    from medseg_agent.serving.app import create_app
    from medseg_agent.serving.server import BackgroundServer

    tool = ProcessTool(ToolSpec("classic"))
    embedding = tool.encode(_image(0))
    server = BackgroundServer(create_app(tool)).start()
    try:
        session = httpx.post(f"{server.url}/v1/sessions", json={"image_base64": _png_base64(_image(1))}, timeout=30)
        session_id = session.json()["session_id"]
        assert httpx.get(f"{server.url}/health").status_code == 200
        os.kill(tool.pid, signal.SIGKILL)
        with pytest.raises(ModelUnavailable, match=r"model process of 'classic' exited \(exit code -9\)"):
            tool.decode(embedding, PROMPTS[0])
        with pytest.raises(ModelUnavailable, match="was closed"):
            tool.encode(_image(1))
        box = httpx.post(f"{server.url}/v1/sessions/{session_id}/box", json={"bbox_2d": [10, 10, 60, 60]})
        assert box.status_code == 503 and "model process" in box.json()["detail"]
        health = httpx.get(f"{server.url}/health")
        assert health.status_code == 503 and "restart the server" in health.json()["detail"]
    finally:
        server.stop()
    tool.close()  # closing a dead one is harmless
    assert not tool.is_alive()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="shared-memory blocks are listed in /dev/shm")
def test_a_model_process_sent_sigterm_removes_its_shared_memory_before_it_exits():
    """An orchestrator that stops every process of the service (systemd's control group) sends the
    model process SIGTERM too: it closes its channel, removing its block, instead of dying with it."""

    def blocks() -> set[str]:
        return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}

    before = blocks()
    tool = ProcessTool(ToolSpec("classic"))
    try:
        embedding = tool.encode(_image(0, 320, 320))  # 300 kB out: this end's block
        assert tool.decode(embedding, Prompt(box=np.array([20, 20, 120, 120]))).mask.nbytes >= 64 * 1024  # and back
        ours_and_theirs = blocks() - before
        assert len(ours_and_theirs) == 2
        os.kill(tool.pid, signal.SIGTERM)
        with pytest.raises(ModelUnavailable, match=r"exited \(exit code 143\)"):  # 128 + SIGTERM: a clean exit
            tool.decode(embedding, PROMPTS[0])
        assert len(blocks() - before) == 1  # its block is gone, ours stays until we close
    finally:
        tool.close()
    assert not blocks() - before


def _png_base64(image: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_large_arrays_cross_through_shared_memory_exactly():
    import multiprocessing
    from multiprocessing.shared_memory import SharedMemory

    from medseg_agent.tools.process import OUT_OF_BAND_BYTES, Channel

    a, b = multiprocessing.Pipe()
    sender, receiver = Channel(a), Channel(b)
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(1, 256, 256)).astype(np.float32) for _ in range(3)]  # 256 KiB each
    small = np.arange(6, dtype=np.int64)
    sender.send({"logits": logits, "small": small, "text": "x"})
    got = receiver.recv()
    assert all(np.array_equal(x, y) and x.flags.writeable for x, y in zip(got["logits"], logits, strict=True))
    assert np.array_equal(got["small"], small) and got["text"] == "x"
    first_block = sender.shared_block
    big = rng.integers(0, 255, size=(4 << 20,), dtype=np.uint8)  # larger than the first block: a new one
    sender.send([big, logits[0]])
    again = receiver.recv()
    assert np.array_equal(again[0], big) and np.array_equal(again[1], logits[0])
    second_block = sender.shared_block
    assert first_block and second_block and second_block != first_block
    sender.send(np.zeros(OUT_OF_BAND_BYTES // 8 - 1))  # under the threshold: in the pipe
    assert receiver.recv().shape == (OUT_OF_BAND_BYTES // 8 - 1,)
    sender.close()
    receiver.close()
    for name in (first_block, second_block):  # the sender's blocks are gone: replaced, then closed
        with pytest.raises(FileNotFoundError):
            SharedMemory(name)
