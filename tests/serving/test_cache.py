"""The pieces under the server, without HTTP: embedding cache, image store, upload decoding, sessions."""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

from medseg_agent.serving.batching import DECODE, ENCODE, ModelThread
from medseg_agent.serving.cache import EmbeddingCache
from medseg_agent.serving.images import ImageRejected, ImageStore, decode_image_bytes, image_key, upload_digest
from medseg_agent.serving.sessions import Session, SessionLimit, SessionNotFound, SessionStore
from medseg_agent.tools.base import EncodedPrediction, ImageEmbedding
from medseg_agent.vocabulary.actions import AddBox, AddPoint, CoordinateSpace
from medseg_agent.vocabulary.coordinates import CoordinateFrame
from medseg_agent.vocabulary.prompts import Prediction


def embedding(nbytes: int, tag: str = "") -> ImageEmbedding:
    return ImageEmbedding(data=tag, image_size=(4, 4), nbytes=nbytes)


def test_concurrent_requests_for_one_image_share_one_computation():
    calls: list[str] = []

    async def scenario():
        cache = EmbeddingCache(max_bytes=1000)

        async def compute():
            calls.append("a")
            await asyncio.sleep(0.05)
            return embedding(10, "a")

        results = await asyncio.gather(*(cache.get("a", compute) for _ in range(8)))
        again = await cache.get("a", compute)
        return cache, results, again

    cache, results, again = asyncio.run(scenario())
    assert calls == ["a"]
    assert all(r is results[0] for r in results) and again is results[0]
    stats = cache.stats()
    assert (stats.misses, stats.hits, stats.entries, stats.bytes) == (1, 8, 1, 10)
    assert stats.hit_rate == pytest.approx(8 / 9)


def test_lru_eviction_keeps_the_byte_budget_and_the_recently_used():
    async def scenario():
        cache = EmbeddingCache(max_bytes=25)

        def maker(tag):
            async def compute():
                return embedding(10, tag)

            return compute

        for tag in ("a", "b"):
            await cache.get(tag, maker(tag))
        await cache.get("a", maker("a"))  # a is now the most recent
        await cache.get("c", maker("c"))  # over budget: b goes
        await cache.get("huge", lambda: _value(embedding(100, "huge")))  # larger than the budget: not kept
        return cache

    cache = asyncio.run(scenario())
    assert "a" in cache and "c" in cache and "b" not in cache and "huge" not in cache
    stats = cache.stats()
    assert stats.bytes == 20 <= stats.max_bytes and stats.evictions == 1


async def _value(value):
    return value


def test_a_failed_computation_reaches_every_waiter_and_is_retried_next_time():
    attempts = []

    async def scenario():
        cache = EmbeddingCache(max_bytes=100)

        async def compute():
            attempts.append(1)
            await asyncio.sleep(0.01)
            if len(attempts) == 1:
                raise RuntimeError("encoder failed")
            return embedding(1)

        outcomes = await asyncio.gather(*(cache.get("k", compute) for _ in range(3)), return_exceptions=True)
        retry = await cache.get("k", compute)
        return outcomes, retry

    outcomes, retry = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes) and retry.nbytes == 1
    assert len(attempts) == 2


def test_a_cancelled_caller_does_not_cancel_the_shared_computation():
    async def scenario():
        cache = EmbeddingCache(max_bytes=100)

        async def compute():
            await asyncio.sleep(0.05)
            return embedding(1, "done")

        first = asyncio.ensure_future(cache.get("k", compute))
        second = asyncio.ensure_future(cache.get("k", compute))
        await asyncio.sleep(0.01)
        first.cancel()
        return await second, cache

    result, cache = asyncio.run(scenario())
    assert result.data == "done" and "k" in cache and cache.misses == 1


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # uint16 arrays give 16-bit PNGs
    return buffer.getvalue()


def test_png_and_npy_uploads_of_the_same_pixels_get_the_same_key():
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    npy = io.BytesIO()
    np.save(npy, rgb)
    from_png = decode_image_bytes(png_bytes(rgb), max_side=64)
    from_npy = decode_image_bytes(npy.getvalue(), max_side=64)
    assert np.array_equal(from_png, rgb) and np.array_equal(from_npy, rgb)
    assert image_key(from_png) == image_key(from_npy) == image_key(rgb)
    gray = rgb[:, :, 0]
    assert image_key(decode_image_bytes(png_bytes(gray), 64)) == image_key(np.stack([gray] * 3, axis=2))
    assert image_key(rgb) != image_key(rgb[:, :29])


def npy_with_header(header: str) -> bytes:
    """A version-1.0 .npy file whose header is ``header`` (padded as numpy pads it), with 16 data bytes."""
    raw = header.encode("latin1")
    raw += b" " * ((64 - (10 + len(raw) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw + bytes(16)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"not an image at all", "not a readable image"),
        (png_bytes(np.zeros((10, 100), np.uint8)), "at most 64 pixels per side"),
        (png_bytes(np.zeros((1, 8), np.uint8)), "at least 2x2"),
        (b"\x93NUMPY\x01\x00garbage", "not a valid .npy"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': '|u1'\n", "not a valid .npy"),  # tokenize.TokenError in numpy
        # numpy's header parser raises tokenize.TokenError on these (the server answered 500)
        (npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (4, 4"), "not a valid .npy"),
        (npy_with_header("{'descr': '|u1"), "not a valid .npy"),
        (npy_with_header("((("), "not a valid .npy"),
        (npy_with_header("{" + "[" * 3000 + "]" * 3000 + "}"), "not a valid .npy"),
    ],
)
def test_unusable_uploads_are_rejected_with_the_reason(data, message):
    with pytest.raises(ImageRejected, match=message):
        decode_image_bytes(data, max_side=64)


def test_npy_header_is_checked_before_the_data_is_read():
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (100000, 100000)})
    with pytest.raises(ImageRejected, match="at most 64"):
        decode_image_bytes(b"\x93NUMPY\x01\x00" + header.getvalue()[8:], max_side=64)
    truncated = io.BytesIO()
    np.save(truncated, np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageRejected, match="needs 100 bytes"):
        decode_image_bytes(truncated.getvalue()[:-5], max_side=64)


def test_image_store_never_evicts_pinned_images():
    store = ImageStore(max_bytes=250)
    images = [np.full((10, 10), i, np.uint8) for i in range(3)]  # 100 bytes each
    keys = [store.put(image)[0] for image in images[:2]]
    assert store.pin(keys[0]) is not None
    key2, created = store.put(images[2])
    assert created and store.get(keys[1]) is None  # unpinned and oldest: evicted
    assert store.get(keys[0]) is not None and store.get(key2) is not None
    assert store.put(images[2]) == (key2, False)
    store.unpin(keys[0])
    assert store.stats()["bytes"] <= 250


def test_known_upload_bytes_are_found_before_decoding_and_forgotten_with_the_image():
    store = ImageStore(max_bytes=250)
    image = np.full((10, 10), 7, np.uint8)
    digest = upload_digest(png_bytes(image))
    assert store.find_upload(digest) is None
    key, created = store.put(image, upload=digest)
    assert created and store.find_upload(digest)[0] == key
    assert upload_digest(png_bytes(image)) == digest and upload_digest("aGk=") == upload_digest(b"aGk=")
    assert store.put(image, upload=upload_digest(b"other bytes, same pixels")) == (key, False)
    for i in range(3):  # 300 bytes of other images: the first one is evicted, with its upload digests
        store.put(np.full((10, 10), i, np.uint8))
    assert store.get(key) is None and store.find_upload(digest) is None


def test_sessions_follow_the_environment_prompt_semantics_and_undo():
    image = np.zeros((40, 50, 3), np.uint8)
    session = Session("s", "k", image, CoordinateFrame(CoordinateSpace.PIXEL, (40, 50), (40, 50)), undo_depth=8)

    def predict(fill: bool) -> EncodedPrediction:
        return EncodedPrediction.from_prediction(
            Prediction(mask=np.full((40, 50), fill), logits=np.full((1, 8, 8), 1.0 if fill else -1.0), score=0.5))

    box_state = session.next_state(AddBox(5, 5, 20, 20))
    assert box_state.logits is None and box_state.points == []
    session.commit(box_state, predict(True))
    point_state = session.next_state(AddPoint(10, 12, positive=False))
    assert point_state.box == (5, 5, 20, 20) and point_state.labels == [0]
    assert point_state.logits is not None and point_state.logits[0, 0, 0] == 1.0  # previous logits go along
    session.commit(point_state, predict(False))
    new_box = session.next_state(AddBox(1, 1, 9, 9))
    assert new_box.points == [] and new_box.logits is None  # a new box drops points and logits
    assert session.undo() and session.mask().all() and session.state.points == []
    assert session.mask_area() == 40 * 50
    session.reset()
    assert session.actions == 0 and not session.mask().any() and session.state.box is None
    assert session.mask().shape == (40, 50) and session.mask_area() == 0
    assert session.undo() and session.state.box == (5, 5, 20, 20)  # reset can be undone
    assert session.undo() and not session.undo()


def test_session_store_limits_and_expiry(monkeypatch):
    store = ImageStore(10_000)
    key, _ = store.put(np.zeros((10, 10, 3), np.uint8))
    sessions = SessionStore(store, ttl_s=60, max_sessions=2, undo_depth=4)
    frame = CoordinateFrame(CoordinateSpace.PIXEL, (10, 10), (10, 10))
    with pytest.raises(KeyError):
        sessions.create("0" * 64, frame)
    a, b = sessions.create(key, frame), sessions.create(key, frame)
    assert a.id != b.id and len(a.id) >= 32
    with pytest.raises(SessionLimit):
        sessions.create(key, frame)
    a.last_used -= 61  # idle past the TTL
    with pytest.raises(SessionNotFound):
        sessions.get(a.id)
    b.last_used -= 61
    assert sessions.expire() == 1 and len(sessions) == 0 and sessions.expired_total == 2


def test_model_thread_runs_waiting_decodes_before_waiting_encodes():
    async def scenario() -> list[str]:
        thread = ModelThread(asyncio.get_running_loop())
        started = threading.Event()
        release = threading.Event()
        order: list[str] = []

        def block() -> None:
            started.set()
            release.wait(5)

        first = thread.submit(ENCODE, block)
        await asyncio.to_thread(started.wait, 5)  # the thread is busy: the next calls queue up
        calls = [thread.submit(ENCODE, order.append, "encode-1"), thread.submit(DECODE, order.append, "decode-1"),
                 thread.submit(ENCODE, order.append, "encode-2"), thread.submit(DECODE, order.append, "decode-2")]
        skipped = thread.submit(DECODE, order.append, "cancelled before it started")
        skipped.cancel()
        failing = thread.submit(DECODE, lambda: 1 / 0)
        release.set()
        await asyncio.wait_for(first, 5)
        await asyncio.wait_for(asyncio.gather(*calls), 5)
        with pytest.raises(ZeroDivisionError):
            await asyncio.wait_for(failing, 5)
        started.clear()
        release.clear()
        running = thread.submit(ENCODE, block)
        await asyncio.to_thread(started.wait, 5)
        never = thread.submit(ENCODE, order.append, "after stop")
        thread.stop()  # cancels what has not started; the running call finishes
        release.set()
        await asyncio.wait_for(running, 5)
        assert never.cancelled()
        return order

    assert asyncio.run(scenario()) == ["decode-1", "decode-2", "encode-1", "encode-2"]
