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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from medseg_agent.tools.base import ImageEmbedding
from medseg_agent.tools.checkpoints import build_model
from medseg_agent.tools.sam_family import (
    MODEL_RANGE,
    PROMPTS_RANGE,
    UPSAMPLE_RANGE,
    DecodedPart,
    SamFamilyTool,
    best_candidates,
    check_finite,
    check_mask_input,
    inference_context,
    to_device,
)
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.prompts import Prompt

SAM_MODEL_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h")
#: Side of the square the image encoder sees.
ENCODER_SIZE = 1024


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


class SamTool(SamFamilyTool):
    """A SAM-architecture model (SAM ViT-B/L/H or MedSAM) as a :class:`SegmentationTool`. Its mask
    decoder repeats one image embedding for all the rows of a call, so each image's prompts get their
    own calls."""

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

        super().__init__(model, max_batch=max_batch, precision=precision, bucket_batches=bucket_batches,
                         cuda_graphs=cuda_graphs)
        self.name = variant.name
        self.variant = variant
        self.model_type = model_type
        self.checkpoint = checkpoint
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

    # -- encode -----------------------------------------------------------------------------
    def _fresh_predictor(self) -> Any:
        """A predictor of its own for one call: shares model and transform, owns the image state."""
        predictor = copy.copy(self.predictor)
        predictor.reset_image()
        return predictor

    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        predictor = self._fresh_predictor()
        with inference_context(self.device, self.precision):
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
        device = self.device
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

    def decoder_modules(self) -> Sequence[torch.nn.Module]:
        return (self.model.prompt_encoder, self.model.mask_decoder)

    def dense_positional_encoding(self) -> torch.Tensor:
        return self.model.prompt_encoder.get_dense_pe()

    def decoder_forward(self, inputs: Sequence[torch.Tensor | None], *,
                        multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask decoder on device tensors only (so that it can be captured in a CUDA graph; SAM's
        prompt encoder cannot be: it indexes with boolean masks, which wait for the host):
        ``inputs`` = (image embedding, sparse and dense prompt embeddings). Returns each row's best
        low-res logits (B, h, w) in the model's dtype, as the package upsamples them, and its score."""
        features, sparse, dense = inputs
        model = self.model
        low_res, iou = model.mask_decoder(image_embeddings=features, image_pe=self.image_pe,
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=multimask)
        return best_candidates(low_res, iou)


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
