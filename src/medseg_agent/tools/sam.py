"""SAM and MedSAM through the official ``segment_anything`` package.

MedSAM is SAM ViT-B fine-tuned with a different input pipeline, so both are one class,
:class:`SamTool`, configured by a :class:`SamVariant`:

* SAM: longest side resized to 1024 (aspect kept, zero padding), ImageNet pixel mean/std
  normalisation inside ``Sam.preprocess``; masks are the upsampled logits > 0.
* MedSAM (bowang-lab/MedSAM, ``MedSAM_Inference.py``): image stretched to 1024x1024 with skimage's
  bicubic resize, cast to uint8, min-max normalised to [0, 1] and fed to the encoder *without*
  mean/std normalisation (here: ``pixel_mean = 0``, ``pixel_std = 1``); the box is scaled per axis
  to the 1024 grid; the mask is ``sigmoid(low-res logits)`` bilinearly resized to the image,
  > 0.5. MedSAM was trained with single-mask output only, so it never uses the multimask heads.

Encoding reuses :class:`segment_anything.SamPredictor` (``set_image``); decoding runs the model's
prompt encoder, mask decoder and ``postprocess_masks`` the way its ``predict_torch`` does, the mask
decoder through :class:`medseg_agent.tools.graphs.GraphedForward` (CUDA graphs when asked). The
predictor keeps one image's state in attributes, so every call works on a shallow copy of a template
predictor (sharing the model and the transform) and the per-image state lives in the
:class:`ImageEmbedding`. Many embeddings (one per image, e.g. in the tool server's cache) thus share
one model, and concurrent calls need no lock.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from medseg_agent.io.masks import boundaries_batch
from medseg_agent.tools.base import DecodeRequest, EncodedPrediction, ImageEmbedding, SegmentationTool
from medseg_agent.tools.checkpoints import build_model
from medseg_agent.tools.graphs import GraphedForward, resolve_cuda_graphs
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.prompts import Prediction, Prompt

SAM_MODEL_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h")
#: Side of the square the image encoder sees.
ENCODER_SIZE = 1024
#: Largest number of prompts sent through the mask decoder at once by :meth:`SamTool.decode_batch`
#: (bounds the memory of the full-resolution upsampling), on a CPU, where a row costs its full
#: compute whatever the call.
DEFAULT_MAX_BATCH = 16
#: The same on a CUDA device, the tool server's own batch (``ServerConfig.max_batch``): there a
#: forward is bound by launching its ~1,700 operators, not by rows (one H100: 20 ms per call for 1
#: to 16 rows, device time no longer than host time), so the server's batch goes in one call.
CUDA_MAX_BATCH = 32
#: ``auto``: bf16 autocast on a CUDA device that has it (what SAM 2's own examples do), fp32
#: elsewhere; ``tf32``: fp32 weights with TF32 matmuls and convolutions on Ampere or newer GPUs;
#: ``bf16``: bf16 autocast (TF32 for what stays fp32); ``fp32``: exact float32 everywhere.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "tf32", "bf16")
#: The named ranges a decode call is split into, so that a profile (``torch.profiler``) of a tool
#: server says where its time goes: preparing the prompts on the host and sending them; the model
#: (prompt encoder and mask decoder); the masks at the image size; finding the masks' run
#: boundaries (on the device, for an accelerator) and copying them and the logits to the host; each
#: row's answer on the host (RLE string, area, copies). ``benchmarks/decode_profile.py`` reports them.
DECODE_RANGES: tuple[str, ...] = ("medseg.decode.prompts", "medseg.decode.model", "medseg.decode.upsample",
                                  "medseg.decode.runs", "medseg.decode.rows")
PROMPTS_RANGE, MODEL_RANGE, UPSAMPLE_RANGE, RUNS_RANGE, ROWS_RANGE = DECODE_RANGES


@dataclass(frozen=True)
class SamVariant:
    """Everything that differs between SAM and MedSAM at inference time."""

    name: str
    #: ``"longest_side"`` (SAM: ResizeLongestSide + pixel mean/std) or ``"medsam"`` (stretch to a
    #: square, min-max to [0, 1], no mean/std).
    preprocessing: str
    #: Use the three multimask heads (and keep the best-scored mask) for a lone click.
    multimask_single_point: bool
    #: ``"logits"`` (SAM: upsample logits through the padded input frame, > 0) or ``"sigmoid"``
    #: (MedSAM: sigmoid, one bilinear resize to the image, > 0.5).
    mask_rule: str


SAM = SamVariant(name="sam", preprocessing="longest_side", multimask_single_point=True, mask_rule="logits")
MEDSAM = SamVariant(name="medsam", preprocessing="medsam", multimask_single_point=False, mask_rule="sigmoid")


@dataclass
class _SamState:
    """A ``SamPredictor``'s per-image state, detached from the predictor so it can be cached."""

    variant: str
    features: torch.Tensor  # (1, 256, 64, 64) image embedding
    original_size: tuple[int, int]  # (H, W) of the input image
    input_size: tuple[int, int]  # (h, w) of the resized image before padding to 1024


def medsam_preprocess(image: np.ndarray, size: int = ENCODER_SIZE) -> np.ndarray:
    """MedSAM's image preprocessing: (H, W, 3) uint8 -> (size, size, 3) float32 in [0, 1].

    Mirrors ``MedSAM_Inference.py`` step by step (bicubic anti-aliased skimage resize to a square,
    ignoring the aspect ratio; cast back to uint8, which truncates; min-max normalisation over the
    whole image), because the released weights were trained on exactly these inputs.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ToolError(f"MedSAM preprocessing expects an (H, W, 3) image, got shape {image.shape}")
    resized = _resize_cubic(image, size).astype(np.uint8)
    low, high = float(resized.min()), float(resized.max())
    return ((resized - low) / max(high - low, 1e-8)).astype(np.float32)


def _resize_cubic(image: np.ndarray, size: int) -> np.ndarray:
    """``skimage.transform.resize(image, (size, size), order=3, preserve_range=True,
    anti_aliasing=True)``, one channel at a time.

    MedSAM resizes the (H, W, 3) array in one call, which makes scipy zoom a 3-D spline over the
    channel axis too: ~30x slower, yet the channel axis is not rescaled and a cubic spline
    reproduces its samples, so per-channel 2-D resizing gives the same values up to float rounding
    (~1e-12, the same noise that call leaves between identical channels), provided the result is
    clipped to the range of the *whole* image as skimage does. Grey images replicated to RGB, the
    usual medical case, are resized once.
    """
    from skimage.transform import resize  # lazy: skimage is slow to import and only MedSAM needs it

    def one(channel: np.ndarray) -> np.ndarray:
        return resize(channel, (size, size), order=3, preserve_range=True, anti_aliasing=True, clip=False)

    if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]):
        out = np.repeat(one(image[..., 0])[:, :, None], 3, axis=2)
    else:
        out = np.stack([one(image[..., c]) for c in range(3)], axis=2)
    return np.clip(out, image.min(), image.max(), out=out)


class SquareResize:
    """MedSAM's geometry behind ``ResizeLongestSide``'s interface, so ``SamPredictor`` can use it.

    ``SamPredictor`` only calls ``apply_image`` (in ``set_image``), ``apply_coords`` and
    ``apply_boxes``; replacing its ``transform`` is all it takes to run MedSAM through it.
    """

    def __init__(self, target_length: int = ENCODER_SIZE) -> None:
        self.target_length = target_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return medsam_preprocess(image, self.target_length)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        old_h, old_w = original_size
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[..., 0] = coords[..., 0] * (self.target_length / old_w)
        coords[..., 1] = coords[..., 1] * (self.target_length / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)


class SamTool(SegmentationTool):
    """A SAM-architecture model (SAM ViT-B/L/H or MedSAM) as a :class:`SegmentationTool`."""

    supports_batch_decode = True

    def __init__(
        self,
        model: Any,
        variant: SamVariant = SAM,
        *,
        model_type: str = "vit_b",
        checkpoint: Path | None = None,
        max_batch: int | None = None,
        precision: str = "auto",
        bucket_batches: bool | None = None,
        cuda_graphs: bool | None = None,
    ) -> None:
        from segment_anything import SamPredictor

        super().__init__()
        device = model_device(model)
        self.max_batch = resolve_max_batch(max_batch, device)
        self.precision = resolve_precision(precision, device)
        self.name = variant.name
        self.variant = variant
        self.model_type = model_type
        self.checkpoint = checkpoint
        #: Decoder calls padded to power-of-two row counts (see :func:`batch_bucket`); default: on CUDA.
        self.bucket_batches = resolve_bucketing(bucket_batches, device)
        self.model = model
        #: The mask decoder, replayed from one CUDA graph per input shape when on.
        self.decoder = GraphedForward(self.decoder_forward, enabled=resolve_cuda_graphs(cuda_graphs, device))
        #: Template only: calls work on shallow copies (see :meth:`_fresh_predictor`).
        self.predictor = SamPredictor(model)
        if variant.preprocessing == "medsam":
            # Sam.preprocess computes (x - pixel_mean) / pixel_std; MedSAM feeds [0, 1] directly.
            with torch.no_grad():
                model.pixel_mean.zero_()
                model.pixel_std.fill_(1.0)
            self.predictor.transform = SquareResize(model.image_encoder.img_size)
        elif variant.preprocessing != "longest_side":
            raise ToolError(f"unknown SAM preprocessing {variant.preprocessing!r}")

    @property
    def low_res_size(self) -> tuple[int, int]:
        """(h, w) of the logits returned in :attr:`Prediction.logits` and accepted as mask_input."""
        return tuple(self.model.prompt_encoder.mask_input_size)  # type: ignore[return-value]

    def stats(self) -> dict[str, float]:
        return {**super().stats(), **self.decoder.stats()}

    # -- encode -----------------------------------------------------------------------------
    def _fresh_predictor(self) -> Any:
        """A predictor of its own for one call: shares model and transform, owns the image state."""
        predictor = copy.copy(self.predictor)
        predictor.reset_image()
        return predictor

    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        predictor = self._fresh_predictor()
        with inference_context(self.predictor.device, self.precision):
            predictor.set_image(image, image_format="RGB")
        state = _SamState(
            variant=self.variant.name,
            features=predictor.features,
            original_size=(int(image.shape[0]), int(image.shape[1])),
            input_size=tuple(int(s) for s in predictor.input_size),  # type: ignore[arg-type]
        )
        nbytes = state.features.element_size() * state.features.nelement()
        return ImageEmbedding(data=state, image_size=state.original_size, nbytes=nbytes)

    # -- decode -----------------------------------------------------------------------------
    def _decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction:
        return decode_grouped(self, [(embedding, prompt)], self._state, self._forward_rows, predictions_from_tensors,
                              1, cross_image=False, count=False)[0]

    def decode_batch(self, embedding: ImageEmbedding, prompts: list[Prompt]) -> list[Prediction]:
        """Decode many prompt sets for one image with few mask-decoder calls.

        Prompts batch together when they have the same structure (number of points, box or not,
        mask_input or not, hence the same multimask setting); each group runs in chunks of
        ``max_batch``. Results come back in the order of ``prompts``.
        """
        return self.decode_many([(embedding, p) for p in prompts])

    def decode_many(self, requests: Sequence[DecodeRequest]) -> list[Prediction]:
        """Prompts of several images: SAM's mask decoder repeats one image embedding for all the
        prompts of a call, so each image's prompts get their own calls."""
        return decode_grouped(self, requests, self._state, self._forward_rows, predictions_from_tensors,
                              self.max_batch, cross_image=False, bucket=self.bucket_batches)

    def decode_encoded(self, requests: Sequence[DecodeRequest]) -> list[EncodedPrediction]:
        return decode_grouped(self, requests, self._state, self._forward_rows, encoded_from_tensors,
                              self.max_batch, cross_image=False, bucket=self.bucket_batches)

    def _wants_multimask(self, prompt: Prompt) -> bool:
        """A lone click is ambiguous (part vs whole); SAM then returns three candidates."""
        return (
            self.variant.multimask_single_point
            and len(prompt.points) == 1
            and prompt.box is None
            and prompt.mask_input is None
        )

    def _state(self, embedding: ImageEmbedding) -> _SamState:
        state = embedding.data
        if not isinstance(state, _SamState) or state.variant != self.variant.name:
            got = getattr(state, "variant", type(state).__name__)
            raise ToolError(f"{self.name} cannot decode an embedding made by another tool ({got})")
        return state

    def _forward_rows(self, rows: Sequence[tuple[_SamState, Prompt]]) -> list[DecodedPart]:
        """Prompts of identical structure on one image through the prompt encoder and mask decoder
        at once; returns the chosen masks, their logits and scores, still on the device."""
        state = rows[0][0]
        prompts = [prompt for _, prompt in rows]
        device = self.predictor.device
        first = prompts[0]
        multimask = self._wants_multimask(first)
        transform = self.predictor.transform
        coords = labels = boxes = masks = None
        with record_function(PROMPTS_RANGE):
            if len(first.points):
                points = np.stack([check_finite(p.points, "points") for p in prompts])
                coords = to_device(transform.apply_coords(points, state.original_size).astype(np.float32), device)
                labels = to_device(np.stack([p.labels for p in prompts]).astype(np.int32), device)
            if first.box is not None:
                box = np.stack([check_finite(p.box, "box") for p in prompts])
                boxes = to_device(transform.apply_boxes(box, state.original_size).astype(np.float32), device)
            if first.mask_input is not None:
                masks = to_device(np.stack([check_mask_input(p.mask_input, self.low_res_size) for p in prompts]),
                                  device)
        model = self.model
        with inference_context(device, self.precision):
            with record_function(MODEL_RANGE):  # as SamPredictor.predict_torch runs them
                point_prompt = (coords, labels) if coords is not None else None
                sparse, dense = model.prompt_encoder(points=point_prompt, boxes=boxes, masks=masks)
                chosen, scores = self.decoder((state.features, sparse, dense), multimask=multimask)
            with record_function(UPSAMPLE_RANGE):
                if self.variant.mask_rule == "sigmoid":
                    probs = F.interpolate(torch.sigmoid(chosen.float()[:, None]), size=state.original_size,
                                          mode="bilinear", align_corners=False)[:, 0]
                    mask = probs > 0.5
                else:
                    full = model.postprocess_masks(chosen[:, None], state.input_size, state.original_size)[:, 0]
                    mask = full > model.mask_threshold
        return [DecodedPart(list(range(len(rows))), mask, chosen.float(), scores)]

    def decoder_forward(self, inputs: Sequence[torch.Tensor | None], *,
                        multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask decoder on device tensors only (so that it can be captured in a CUDA graph; SAM's
        prompt encoder cannot be: it indexes with boolean masks, which wait for the host):
        ``inputs`` = (image embedding, sparse and dense prompt embeddings). Returns each row's best
        low-res logits (B, h, w) in the model's dtype, as the package upsamples them, and its score."""
        features, sparse, dense = inputs
        model = self.model
        low_res, iou = model.mask_decoder(image_embeddings=features, image_pe=model.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=multimask)
        return best_candidates(low_res, iou)


# -- helpers shared with the SAM 2 backend ------------------------------------------------------
@dataclass
class DecodedPart:
    """Some rows of a decoder call, still on the device: ``rows`` index the call's rows; masks
    (len(rows), H, W) bool at the images' size, logits (len(rows), h, w) float, scores (len(rows),)."""

    rows: list[int]
    masks: torch.Tensor
    logits: torch.Tensor
    scores: torch.Tensor

    def without_rows_from(self, end: int) -> DecodedPart:
        """This part without the call's rows ``end`` and after (the padding of a bucketed call)."""
        keep = [k for k, row in enumerate(self.rows) if row < end]
        if len(keep) == len(self.rows):
            return self
        index = torch.as_tensor(keep, device=self.masks.device)
        return DecodedPart([self.rows[k] for k in keep], self.masks[index], self.logits[index], self.scores[index])


def batch_bucket(rows: int, max_batch: int) -> int:
    """Rows a bucketed decoder call of ``rows`` rows runs with: the next power of two, at most
    ``max_batch``. A GPU prepares kernels and convolution plans once per input shape; a tool server
    batching whatever is waiting would otherwise meet every size from 1 to ``max_batch`` for every
    prompt structure, and pay that first-call cost each time. Padding costs at most twice the rows
    of a call that is cheap on a GPU."""
    return min(1 << max(rows - 1, 0).bit_length(), max(max_batch, rows))


def resolve_max_batch(max_batch: int | None, device: torch.device) -> int:
    """``None`` (the default): :data:`CUDA_MAX_BATCH` rows per decoder call on a CUDA device,
    :data:`DEFAULT_MAX_BATCH` elsewhere."""
    if max_batch is None:
        return CUDA_MAX_BATCH if device.type == "cuda" else DEFAULT_MAX_BATCH
    if max_batch < 1:
        raise ToolError(f"max_batch must be >= 1, got {max_batch}")
    return int(max_batch)


def resolve_bucketing(bucket_batches: bool | None, device: torch.device) -> bool:
    """``None`` (the default): bucket decoder calls on a CUDA device only, where new shapes cost a
    first call; on a CPU every padded row costs its full compute."""
    return device.type == "cuda" if bucket_batches is None else bool(bucket_batches)


def decode_grouped(
    tool: SegmentationTool,
    requests: Sequence[DecodeRequest],
    get_state: Callable[[ImageEmbedding], Any],
    forward: Callable[[Sequence[tuple[Any, Prompt]]], list[DecodedPart]],
    finish: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], list[Any]],
    max_batch: int,
    *,
    cross_image: bool,
    count: bool = True,
    bucket: bool = False,
) -> list[Any]:
    """Group prompts by structure, run each group through ``forward`` in chunks of ``max_batch``,
    turn each part's tensors into results with ``finish`` (Prediction or EncodedPrediction).

    Prompts batch together when they have the same number of points and both have (or lack) a box
    and a mask_input: the prompt encoder needs equally shaped tensors, and the multimask choice
    depends only on that structure. Padding prompts to a common shape would change the answers (the
    padding tokens take part in attention), so nothing is padded. With ``cross_image`` (SAM 2),
    prompts of different images share a call; otherwise each image's prompts get their own calls.
    With ``bucket``, a call's rows are padded to :func:`batch_bucket` rows with copies of its last
    row (rows never interact in the decoder) and the copies' answers are dropped before ``finish``.
    Keeps the base class's validation and counters (``count=False``: the caller counts, as
    :meth:`SegmentationTool.decode` does).
    """
    for i, (_, prompt) in enumerate(requests):
        if prompt.is_empty:
            raise ToolError(f"prompt {i}: a prediction needs a box or at least one point")
    if not requests:
        return []
    states = {id(embedding): get_state(embedding) for embedding, _ in requests}
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (embedding, prompt) in enumerate(requests):
        key = (len(prompt.points), prompt.box is not None, prompt.mask_input is not None)
        groups.setdefault(key if cross_image else (*key, id(embedding)), []).append(i)
    results: dict[int, Any] = {}
    start = time.perf_counter()
    for indices in groups.values():
        for lo in range(0, len(indices), max_batch):
            chunk = indices[lo : lo + max_batch]
            rows = [(states[id(requests[i][0])], requests[i][1]) for i in chunk]
            if bucket:
                rows += [rows[-1]] * (batch_bucket(len(rows), max_batch) - len(rows))
            for part in forward(rows):
                part = part.without_rows_from(len(chunk))
                outcomes = finish(part.masks, part.logits, part.scores)
                results.update(zip((chunk[r] for r in part.rows), outcomes, strict=True))
    if count:
        tool.count_decodes(len(requests), time.perf_counter() - start)
    for i, (embedding, _) in enumerate(requests):
        got = results[i].rle["size"] if isinstance(results[i], EncodedPrediction) else results[i].mask.shape
        if tuple(got) != tuple(embedding.image_size):
            raise ToolError(f"{tool.name} returned a mask of shape {tuple(got)}, expected {embedding.image_size}")
    return [results[i] for i in range(len(requests))]


def predictions_from_tensors(mask: torch.Tensor, logits: torch.Tensor, scores: torch.Tensor) -> list[Prediction]:
    """(B, H, W) masks, (B, h, w) low-res logits and (B,) scores -> one Prediction per prompt,
    copied to the host together (one synchronisation).

    Logits are returned as (1, h, w) float32, the form ``mask_input`` takes on the next turn. Each
    prediction owns its arrays (see :func:`own_row`).
    """
    with record_function(RUNS_RANGE):
        masks_np, logits_np, scores_np = to_host(mask.bool(), logits.float(), scores.float())
    with record_function(ROWS_RANGE):
        return [
            Prediction(mask=own_row(masks_np, i), logits=own_row(logits_np, i)[None], score=float(scores_np[i]))
            for i in range(len(masks_np))
        ]


def encoded_from_tensors(mask: torch.Tensor, logits: torch.Tensor, scores: torch.Tensor) -> list[EncodedPrediction]:
    """Like :func:`predictions_from_tensors`, with the masks run-length encoded where they are: on an
    accelerator only the run boundaries and the logits cross to the host."""
    with record_function(RUNS_RANGE):
        logits_np, scores_np = to_host(logits.float(), scores.float(), wait=False)
        found = boundaries_batch(mask)  # synchronises the stream: the copies above are done after it
        synchronize(mask.device)
    size = (int(mask.shape[-2]), int(mask.shape[-1]))
    with record_function(ROWS_RANGE):
        return [
            EncodedPrediction.from_boundaries(runs, size, own_row(logits_np, i)[None], float(scores_np[i]))
            for i, runs in enumerate(found)
        ]


def best_candidates(low_res: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's candidate mask with the highest predicted IoU: (B, C, h, w) logits and (B, C)
    scores -> (B, h, w) logits in their own dtype and (B,) float32 scores. Device operations only, so
    that a decoder forward ending with it can be captured in a CUDA graph."""
    best = iou.argmax(dim=1)
    picked = torch.arange(low_res.shape[0], device=best.device)
    return low_res[picked, best], iou[picked, best].float()


def own_row(batch: np.ndarray, row: int) -> np.ndarray:
    """Row ``row`` of a batch copied out, so that what a caller keeps (a session keeps its logits for
    the next turn and 32 undo steps) holds no reference to the batch's buffer: on a GPU that buffer
    is pinned host memory, which the allocator can reuse for the next batch only once nothing points
    into it, and on any device a view would keep the whole batch alive for one row."""
    return np.array(batch[row], copy=True)


# -- device, precision and transfers -----------------------------------------------------------
def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a tool runs at on ``device`` (see :data:`PRECISIONS`); TF32 is switched on for
    the process when asked for on a CUDA device (a global torch setting)."""
    if precision not in PRECISIONS:
        raise ToolError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision in ("tf32", "bf16") and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return precision


@contextmanager
def inference_context(device: torch.device | str, precision: str) -> Iterator[None]:
    """``torch.inference_mode`` (no autograd bookkeeping at all), with bf16 autocast when asked."""
    device = torch.device(device)
    with torch.inference_mode():
        if precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield


def to_device(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A host array on ``device``: through pinned memory and without waiting, on a GPU."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    device = torch.device(device)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_host(*tensors: torch.Tensor, wait: bool = True) -> list[np.ndarray]:
    """Device tensors as numpy arrays: on a GPU, copied into pinned buffers without waiting, then
    one synchronisation for all of them (``wait=False`` leaves it to the caller)."""
    if not tensors or tensors[0].device.type != "cuda":
        return [t.detach().cpu().numpy() for t in tensors]
    buffers = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for buffer, tensor in zip(buffers, tensors, strict=True):
        buffer.copy_(tensor.detach(), non_blocking=True)
    if wait:
        synchronize(tensors[0].device)
    return [buffer.numpy() for buffer in buffers]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def check_mask_input(mask_input: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Accept the logits as returned ((1, h, w)), squeezed ((h, w)) or batched ((1, 1, h, w));
    return (1, h, w) float32 or explain the expected shape."""
    arr = np.asarray(mask_input, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[:2] == (1, 1):
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (1, *size):
        raise ToolError(
            f"mask_input must be the previous low-resolution logits of shape (1, {size[0]}, {size[1]}) "
            f"from the same tool, got {np.asarray(mask_input).shape}"
        )
    return check_finite(arr, "mask_input")


def check_finite(values: np.ndarray | None, field: str) -> np.ndarray:
    """NaN coordinates would silently produce an empty or garbage mask; refuse them."""
    arr = np.asarray(values)
    if not np.all(np.isfinite(arr)):
        shown = f": {arr.tolist()}" if arr.size <= 8 else ""
        raise ToolError(f"prompt {field} contains NaN or infinite values{shown}")
    return arr


# -- factories ----------------------------------------------------------------------------------
def build_sam_tool(
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    *,
    model_type: str = "vit_b",
    allow_random_weights: bool = False,
    max_batch: int | None = None,
    precision: str = "auto",
    bucket_batches: bool | None = None,
    cuda_graphs: bool | None = None,
) -> SamTool:
    """SAM (``vit_b`` / ``vit_l`` / ``vit_h``) from a local checkpoint such as ``sam_vit_b_01ec64.pth``."""
    return SamTool(
        _build_sam_model(model_type, checkpoint, device, allow_random_weights, desc=f"SAM {model_type}"),
        SAM,
        model_type=model_type,
        checkpoint=_path_or_none(checkpoint),
        max_batch=max_batch,
        precision=precision,
        bucket_batches=bucket_batches,
        cuda_graphs=cuda_graphs,
    )


def build_medsam_tool(
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    *,
    allow_random_weights: bool = False,
    max_batch: int | None = None,
    precision: str = "auto",
    bucket_batches: bool | None = None,
    cuda_graphs: bool | None = None,
) -> SamTool:
    """MedSAM (SAM ViT-B weights fine-tuned on medical images, e.g. ``medsam_vit_b.pth``)."""
    return SamTool(
        _build_sam_model("vit_b", checkpoint, device, allow_random_weights, desc="MedSAM (SAM vit_b)"),
        MEDSAM,
        model_type="vit_b",
        checkpoint=_path_or_none(checkpoint),
        max_batch=max_batch,
        precision=precision,
        bucket_batches=bucket_batches,
        cuda_graphs=cuda_graphs,
    )


def _build_sam_model(
    model_type: str, checkpoint: str | Path | None, device: str, allow_random_weights: bool, *, desc: str
) -> Any:
    from segment_anything import sam_model_registry

    if model_type not in SAM_MODEL_TYPES:
        raise ToolError(f"unknown SAM model_type {model_type!r}; choose one of {', '.join(SAM_MODEL_TYPES)}")
    model, _ = build_model(
        lambda: sam_model_registry[model_type](checkpoint=None),
        checkpoint,
        model_desc=desc,
        allow_random_weights=allow_random_weights,
        device=device,
    )
    return model


def _path_or_none(checkpoint: str | Path | None) -> Path | None:
    return Path(checkpoint).expanduser() if checkpoint else None
