"""SAM 2 / SAM 2.1 / MedSAM2 image segmentation through the official ``sam2`` package.

The model is built by ``sam2.build_sam.build_sam2`` from one of the package's hydra configs
(default ``configs/sam2.1/sam2.1_hiera_t.yaml``, the Hiera-tiny architecture MedSAM2 fine-tunes)
with random weights; the checkpoint is then validated and loaded by
:mod:`medseg_agent.tools.checkpoints`, because ``build_sam2``'s own loader raises an empty
``RuntimeError`` on a mismatch.

MedSAM2 was trained at 512x512 input (its ``sam2.1_hiera_t512.yaml`` is the tiny config with
``image_size: 512``); pass ``image_size=512`` for MedSAM2 weights. The state dict is the same at
any input size, so loading works either way, but predictions are only meaningful at the size the
weights were trained at.

Encoding uses :class:`sam2.sam2_image_predictor.SAM2ImagePredictor` (``set_image``), with the
image converted to a tensor on the model's device (the package converts it on the host). Decoding
runs the model's own prompt encoder and mask decoder the way ``SAM2ImagePredictor._predict`` does
(box corners as the first two points, labels 2 and 3), but on rows that may come from different
images: the mask decoder takes one image embedding per prompt (``repeat_image=False``), so a tool
server sends the waiting prompts of all its images through one forward pass. The predictor's
per-image state (``_features``, ``_orig_hw``) lives in the :class:`ImageEmbedding`; every call works
on a shallow copy of a template predictor (sharing the model and the transforms), so concurrent
calls need no lock. Every call runs under ``torch.inference_mode`` at the tool's ``precision``
(bf16 autocast on a CUDA device by default, as SAM 2's own examples run).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
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

DEFAULT_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@dataclass
class _Sam2State:
    """A ``SAM2ImagePredictor``'s per-image state, detached from the predictor so it can be cached."""

    features: dict[str, Any]  # {"image_embed": (1,256,S/16,S/16), "high_res_feats": [(1,32,S/4,..), (1,64,S/8,..)]}
    orig_hw: tuple[int, int]


def available_configs() -> list[str]:
    """Config names ``build_sam2`` accepts, relative to the installed ``sam2`` package."""
    root = _sam2_root()
    found = [*root.glob("*.yaml"), *(root / "configs").rglob("*.yaml")]
    return sorted(str(p.relative_to(root)) for p in found)


@contextmanager
def quiet_jit_warnings() -> Iterator[None]:
    """SAM2Transforms scripts its resize with ``torch.jit.script``, which torch now warns about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
        yield


class _DeviceTransforms:
    """The predictor's SAM2Transforms, with the image turned into a tensor on the model's device:
    the uint8 pixels travel (pinned, without waiting) and are scaled there, then the package's own
    resize + normalise module runs on them. Everything else is the package's transforms object."""

    def __init__(self, transforms: Any, device: torch.device) -> None:
        self._transforms = transforms
        self._device = device

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        pixels = to_device(image, self._device).permute(2, 0, 1)  # HWC uint8 -> CHW, as ToTensor
        return self._transforms.transforms(pixels.float().div(255))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transforms, name)


class Sam2Tool(SamFamilyTool):
    """A SAM 2 image model as a :class:`SegmentationTool`. Its mask decoder takes one image embedding
    per row, so the waiting prompts of all images share a forward pass."""

    name = "sam2"
    cross_image = True

    def __init__(
        self,
        model: Any,
        *,
        config: str = DEFAULT_CONFIG,
        checkpoint: Path | None = None,
        max_batch: int | None = None,
        precision: str = "auto",
        bucket_batches: bool | None = None,
        cuda_graphs: bool | None = None,
    ) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        super().__init__(model, max_batch=max_batch, precision=precision, bucket_batches=bucket_batches,
                         cuda_graphs=cuda_graphs)
        self.config = config
        self.checkpoint = checkpoint
        # Template only: calls work on shallow copies (see _fresh_predictor).
        with quiet_jit_warnings():
            self.predictor = SAM2ImagePredictor(model)
        # The predictor hard-codes the feature sizes of a 1024 input; derive them from the model so
        # that MedSAM2's 512 input works too.
        size = int(model.image_size)
        self.predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]

    @property
    def image_size(self) -> int:
        """Side of the square the image encoder sees (1024 for SAM 2, 512 for MedSAM2)."""
        return int(self.model.image_size)

    @property
    def low_res_size(self) -> tuple[int, int]:
        """(h, w) of the logits returned in :attr:`Prediction.logits` and accepted as mask_input."""
        return tuple(self.model.sam_prompt_encoder.mask_input_size)  # type: ignore[return-value]

    # -- encode -----------------------------------------------------------------------------
    def _fresh_predictor(self) -> Any:
        """A predictor of its own for one call: shares model and transforms, owns the image state."""
        predictor = copy.copy(self.predictor)
        predictor.reset_predictor()
        return predictor

    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        predictor = self._fresh_predictor()
        predictor._transforms = _DeviceTransforms(self.predictor._transforms, self.device)
        with inference_context(self.device, self.precision):
            predictor.set_image(image)
        state = _Sam2State(features=predictor._features, orig_hw=(int(image.shape[0]), int(image.shape[1])))
        tensors = [state.features["image_embed"], *state.features["high_res_feats"]]
        nbytes = sum(t.element_size() * t.nelement() for t in tensors)
        return ImageEmbedding(data=state, image_size=state.orig_hw, nbytes=nbytes)

    # -- decode -----------------------------------------------------------------------------
    @staticmethod
    def _wants_multimask(prompt: Prompt) -> bool:
        """A lone click is ambiguous (part vs whole); SAM 2 then returns three candidates."""
        return len(prompt.points) == 1 and prompt.box is None and prompt.mask_input is None

    def _state(self, embedding: ImageEmbedding) -> _Sam2State:
        state = embedding.data
        if not isinstance(state, _Sam2State):
            raise ToolError(f"{self.name} cannot decode an embedding made by another tool ({type(state).__name__})")
        return state

    def _forward_rows(self, rows: Sequence[tuple[_Sam2State, Prompt]]) -> list[DecodedPart]:
        """Prompts of identical structure, of one or several images, in one decoder call; masks are
        upsampled per image size. The pieces run inside the profiler ranges of
        :data:`medseg_agent.tools.sam_family.DECODE_RANGES`."""
        states = [state for state, _ in rows]
        prompts = [prompt for _, prompt in rows]
        with record_function(PROMPTS_RANGE):
            coords_t, labels_t, mask_t = self._prompt_tensors(states, prompts)
        distinct: dict[int, int] = {}
        for state in states:
            distinct.setdefault(id(state), len(distinct))
        count = len(rows)
        with inference_context(self.device, self.precision):
            with record_function(MODEL_RANGE):
                if len(distinct) == 1:  # one image: its embedding is repeated inside the decoder
                    features = [states[0].features["image_embed"], *states[0].features["high_res_feats"]]
                    repeat = count > 1
                else:  # several images: one embedding per row
                    order = list({id(s): s for s in states}.values())
                    index = torch.tensor([distinct[id(s)] for s in states], device=self.device)
                    features = [torch.cat([s.features["image_embed"] for s in order])[index]]
                    features += [torch.cat([s.features["high_res_feats"][level] for s in order])[index]
                                 for level in range(len(order[0].features["high_res_feats"]))]
                    repeat = False
                low_best, scores = self.decoder((coords_t, labels_t, mask_t, *features),
                                                multimask=self._wants_multimask(prompts[0]), repeat=repeat)
            with record_function(UPSAMPLE_RANGE):
                by_size: dict[tuple[int, int], list[int]] = {}
                for row, state in enumerate(states):
                    by_size.setdefault(state.orig_hw, []).append(row)
                parts = []
                for orig_hw, members in by_size.items():
                    chosen = low_best if len(members) == count else low_best[torch.tensor(members, device=self.device)]
                    full = self.predictor._transforms.postprocess_masks(chosen[:, None], orig_hw)[:, 0]
                    parts.append(DecodedPart(members, full > self.predictor.mask_threshold,
                                             torch.clamp(chosen, -32.0, 32.0),
                                             scores if len(members) == count else scores[members]))
        return parts

    def decoder_modules(self) -> Sequence[torch.nn.Module]:
        return (self.model.sam_prompt_encoder, self.model.sam_mask_decoder)

    def dense_positional_encoding(self) -> torch.Tensor:
        return self.model.sam_prompt_encoder.get_dense_pe()

    def decoder_forward(self, inputs: Sequence[torch.Tensor | None], *, multimask: bool,
                        repeat: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder and mask decoder on device tensors only (so that it can be captured in a
        CUDA graph): ``inputs`` = (points, labels, previous logits or None, image embedding,
        high-resolution features...). Returns each row's best logits (B, h, w), unclamped since the
        masks come from them, and its score (B,)."""
        coords, labels, mask, image_embed, *high_res = inputs
        model = self.model
        sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask)
        low_res, iou, _, _ = model.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=repeat,
            high_res_features=high_res,
        )
        logits, scores = best_candidates(low_res, iou)
        return logits.float(), scores

    def _prompt_tensors(self, states: Sequence[_Sam2State],
                        prompts: Sequence[Prompt]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Points (box corners first), labels and previous logits of same-structure prompts, on the
        device. Coordinates go to the model's input frame as ``SAM2Transforms.transform_coords`` puts
        them (divided by the image's width/height, times the input size, in float32), per row since
        rows may come from images of different sizes."""
        first, count = prompts[0], len(prompts)
        hw = np.array([[s.orig_hw[1], s.orig_hw[0]] for s in states], np.float32)[:, None, :]  # (B, 1, [w, h])
        size = np.float32(self.image_size)
        coords: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        if first.box is not None:  # the box's corners come first, labelled 2 and 3
            boxes = np.stack([check_finite(p.box, "box") for p in prompts]).astype(np.float32).reshape(-1, 2, 2)
            coords.append(boxes / hw * size)
            labels.append(np.tile(np.array([[2, 3]], np.int32), (count, 1)))
        if len(first.points):
            points = np.stack([check_finite(p.points, "points") for p in prompts]).astype(np.float32)
            coords.append(points / hw * size)
            labels.append(np.stack([p.labels for p in prompts]).astype(np.int32))
        mask_t = None
        if first.mask_input is not None:
            mask_t = to_device(np.stack([check_mask_input(p.mask_input, self.low_res_size) for p in prompts]),
                               self.device)
        return (to_device(np.concatenate(coords, axis=1), self.device),
                to_device(np.concatenate(labels, axis=1), self.device), mask_t)


def build_sam2_tool(
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    *,
    config: str = DEFAULT_CONFIG,
    image_size: int | None = None,
    allow_random_weights: bool = False,
    max_batch: int | None = None,
    precision: str = "auto",
    bucket_batches: bool | None = None,
    cuda_graphs: bool | None = None,
) -> Sam2Tool:
    """SAM 2 / MedSAM2 from a local checkpoint (e.g. ``sam2.1_hiera_tiny.pt``, ``MedSAM2_latest.pt``).

    ``config`` names a config inside the ``sam2`` package; ``image_size`` overrides its input size
    (512 for MedSAM2); ``precision`` is one of ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``,
    ``tf32``, ``bf16``; ``bucket_batches`` pads decoder calls to power-of-two row counts (default:
    on a CUDA device; see :func:`medseg_agent.tools.sam_family.batch_bucket`); ``cuda_graphs`` replays the
    prompt encoder and mask decoder from one CUDA graph per input shape (default: off; see
    :mod:`medseg_agent.tools.graphs`).
    """
    from sam2.build_sam import build_sam2

    _check_config(config)
    overrides: list[str] = []
    if image_size is not None:
        if image_size <= 0 or image_size % 64:
            raise ToolError(f"image_size must be a positive multiple of 64, got {image_size}")
        overrides.append(f"++model.image_size={int(image_size)}")
    desc = f"SAM 2 ({config}{f', image_size={image_size}' if image_size else ''})"

    def build() -> Any:
        # build_sam2 with ckpt_path=None gives random weights; checkpoints.py loads the file.
        with quiet_jit_warnings():
            return build_sam2(config, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)

    model, path = build_model(
        build, checkpoint, model_desc=desc, allow_random_weights=allow_random_weights, device=device
    )
    return Sam2Tool(model, config=config, checkpoint=path, max_batch=max_batch, precision=precision,
                    bucket_batches=bucket_batches, cuda_graphs=cuda_graphs)


def _check_config(config: str) -> None:
    """Fail with the list of valid names instead of hydra's MissingConfigException."""
    root = _sam2_root()
    if not ((root / config).is_file() or (root / f"{config}.yaml").is_file()):
        raise ToolError(
            f"unknown SAM 2 config {config!r}; expected a config inside the sam2 package, one of: "
            f"{', '.join(available_configs())}"
        )


def _sam2_root() -> Path:
    import sam2

    return Path(sam2.__file__).resolve().parent
