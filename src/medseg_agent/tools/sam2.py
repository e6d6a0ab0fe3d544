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

Encoding uses :class:`sam2.sam2_image_predictor.SAM2ImagePredictor` (``set_image``); decoding its
``_prep_prompts`` + ``_predict`` (what ``predict`` does, minus the squeeze), which also accept a
batch of prompt sets for one image. The predictor's per-image state (``_features``,
``_orig_hw``) lives in the :class:`ImageEmbedding`; every call works on a shallow copy of a
template predictor (sharing the model and the transforms), so concurrent calls need no lock.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg_agent.tools.base import ImageEmbedding, SegmentationTool
from medseg_agent.tools.checkpoints import build_model
from medseg_agent.tools.sam import (
    DEFAULT_MAX_BATCH,
    check_finite,
    check_mask_input,
    decode_grouped,
    predictions_from_tensors,
)
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.prompts import Prediction, Prompt

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


class Sam2Tool(SegmentationTool):
    """A SAM 2 image model as a :class:`SegmentationTool`."""

    name = "sam2"
    supports_batch_decode = True

    def __init__(
        self,
        model: Any,
        *,
        config: str = DEFAULT_CONFIG,
        checkpoint: Path | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        super().__init__()
        if max_batch < 1:
            raise ToolError(f"max_batch must be >= 1, got {max_batch}")
        self.config = config
        self.checkpoint = checkpoint
        self.max_batch = max_batch
        self.model = model
        # Template only: calls work on shallow copies (see _fresh_predictor).
        with warnings.catch_warnings():  # SAM2Transforms scripts its resize; torch now warns about jit
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
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
        predictor.set_image(image)
        state = _Sam2State(features=predictor._features, orig_hw=(int(image.shape[0]), int(image.shape[1])))
        tensors = [state.features["image_embed"], *state.features["high_res_feats"]]
        nbytes = sum(t.element_size() * t.nelement() for t in tensors)
        return ImageEmbedding(data=state, image_size=state.orig_hw, nbytes=nbytes)

    # -- decode -----------------------------------------------------------------------------
    def _decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction:
        return self._decode_group(self._state(embedding), [prompt])[0]

    def decode_batch(self, embedding: ImageEmbedding, prompts: list[Prompt]) -> list[Prediction]:
        """Decode many prompt sets for one image; same grouping rules as :meth:`SamTool.decode_batch`."""
        return decode_grouped(self, embedding, prompts, self._state, self._decode_group, self.max_batch)

    @staticmethod
    def _wants_multimask(prompt: Prompt) -> bool:
        """A lone click is ambiguous (part vs whole); SAM 2 then returns three candidates."""
        return len(prompt.points) == 1 and prompt.box is None and prompt.mask_input is None

    def _state(self, embedding: ImageEmbedding) -> _Sam2State:
        state = embedding.data
        if not isinstance(state, _Sam2State):
            raise ToolError(f"{self.name} cannot decode an embedding made by another tool ({type(state).__name__})")
        return state

    def _decode_group(self, state: _Sam2State, prompts: Sequence[Prompt]) -> list[Prediction]:
        """Run prompts of identical structure through the predictor in one ``_predict`` call."""
        first = prompts[0]
        multimask = self._wants_multimask(first)
        coords = labels = box = masks = None
        if len(first.points):
            coords = np.stack([check_finite(p.points, "points") for p in prompts]).astype(np.float32)
            labels = np.stack([p.labels for p in prompts])
        if first.box is not None:
            box = np.stack([check_finite(p.box, "box") for p in prompts]).astype(np.float32)
        if first.mask_input is not None:
            masks = np.stack([check_mask_input(p.mask_input, self.low_res_size) for p in prompts])
        predictor = self._fresh_predictor()
        predictor._features = state.features
        predictor._orig_hw = [state.orig_hw]
        predictor._is_image_set = True
        mask_t, coords_t, labels_t, box_t = predictor._prep_prompts(
            coords, labels, box, masks, normalize_coords=True
        )
        full, scores, low_res = predictor._predict(
            coords_t, labels_t, box_t, mask_t, multimask_output=multimask, return_logits=True
        )
        best = scores.argmax(dim=1)
        rows = torch.arange(len(prompts), device=best.device)
        mask = full[rows, best] > self.predictor.mask_threshold
        return predictions_from_tensors(mask, low_res[rows, best], scores[rows, best])


def build_sam2_tool(
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    *,
    config: str = DEFAULT_CONFIG,
    image_size: int | None = None,
    allow_random_weights: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Sam2Tool:
    """SAM 2 / MedSAM2 from a local checkpoint (e.g. ``sam2.1_hiera_tiny.pt``, ``MedSAM2_latest.pt``).

    ``config`` names a config inside the ``sam2`` package; ``image_size`` overrides its input size
    (512 for MedSAM2).
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
        return build_sam2(config, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)

    model, path = build_model(
        build, checkpoint, model_desc=desc, allow_random_weights=allow_random_weights, device=device
    )
    return Sam2Tool(model, config=config, checkpoint=path, max_batch=max_batch)


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
