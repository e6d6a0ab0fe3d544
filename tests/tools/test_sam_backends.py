"""SAM / MedSAM / SAM 2 backends with randomly initialised weights on the CPU.

Random weights give meaningless masks, so these tests check plumbing, not quality: shapes and
dtypes, feeding logits back, that the image encoder runs once per image, that batched decoding
equals one-by-one decoding, that checkpoints round-trip through a file, and that bad files fail
with an error naming the file. A ViT-B encode at 1024 takes tens of seconds on two CPU cores, so
each model is built and each image encoded once per module.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from medseg_agent.io.masks import encode_rle
from medseg_agent.tools.base import ImageEmbedding
from medseg_agent.tools.checkpoints import (
    check_state_dict,
    describe_state_dict,
    resolve_checkpoint,
    unwrap_state_dict,
)
from medseg_agent.tools.registry import build_tool
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.prompts import Prompt

pytest.importorskip("segment_anything")
pytest.importorskip("sam2")

from medseg_agent.serving.config import ServerConfig  # noqa: E402
from medseg_agent.tools import sam_family  # noqa: E402
from medseg_agent.tools.graphs import GraphedForward  # noqa: E402
from medseg_agent.tools.sam import (  # noqa: E402  (after the importorskip guards)
    MEDSAM,
    SquareResize,
    build_medsam_tool,
    build_sam_tool,
    medsam_preprocess,
)
from medseg_agent.tools.sam2 import build_sam2_tool  # noqa: E402
from medseg_agent.tools.sam_family import (  # noqa: E402
    CUDA_MAX_BATCH,
    DEFAULT_MAX_BATCH,
    batch_bucket,
    inference_context,
    resolve_bucketing,
    resolve_max_batch,
)

H, W = 200, 256  # deliberately not square: catches x/y and aspect-ratio mix-ups
BOX = np.array([88.0, 60.0, 172.0, 140.0], dtype=np.float32)
CLICK = np.array([[128.0, 100.0]], dtype=np.float32)


def disc_image(h: int = H, w: int = W) -> np.ndarray:
    """A bright disc on a dark, slightly noisy background (RGB uint8)."""
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 130) ** 2 + (yy - 100) ** 2 <= 35**2
    rng = np.random.default_rng(0)
    gray = np.clip(40 + 170 * disc + rng.normal(0, 8, (h, w)), 0, 255).astype(np.uint8)
    return np.stack([gray] * 3, axis=2)


def mixed_prompts(logits: np.ndarray) -> list[Prompt]:
    """Prompts of every structure (box, single click, clicks + logits, box + click), interleaved,
    two of each so that every group is really batched, for batch-vs-loop checks."""
    boxes = [Prompt(box=BOX + np.array([i, -i, 2 * i, i], dtype=np.float32)) for i in range(2)]
    clicks = [Prompt(points=CLICK + i, labels=[1]) for i in range(2)]
    refine = [
        Prompt(points=[[128, 100], [20 + 5 * i, 20]], labels=[1, 0], mask_input=logits) for i in range(2)
    ]
    box_and_click = [Prompt(box=BOX, points=[[128, 100 + i]], labels=[1]) for i in range(2)]
    return [boxes[0], clicks[0], refine[0], boxes[1], box_and_click[0], clicks[1], refine[1], box_and_click[1]]


# -- module-scoped models: each built and each image encoded once ------------------------------
@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return disc_image()


@pytest.fixture(scope="module")
def sam_tool():
    torch.manual_seed(0)
    return build_sam_tool(allow_random_weights=True)


@pytest.fixture(scope="module")
def sam_embedding(sam_tool, image) -> ImageEmbedding:
    return sam_tool.encode(image)


@pytest.fixture(scope="module")
def sam2_tool():
    torch.manual_seed(0)
    return build_sam2_tool(allow_random_weights=True)


@pytest.fixture(scope="module")
def sam2_embedding(sam2_tool, image) -> ImageEmbedding:
    return sam2_tool.encode(image)


@pytest.fixture(scope="module", params=["sam", "sam2"])
def backend(request, sam_tool, sam_embedding, sam2_tool, sam2_embedding):
    """(tool, embedding) for each backend, so shared behaviour is tested once for both."""
    if request.param == "sam":
        return sam_tool, sam_embedding
    return sam2_tool, sam2_embedding


@pytest.fixture(scope="module")
def sam_checkpoint(sam_tool, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_b_random.pth"
    torch.save(sam_tool.model.state_dict(), path)  # plain state dict, like sam_vit_b_01ec64.pth
    return path


@pytest.fixture(scope="module")
def sam2_checkpoint(sam2_tool, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": sam2_tool.model.state_dict()}, path)  # SAM 2 / MedSAM2 wrapper
    return path


# -- shared behaviour ---------------------------------------------------------------------------
@pytest.mark.slow
def test_box_then_points_with_previous_logits(backend):
    tool, embedding = backend
    low = tool.low_res_size
    assert embedding.image_size == (H, W) and embedding.nbytes > 0

    first = tool.decode(embedding, Prompt(box=BOX))
    assert first.mask.shape == (H, W) and first.mask.dtype == bool
    assert first.logits.shape == (1, *low) and first.logits.dtype == np.float32
    assert np.isfinite(first.score)

    second = tool.decode(
        embedding, Prompt(points=[[128, 100], [10, 10]], labels=[1, 0], mask_input=first.logits)
    )
    assert second.mask.shape == (H, W) and second.logits.shape == (1, *low)
    # the logits input changes the answer (the dense prompt embedding is not the "no mask" one)
    without = tool.decode(embedding, Prompt(points=[[128, 100], [10, 10]], labels=[1, 0]))
    assert not np.allclose(second.logits, without.logits)

    # squeezed logits are accepted too; anything else is refused with the expected shape
    same = tool.decode(embedding, Prompt(points=[[128, 100], [10, 10]], labels=[1, 0],
                                         mask_input=first.logits[0]))
    np.testing.assert_array_equal(same.logits, second.logits)
    with pytest.raises(ToolError, match=rf"\(1, {low[0]}, {low[1]}\)"):
        tool.decode(embedding, Prompt(box=BOX, mask_input=np.zeros((64, 64), np.float32)))
    with pytest.raises(ToolError, match="NaN"):
        tool.decode(embedding, Prompt(points=[[np.nan, 3]], labels=[1]))
    assert tool.encode_count == 1


@pytest.mark.slow
def test_single_click_picks_best_of_three(backend):
    tool, embedding = backend
    prediction = tool.decode(embedding, Prompt(points=CLICK, labels=[1]))
    assert prediction.mask.shape == (H, W) and prediction.logits.shape == (1, *tool.low_res_size)
    assert tool._wants_multimask(Prompt(points=CLICK, labels=[1]))
    assert not tool._wants_multimask(Prompt(points=CLICK, labels=[1], box=BOX))
    assert not tool._wants_multimask(Prompt(points=[[1, 2], [3, 4]], labels=[1, 0]))
    assert not tool._wants_multimask(Prompt(points=CLICK, labels=[1], mask_input=prediction.logits))


@pytest.mark.slow
def test_batch_decode_equals_loop_and_keeps_order(backend):
    tool, embedding = backend
    assert tool.supports_batch_decode
    seed = tool.decode(embedding, Prompt(box=BOX))
    prompts = mixed_prompts(seed.logits)
    encodes, decodes = tool.encode_count, tool.decode_count

    batched = tool.decode_batch(embedding, prompts)
    looped = [tool.decode(embedding, p) for p in prompts]

    assert len(batched) == len(prompts)
    for b, s in zip(batched, looped, strict=True):
        np.testing.assert_allclose(b.logits, s.logits, rtol=1e-4, atol=1e-4)
        assert b.score == pytest.approx(s.score, abs=1e-4)
        assert (b.mask != s.mask).mean() < 1e-3  # only pixels sitting exactly on the threshold may differ
    assert tool.decode_count == decodes + 2 * len(prompts)
    assert tool.encode_count == encodes == 1
    assert tool.decode_batch(embedding, []) == []
    with pytest.raises(ToolError, match="prompt 1"):
        tool.decode_batch(embedding, [Prompt(box=BOX), Prompt()])


def record_call_sizes(tool, monkeypatch) -> list[int]:
    """The rows of each decoder call the tool makes from now on (filled as calls happen)."""
    sizes: list[int] = []
    original = tool._forward_rows

    def spy(rows):
        sizes.append(len(rows))
        return original(rows)

    monkeypatch.setattr(tool, "_forward_rows", spy)
    return sizes


@pytest.mark.slow
def test_batches_are_chunked(backend, monkeypatch):
    tool, embedding = backend
    prompts = [Prompt(box=BOX + i) for i in range(3)]
    reference = tool.decode_batch(embedding, prompts)
    monkeypatch.setattr(tool, "max_batch", 2)
    sizes = record_call_sizes(tool, monkeypatch)
    chunked = tool.decode_batch(embedding, prompts)
    assert sizes == [2, 1]
    for a, b in zip(reference, chunked, strict=True):
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_bucketed_calls_run_power_of_two_rows_and_answer_only_the_real_ones(backend, monkeypatch):
    """On a GPU each new batch shape costs a first call; bucketing pads a call to the next power of
    two with copies of its last row, and the copies' answers never reach the caller."""
    tool, embedding = backend
    assert tool.bucket_batches is False  # the default on a CPU: padding would cost full compute here
    seed = tool.decode(embedding, Prompt(box=BOX))
    requests = [(embedding, Prompt(box=BOX + i)) for i in range(3)]
    requests += [(embedding, Prompt(box=BOX, points=[[30.0 + i, 30.0]], labels=[1], mask_input=seed.logits))
                 for i in range(5)]
    plain = tool.decode_many(requests)
    plain_encoded = tool.decode_encoded(requests)
    sizes = record_call_sizes(tool, monkeypatch)
    monkeypatch.setattr(tool, "bucket_batches", True)
    bucketed = tool.decode_many(requests)
    bucketed_encoded = tool.decode_encoded(requests)
    assert sorted(sizes) == [4, 4, 8, 8]  # 3 box rows -> 4, 5 box+click rows -> 8, for each call
    assert len(bucketed) == len(bucketed_encoded) == len(requests)
    for a, b in zip(plain, bucketed, strict=True):
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-4)
        assert (a.mask != b.mask).mean() < 1e-3  # only pixels sitting exactly on the threshold may differ
    for a, b in zip(plain_encoded, bucketed_encoded, strict=True):
        assert abs(a.area - b.area) <= 1e-3 * a.rle["size"][0] * a.rle["size"][1]


def test_batch_buckets_are_powers_of_two_up_to_the_largest_call():
    assert [batch_bucket(n, 16) for n in (1, 2, 3, 4, 5, 9, 16)] == [1, 2, 4, 4, 8, 16, 16]
    assert [batch_bucket(n, 24) for n in (17, 24)] == [24, 24]  # never above max_batch
    assert resolve_bucketing(None, torch.device("cpu")) is False
    assert resolve_bucketing(None, torch.device("cuda")) is True
    assert resolve_bucketing(False, torch.device("cuda")) is False


def test_decoder_calls_take_the_server_batch_on_a_gpu_and_less_on_a_cpu():
    """On a GPU a forward costs its operator launches whatever its rows: the server's batch of 32
    goes in one call there; on a CPU rows cost compute and 16 bounds the upsampling's memory."""
    assert resolve_max_batch(None, torch.device("cuda")) == CUDA_MAX_BATCH == ServerConfig().max_batch
    assert resolve_max_batch(None, torch.device("cpu")) == DEFAULT_MAX_BATCH < CUDA_MAX_BATCH
    assert resolve_max_batch(4, torch.device("cuda")) == 4
    for bad in (0, 1.5, True, "8"):  # from --tool-option max_batch=..., JSON values
        with pytest.raises(ToolError, match=rf"max_batch must be a whole number >= 1, got {bad!r}"):
            resolve_max_batch(bad, torch.device("cpu"))


@pytest.mark.slow
def test_encoded_batch_is_the_batch_run_length_encoded_and_rows_own_their_arrays(backend):
    """``decode_encoded`` (what the server calls) gives exactly the masks of ``decode_many`` as RLE,
    their areas and the same logits; every row's arrays are its own, not views of the batch buffer
    (a session keeps its logits for turns and undo steps: a view would pin the whole batch)."""
    tool, embedding = backend
    seed = tool.decode(embedding, Prompt(box=BOX))
    requests = [(embedding, p) for p in mixed_prompts(seed.logits)]
    plain = tool.decode_many(requests)
    encoded = tool.decode_encoded(requests)
    for p, e in zip(plain, encoded, strict=True):
        assert e.rle == encode_rle(p.mask) and e.area == int(p.mask.sum())
        np.testing.assert_array_equal(e.logits, p.logits)
        assert e.score == p.score
    logits = [e.logits for e in encoded] + [p.logits for p in plain]
    masks = [p.mask for p in plain]
    for group in (logits, masks):
        assert all(buffer_of(a).nbytes == a.nbytes for a in group)
        assert not any(np.shares_memory(a, b) for i, a in enumerate(group) for b in group[i + 1:])


def buffer_of(array: np.ndarray) -> np.ndarray:
    """The numpy array whose memory ``array`` views (itself if it owns its memory)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


@pytest.mark.slow
def test_concurrent_decodes_match_serial(backend):
    """The predictor is stateful; the tool server decodes from several threads at once."""
    tool, embedding = backend
    prompts = [Prompt(box=BOX + i) for i in range(3)]
    serial = [tool.decode(embedding, p).logits for p in prompts]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = tool.decode(embedding, prompts[i]).logits

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, expected in enumerate(serial):
        np.testing.assert_allclose(results[i], expected, rtol=1e-5, atol=1e-5)
    # calls work on copies: the tool's own predictor never pins an image's features
    template = tool.predictor
    assert getattr(template, "features", None) is None and getattr(template, "_features", None) is None


@pytest.mark.slow
def test_answers_through_captured_graphs_equal_eager_ones(backend, host_capture, monkeypatch):
    """The decoder replayed from captured graphs (here the host stand-in with a CUDA graph's
    buffer semantics, see tests/graph_capture.py) answers as the eager decoder, one graph per prompt structure,
    whatever rows sit in each place of a graph's buffers."""
    tool, embedding = backend
    seed = tool.decode(embedding, Prompt(box=BOX))
    requests = [(embedding, p) for p in mixed_prompts(seed.logits)]
    eager = tool.decode_encoded(requests)
    graphed = GraphedForward(tool.decoder_forward, enabled=True, capture=host_capture)
    monkeypatch.setattr(tool, "decoder", graphed)
    for order in (slice(None), slice(None, None, -1)):
        for a, b in zip(eager[order], tool.decode_encoded(requests[order]), strict=True):
            assert a.rle == b.rle and a.score == pytest.approx(b.score, abs=1e-6)
            np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
    # SAM 2's graph takes the prompts (4 structures); SAM's takes their embeddings, where a box + a
    # click and two clicks + logits are both 3 tokens and a dense map: 3 shapes
    assert graphed.graphs == (4 if tool.name == "sam2" else 3)
    assert graphed.replays == 8 and graphed.eager_calls == 0


@pytest.mark.slow
def test_the_captured_decoder_never_waits_for_the_host(backend, host_waits, monkeypatch):
    """A CUDA graph cannot hold an operator whose result the host waits for (a value read back, a
    size that depends on the data); the decoder's forward has none, for every prompt structure."""
    tool, embedding = backend
    seed = tool.decode(embedding, Prompt(box=BOX))
    spy, calls = host_waits(), []
    original = tool.decoder.forward

    def watched(inputs, **static):
        calls.append(static)
        with spy:
            return original(inputs, **static)

    monkeypatch.setattr(tool.decoder, "forward", watched)
    tool.decode_batch(embedding, mixed_prompts(seed.logits))
    assert len(calls) == 4 and {c["multimask"] for c in calls} == {True, False}
    assert spy.found == []


class WeightCasts(TorchDispatchMode):
    """Records the operators that convert one of ``params``' tensors to another dtype."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        super().__init__()
        self.storages = {p.untyped_storage().data_ptr() for p in params}
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = args[0] if args else None
        if (str(func.overloadpacket) in ("aten.to", "aten._to_copy") and isinstance(first, torch.Tensor)
                and first.untyped_storage().data_ptr() in self.storages):
            self.casts += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.slow
def test_bf16_tool_casts_its_decoder_weights_once_and_answers_as_autocast_does(backend, monkeypatch):
    """Under bf16 autocast every call would cast each linear layer's and convolution's weights (a
    launch each, on a GPU); the tool stores them in bf16 once and caches the dense positional
    encoding, and answers bit for bit as plain autocast over the float32 model does."""
    tool, embedding = backend
    kind = type(tool)
    extra = {"variant": tool.variant} if tool.name != "sam2" else {}
    monkeypatch.setattr(sam_family, "cast_weights_for_autocast", lambda modules, dtype: 0)
    plain = kind(copy.deepcopy(tool.model), precision="bf16", **extra)
    monkeypatch.undo()
    cast = kind(copy.deepcopy(tool.model), precision="bf16", **extra)
    with inference_context(cast.device, "bf16"):
        assert torch.equal(cast.image_pe, cast.dense_positional_encoding())
    seed = tool.decode(embedding, Prompt(box=BOX))
    requests = [(embedding, p) for p in mixed_prompts(seed.logits)]
    want = plain.decode_encoded(requests)
    weights = [p for module in cast.decoder_modules() for p in module.parameters()]
    with WeightCasts(weights) as watched:
        got = cast.decode_encoded(requests)
    with WeightCasts([p for module in plain.decoder_modules() for p in module.parameters()]) as control:
        plain.decode_encoded(requests)
    assert watched.casts == 0 and control.casts > 50  # SAM 2: 100 of its weights, every call
    for a, b in zip(want, got, strict=True):
        assert a.rle == b.rle and a.score == b.score
        np.testing.assert_array_equal(a.logits, b.logits)
    assert {p.dtype for p in tool.model.parameters()} == {torch.float32}  # the fp32 tool keeps its weights


def test_sam_prompt_encoder_waits_for_the_host(sam_tool, host_waits):
    """Why SAM's prompt encoder stays out of its graph (and the check above can fail): it indexes
    with boolean masks of the labels."""
    spy = host_waits()
    points = (torch.rand(2, 3, 2) * 1024, torch.tensor([[1, 0, -1]] * 2))
    with torch.inference_mode(), spy:
        sam_tool.model.prompt_encoder(points=points, boxes=None, masks=None)
    assert "aten.index_put_.default" in spy.found


@pytest.mark.slow
def test_embeddings_are_not_interchangeable(sam_tool, sam_embedding, sam2_tool, sam2_embedding):
    with pytest.raises(ToolError, match="another tool"):
        sam_tool.decode(sam2_embedding, Prompt(box=BOX))
    with pytest.raises(ToolError, match="another tool"):
        sam2_tool.decode(sam_embedding, Prompt(box=BOX))


# -- SAM specifics ------------------------------------------------------------------------------
@pytest.mark.slow
def test_sam_mask_is_the_packages_postprocessing(sam_tool, sam_embedding):
    prediction = sam_tool.decode(sam_embedding, Prompt(box=BOX))
    state = sam_embedding.data
    logits = torch.from_numpy(prediction.logits)[None]
    full = sam_tool.model.postprocess_masks(logits, state.input_size, state.original_size)[0, 0]
    np.testing.assert_array_equal(prediction.mask, (full > 0).numpy())
    assert state.input_size == (800, 1024)  # longest side 1024, aspect kept


@pytest.mark.slow
def test_sam_checkpoint_round_trip(sam_tool, sam_embedding, sam_checkpoint):
    reloaded = build_tool("sam", checkpoint=sam_checkpoint, model_type="vit_b")
    assert reloaded.checkpoint == sam_checkpoint
    original, loaded = sam_tool.model.state_dict(), reloaded.model.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    # the embedding is opaque but portable between instances of the same tool
    for prompt in (Prompt(box=BOX), Prompt(points=CLICK, labels=[1])):
        a, b = sam_tool.decode(sam_embedding, prompt), reloaded.decode(sam_embedding, prompt)
        np.testing.assert_array_equal(a.logits, b.logits)
        np.testing.assert_array_equal(a.mask, b.mask)


@pytest.mark.slow
def test_sam_file_loaded_as_sam2_names_file_and_model(sam_checkpoint, sam_tool, sam2_tool):
    with pytest.raises(ToolError) as info:
        build_sam2_tool(checkpoint=sam_checkpoint)
    message = str(info.value)
    assert str(sam_checkpoint) in message
    assert "sam2.1_hiera_t.yaml" in message and "missing keys" in message and "unexpected keys" in message
    sam_keys, sam2_keys = set(sam_tool.model.state_dict()), set(sam2_tool.model.state_dict())
    assert sorted(sam2_keys - sam_keys)[0] in message  # a few offending keys are named
    assert sorted(sam_keys - sam2_keys)[0] in message
    assert "vit_b" in message  # and the file is recognised for what it is


# -- MedSAM -------------------------------------------------------------------------------------
def _medsam_reference(image: np.ndarray, size: int) -> np.ndarray:
    """The preprocessing lines of bowang-lab/MedSAM's MedSAM_Inference.py, verbatim."""
    from skimage import transform

    img_1024 = transform.resize(image, (size, size), order=3, preserve_range=True, anti_aliasing=True).astype(
        np.uint8
    )
    return (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)


@pytest.mark.parametrize("colour", [False, True])
def test_medsam_preprocess_matches_reference(colour):
    rng = np.random.default_rng(1)
    image = disc_image(300, 200)  # taller than the output: anti-aliasing along y, upsampling along x
    if colour:
        image = np.clip(image.astype(int) + rng.integers(-60, 60, image.shape), 0, 255).astype(np.uint8)
    out = medsam_preprocess(image, size=256)  # the reference's 3-D resize is slow; 256 keeps it cheap
    reference = _medsam_reference(image, 256)
    assert out.shape == (256, 256, 3) and out.dtype == np.float32
    # Equal up to float rounding, which the uint8 truncation turns into an occasional one-level
    # difference where the interpolated value is an exact integer (e.g. saturated regions).
    one_level = np.diff(np.unique(reference)).min()  # 1 / (max - min) of the uint8 image
    differ = ~np.isclose(out, reference, rtol=0, atol=1e-6)
    assert differ.mean() < 1e-3
    assert np.abs(out - reference).max() <= one_level + 1e-6


def test_medsam_preprocess_stretches_and_min_max_normalises():
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, :150] = 200  # left half bright
    image[:, 150:] = 50
    out = medsam_preprocess(image)
    assert out.shape == (1024, 1024, 3) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0  # min-max over the whole image, not mean/std
    # stretched to the square (no aspect preservation, no padding): the left half stays bright
    assert (out[:, :500] > 0.98).all() and (out[:, 530:] < 0.02).all()
    assert np.all(out[0] == out[-1])  # every row alike: no padding rows at the bottom
    flat = medsam_preprocess(np.full((20, 30, 3), 7, np.uint8))  # no division by zero
    assert np.isfinite(flat).all() and flat.max() == 0.0


def test_medsam_prompt_geometry_is_per_axis():
    transform = SquareResize(1024)
    box = transform.apply_boxes(np.array([[0, 0, 300, 100]], np.float32), (100, 300))
    np.testing.assert_allclose(box, [[0, 0, 1024, 1024]])
    point = transform.apply_coords(np.array([[150.0, 25.0]]), (100, 300))
    np.testing.assert_allclose(point, [[512.0, 256.0]])


class _RecordingEncoder(torch.nn.Module):
    """Stands in for MedSAM's ViT: records what it is fed and returns fixed random features.

    The point of the MedSAM test is the input pipeline, and a real ViT-B pass costs tens of
    seconds on CPU; the prompt encoder and mask decoder still run for real.
    """

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        generator = torch.Generator().manual_seed(0)
        return torch.randn(x.shape[0], 256, 64, 64, generator=generator)


@pytest.mark.slow
def test_medsam_factory_builds_and_predicts(image):
    torch.manual_seed(0)
    tool = build_tool("medsam", allow_random_weights=True)
    assert tool.name == "medsam" and tool.variant == MEDSAM
    assert torch.all(tool.model.pixel_mean == 0) and torch.all(tool.model.pixel_std == 1)
    encoder = _RecordingEncoder(tool.model.image_encoder.img_size)
    tool.model.image_encoder = encoder

    embedding = tool.encode(image)
    fed = encoder.inputs[0]
    expected = torch.from_numpy(medsam_preprocess(image)).permute(2, 0, 1)[None]
    assert fed.shape == (1, 3, 1024, 1024)
    torch.testing.assert_close(fed, expected)  # [0, 1], stretched, no mean/std, no padding
    assert embedding.data.input_size == (1024, 1024)

    prediction = tool.decode(embedding, Prompt(box=BOX))
    assert prediction.mask.shape == (H, W) and prediction.logits.shape == (1, 256, 256)
    probs = F.interpolate(torch.sigmoid(torch.from_numpy(prediction.logits)[None]), size=(H, W),
                          mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_array_equal(prediction.mask, (probs > 0.5).numpy())
    # MedSAM never uses the untrained multimask heads, even for a single click
    assert not tool._wants_multimask(Prompt(points=CLICK, labels=[1]))
    click = tool.decode(embedding, Prompt(points=CLICK, labels=[1], mask_input=prediction.logits))
    assert click.mask.shape == (H, W)
    assert len(encoder.inputs) == 1 and tool.encode_count == 1


# -- SAM 2 specifics ----------------------------------------------------------------------------
@pytest.mark.slow
def test_sam2_checkpoint_round_trip(sam2_tool, sam2_embedding, sam2_checkpoint):
    reloaded = build_tool("sam2", checkpoint=str(sam2_checkpoint))  # {"model": ...} wrapper
    assert reloaded.checkpoint == sam2_checkpoint
    original, loaded = sam2_tool.model.state_dict(), reloaded.model.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    for prompt in (Prompt(box=BOX), Prompt(points=CLICK, labels=[1])):
        a, b = sam2_tool.decode(sam2_embedding, prompt), reloaded.decode(sam2_embedding, prompt)
        np.testing.assert_array_equal(a.logits, b.logits)
        np.testing.assert_array_equal(a.mask, b.mask)


@pytest.mark.slow
def test_truncated_checkpoint_names_file(sam2_checkpoint, tmp_path):
    truncated = tmp_path / "truncated.pt"
    data = sam2_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ToolError, match="truncated") as info:
        build_sam2_tool(checkpoint=truncated)
    assert str(truncated) in str(info.value)
    garbage = tmp_path / "not_a_checkpoint.pth"
    garbage.write_text("<html>404 Not Found</html>")
    with pytest.raises(ToolError, match="not_a_checkpoint.pth"):
        build_sam_tool(checkpoint=garbage)


@pytest.mark.slow
def test_sam2_at_medsam2_input_size(image):
    torch.manual_seed(0)
    tool = build_sam2_tool(allow_random_weights=True, image_size=512)
    assert tool.image_size == 512 and tool.low_res_size == (128, 128)
    embedding = tool.encode(image)
    first = tool.decode(embedding, Prompt(box=BOX))
    assert first.logits.shape == (1, 128, 128) and first.mask.shape == (H, W)
    again = tool.decode(embedding, Prompt(points=CLICK, labels=[1], mask_input=first.logits))
    assert again.mask.shape == (H, W)


@pytest.mark.slow
def test_sam2_shape_mismatch_is_reported(sam2_tool):
    state = dict(sam2_tool.model.state_dict())
    key = "sam_mask_decoder.iou_token.weight"
    state[key] = torch.zeros(2, 7)
    with pytest.raises(ToolError, match=r"1 shape mismatches .*iou_token\.weight: file \(2, 7\) vs model"):
        check_state_dict(sam2_tool.model, state, path="x.pt", model_desc="SAM 2 test")


# -- checkpoint handling without models ---------------------------------------------------------
def test_checkpoint_is_required_unless_random_weights_allowed(tmp_path):
    with pytest.raises(ToolError, match="needs a checkpoint.*allow_random_weights=True"):
        build_sam_tool()
    with pytest.raises(ToolError, match="needs a checkpoint"):
        build_tool("sam2")
    with pytest.raises(ToolError, match="needs a checkpoint"):
        build_medsam_tool(checkpoint=None)
    missing = tmp_path / "nope.pth"
    with pytest.raises(ToolError, match=f"{missing}.*does not exist"):
        build_sam_tool(checkpoint=missing)
    with pytest.raises(ToolError, match="only local files"):
        build_sam2_tool(checkpoint="https://example.org/sam2.1_hiera_tiny.pt")
    with pytest.raises(ToolError, match="not a file"):
        resolve_checkpoint(tmp_path, allow_random_weights=False, model_desc="SAM")
    assert resolve_checkpoint(None, allow_random_weights=True, model_desc="SAM") is None


def test_bad_options_fail_fast():
    with pytest.raises(ToolError, match="vit_b, vit_l, vit_h"):
        build_sam_tool(model_type="vit_x", allow_random_weights=True)
    with pytest.raises(ToolError, match="sam2.1_hiera_t.yaml"):
        build_sam2_tool(config="configs/sam2.1/nope.yaml", allow_random_weights=True)
    with pytest.raises(ToolError, match="multiple of 64"):
        build_sam2_tool(image_size=500, allow_random_weights=True)
    with pytest.raises(ToolError, match="CUDA is not available|invalid device"):
        build_sam_tool(device="cuda:0" if not torch.cuda.is_available() else "nonsense",
                       allow_random_weights=True)


def test_unwrap_common_checkpoint_wrappers():
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    assert unwrap_state_dict(sd, path="f", model_desc="m").keys() == sd.keys()
    wrapped = {"model": sd, "optimizer": {"state": {}}, "epoch": 3}
    assert unwrap_state_dict(wrapped, path="f", model_desc="m").keys() == sd.keys()
    nested = {"state_dict": {"model": sd}}
    assert unwrap_state_dict(nested, path="f", model_desc="m").keys() == sd.keys()
    ddp = {f"module.{k}": v for k, v in sd.items()}
    assert unwrap_state_dict(ddp, path="f", model_desc="m").keys() == sd.keys()
    with pytest.raises(ToolError, match="f.pt .*not a state dict.*epoch"):
        unwrap_state_dict({"epoch": 3, "lr": 0.1}, path="f.pt", model_desc="m")
    with pytest.raises(ToolError, match="holds a list"):
        unwrap_state_dict([1, 2], path="f.pt", model_desc="m")


def test_describe_state_dict_recognises_families():
    vit_b = {f"image_encoder.blocks.{i}.norm1.weight": torch.ones(1) for i in range(12)}
    assert "vit_b" in describe_state_dict(vit_b)
    hiera_t = {f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.ones(1) for i in range(12)}
    assert "tiny" in describe_state_dict(hiera_t)
    assert describe_state_dict({"fc.weight": torch.ones(1)}) is None
