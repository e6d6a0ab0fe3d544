"""What the SAM-family backends (SAM / MedSAM and SAM 2 / MedSAM2) share.

:class:`SamFamilyTool` is the decoding half of both tools: prompts grouped by structure into few
decoder calls (:func:`decode_grouped`), padded to power-of-two rows on a GPU (:func:`batch_bucket`),
the decoder forward replayed from CUDA graphs when asked
(:class:`medseg_agent.tools.graphs.GraphedForward`), masks handed back whole or as run boundaries
found on the device. A backend supplies its per-image state, how a group of rows runs through its
model (``_forward_rows``) and the part of it that can be captured (``decoder_forward``). The rest of
this module is the device, precision and transfer helpers both backends use.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.profiler import record_function

from medseg_agent.io.masks import boundaries_batch
from medseg_agent.tools.base import DecodeRequest, EncodedPrediction, ImageEmbedding, SegmentationTool
from medseg_agent.tools.graphs import GraphedForward, resolve_cuda_graphs
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.numbers import is_whole_number
from medseg_agent.vocabulary.prompts import Prediction, Prompt

#: Largest number of prompts sent through the mask decoder at once by :meth:`SamFamilyTool.decode_many`
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


class SamFamilyTool(SegmentationTool):
    """A promptable SAM-family model whose decoder runs prompts of one structure in one call."""

    supports_batch_decode = True
    #: Whether prompts of different images may share a decoder call (SAM 2's decoder takes one image
    #: embedding per row; SAM's repeats one embedding for all the rows of a call).
    cross_image: ClassVar[bool] = False

    def __init__(self, model: Any, *, max_batch: int | None, precision: str, bucket_batches: bool | None,
                 cuda_graphs: bool | None) -> None:
        super().__init__()
        for option, flag in (("bucket_batches", bucket_batches), ("cuda_graphs", cuda_graphs)):
            if flag is not None and not isinstance(flag, bool):  # the string "false" would switch it on
                raise ToolError(f"{option} must be true or false, got {flag!r}")
        self.model = model
        self.device = model_device(model)
        self.max_batch = resolve_max_batch(max_batch, self.device)
        self.precision = resolve_precision(precision, self.device)
        #: Decoder calls padded to power-of-two row counts (see :func:`batch_bucket`); default: on CUDA.
        self.bucket_batches = resolve_bucketing(bucket_batches, self.device)
        #: The capturable part of a decoder call, replayed from one CUDA graph per input shape when on.
        self.decoder = GraphedForward(self.decoder_forward, enabled=resolve_cuda_graphs(cuda_graphs, self.device))
        if self.precision == "bf16":  # the model is the tool's own: the factories build one per tool
            cast_weights_for_autocast(self.decoder_modules(), torch.bfloat16)
        with inference_context(self.device, self.precision):
            #: The prompt encoder's positional encoding of the embedding grid, the same for every call,
            #: so computed once (19 operators a forward would otherwise launch), at the tool's precision.
            self.image_pe = self.dense_positional_encoding()

    def stats(self) -> dict[str, float]:
        return {**super().stats(), **self.decoder.stats()}

    def _decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction:
        return decode_grouped(self, [(embedding, prompt)], self._state, self._forward_rows, predictions_from_tensors,
                              1, cross_image=self.cross_image, count=False)[0]

    def decode_batch(self, embedding: ImageEmbedding, prompts: list[Prompt]) -> list[Prediction]:
        """Decode many prompt sets for one image with few decoder calls.

        Prompts batch together when they have the same structure (number of points, box or not,
        mask_input or not, hence the same multimask setting); each group runs in chunks of
        ``max_batch``. Results come back in the order of ``prompts``.
        """
        return self.decode_many([(embedding, p) for p in prompts])

    def decode_many(self, requests: Sequence[DecodeRequest]) -> list[Prediction]:
        """Prompts of several images: with :attr:`cross_image` those of one structure share a call,
        otherwise each image's prompts get their own calls."""
        return decode_grouped(self, requests, self._state, self._forward_rows, predictions_from_tensors,
                              self.max_batch, cross_image=self.cross_image, bucket=self.bucket_batches)

    def decode_encoded(self, requests: Sequence[DecodeRequest]) -> list[EncodedPrediction]:
        """:meth:`decode_many` with the masks run-length encoded where they are (on the device)."""
        return decode_grouped(self, requests, self._state, self._forward_rows, encoded_from_tensors,
                              self.max_batch, cross_image=self.cross_image, bucket=self.bucket_batches)

    # -- backend hooks ----------------------------------------------------------------------
    @abstractmethod
    def _state(self, embedding: ImageEmbedding) -> Any:
        """The backend's per-image state in ``embedding``, or a ToolError if another tool made it."""

    @abstractmethod
    def _forward_rows(self, rows: Sequence[tuple[Any, Prompt]]) -> list[DecodedPart]:
        """Rows of one prompt structure through the model; masks, logits and scores on the device."""

    @abstractmethod
    def decoder_modules(self) -> Sequence[torch.nn.Module]:
        """The modules a decoder call runs (prompt encoder, mask decoder)."""

    @abstractmethod
    def dense_positional_encoding(self) -> torch.Tensor:
        """The prompt encoder's positional encoding of the image embedding's grid (1, C, h, w)."""

    @abstractmethod
    def decoder_forward(self, inputs: Sequence[torch.Tensor | None], **static: Any) -> tuple[torch.Tensor, ...]:
        """The capturable part of :meth:`_forward_rows`: device tensors in, device tensors out."""


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
    if not is_whole_number(max_batch) or max_batch < 1:
        raise ToolError(f"max_batch must be a whole number >= 1, got {max_batch!r}")
    return max_batch


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


#: The layers whose weights autocast casts to its dtype at every call (convolutions and linear
#: layers; normalisations stay in float32). Exact types: a subclass may use its weights otherwise.
AUTOCAST_CAST_LAYERS: tuple[type[torch.nn.Module], ...] = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)


def cast_weights_for_autocast(modules: Sequence[torch.nn.Module], dtype: torch.dtype) -> int:
    """Store in ``dtype`` the weights that autocast at ``dtype`` casts at every call, and return how
    many layers changed. On a GPU a decoder forward is bound by launching its operators, and each
    cast is a launch per weight and call: 110 of the 467 operators of a SAM 2 decoder forward under
    bf16 autocast. The answers stay the same bit for bit: autocast runs these layers in ``dtype``
    with these weights either way (``tests/tools/test_sam_backends.py``)."""
    changed = 0
    for module in modules:
        for layer in module.modules():
            if type(layer) in AUTOCAST_CAST_LAYERS and layer.weight.dtype != dtype:
                layer.to(dtype)
                changed += 1
    return changed


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
