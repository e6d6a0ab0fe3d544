"""Request and response bodies of the tool server (they are its OpenAPI schema).

Coordinates of ``/v1/predict`` are full-resolution pixels ``(x, y)``, what
:class:`medseg_agent.vocabulary.prompts.Prompt` holds. Session actions take the reference system's tool-call
arguments verbatim (``bbox_2d``, ``point_2d``, ``point_type``) in the session's coordinate space, so
an RL trainer can forward a model's tool call unchanged.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from medseg_agent.protocols.base import ParseFailure, parse_number
from medseg_agent.serving.images import IMAGE_ID_PATTERN
from medseg_agent.tools.base import EncodedPrediction
from medseg_agent.vocabulary.actions import CoordinateSpace

ImageId = Annotated[
    str, Field(pattern=IMAGE_ID_PATTERN, description="SHA-256 (hex) of the image's RGB bytes and shape.")
]
MAX_ARRAY_SIDE = 4096
MAX_ARRAY_ELEMENTS = 16 * 1024 * 1024


def _coordinate(value: Any) -> float:
    """The environment's number rule (:func:`parse_number`), so the server refuses what an episode
    refuses: booleans (JSON ``true`` is not 1), "4_5_0", non-ASCII digits, NaN and huge values."""
    try:
        return parse_number(value, "coordinates")
    except ParseFailure as exc:
        raise ValueError(exc.error.message) from None


Coordinate = Annotated[float, BeforeValidator(_coordinate)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorResponse(BaseModel):
    """Every error answer: ``detail`` is a sentence naming the field and what was expected."""

    detail: str
    errors: list[dict[str, Any]] | None = None


def validation_error_body(errors: Sequence[Any]) -> dict[str, Any]:
    """The 422 answer to pydantic-style validation errors: ``detail`` names each field
    (``body.bbox_2d: ...``) and ``errors`` lists them (location, message, type)."""
    listed = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", ""))
        if err.get("type") == "json_invalid":  # loc is (body, character offset)
            reason = (err.get("ctx") or {}).get("error", "")
            loc, msg = ["body"], f"not valid JSON (at character {loc[-1]}){': ' + str(reason) if reason else ''}"
        listed.append({"loc": loc, "msg": msg, "type": str(err.get("type"))})
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in listed) or "malformed request"
    return {"detail": detail, "errors": listed}


class Rle(BaseModel):
    """COCO run-length encoding of a boolean mask (``pycocotools`` / :func:`decode_rle`)."""

    size: Annotated[list[int], Field(min_length=2, max_length=2, description="[H, W]")]
    counts: str


class ArrayPayload(_Strict):
    """A float32 array: little-endian bytes in base64 (logits travel this way, exactly)."""

    shape: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ARRAY_SIDE)]], Field(min_length=1, max_length=4)]
    dtype: Literal["float32"] = "float32"
    data: str = Field(description="base64 of the C-order little-endian float32 values")

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> ArrayPayload:
        values = np.ascontiguousarray(array, dtype="<f4")
        return cls(shape=list(values.shape), data=base64.b64encode(values.tobytes()).decode("ascii"))

    def to_numpy(self, field: str = "array", finite: bool = True) -> np.ndarray:
        """Decode, or raise ValueError naming ``field`` and what was wrong (``finite``: refuse NaN/inf)."""
        count = math.prod(self.shape)
        if count > MAX_ARRAY_ELEMENTS:
            raise ValueError(f"{field}.shape {self.shape} has {count} values; at most {MAX_ARRAY_ELEMENTS}")
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{field}.data is not valid base64") from None
        if len(raw) != 4 * count:
            raise ValueError(f"{field}.data holds {len(raw)} bytes; shape {self.shape} float32 needs {4 * count}")
        values = np.frombuffer(raw, dtype="<f4").reshape(self.shape).astype(np.float32)
        if finite and not np.isfinite(values).all():
            raise ValueError(f"{field} contains NaN or infinite values")
        return values


# -- images --------------------------------------------------------------------------------------
class ImageInfo(BaseModel):
    image_id: str
    height: int
    width: int
    created: bool = Field(False, description="true when this request stored the image for the first time")
    embedded: bool = Field(description="whether the image's embedding is in the cache now")


# -- stateless prediction (the HTTP client tool) ---------------------------------------------------
class PromptIn(_Strict):
    """One :class:`~medseg_agent.vocabulary.prompts.Prompt` in full-resolution pixels."""

    box: Annotated[list[Coordinate], Field(min_length=4, max_length=4)] | None = Field(
        None, description="[x1, y1, x2, y2] pixels, x1 <= x2, y1 <= y2"
    )
    points: Annotated[
        list[Annotated[list[Coordinate], Field(min_length=2, max_length=2)]], Field(max_length=256)
    ] = Field(default_factory=list, description="[[x, y], ...] pixels")
    labels: Annotated[list[Literal[0, 1]], Field(max_length=256)] = Field(
        default_factory=list, description="1 positive, 0 negative; one per point"
    )
    mask_input: ArrayPayload | None = Field(
        None, description="the previous prediction's logits from this server, unchanged"
    )


class PredictRequest(_Strict):
    image_id: ImageId
    prompts: Annotated[list[PromptIn], Field(min_length=1)]
    return_logits: bool = Field(True, description="return low-resolution logits to feed back as mask_input")


class PredictionOut(BaseModel):
    mask: Rle
    score: float | None = Field(description="the tool's own confidence (null when not finite)")
    logits: ArrayPayload | None = None

    @classmethod
    def from_encoded(cls, prediction: EncodedPrediction, with_logits: bool) -> PredictionOut:
        score = float(prediction.score)
        logits = prediction.logits if with_logits else None
        return cls(
            mask=Rle(**prediction.rle),
            score=score if math.isfinite(score) else None,
            logits=None if logits is None else ArrayPayload.from_numpy(np.asarray(logits)),
        )


class PredictResponse(BaseModel):
    image_id: str
    predictions: list[PredictionOut]


# -- sessions ------------------------------------------------------------------------------------
class SessionCreate(_Strict):
    """Start a session on an uploaded image (``image_id``) or on an image sent inline."""

    image_id: ImageId | None = None
    image_base64: str | None = Field(None, description="PNG/JPEG/TIFF/.npy bytes in base64 (instead of image_id)")
    coordinate_space: CoordinateSpace = Field(
        CoordinateSpace.PIXEL,
        description="how actions write coordinates: pixel (of the view), norm1000 (0-999 grid), norm1 ([0, 1])",
    )
    view_longest_side: Annotated[int, Field(ge=2, le=16384)] | None = Field(
        None, description="pixel space only: the longest side of the view the policy saw (default: full size)"
    )
    prefetch: bool = Field(True, description="start encoding the image now so the first action is fast")


class BoxAction(BaseModel):
    """``add_bbox`` arguments, as a model writes them."""

    model_config = ConfigDict(allow_inf_nan=False)
    bbox_2d: Annotated[list[Coordinate], Field(min_length=4, max_length=4, description="[x1, y1, x2, y2]")]


class PointAction(BaseModel):
    """``add_point`` arguments, as a model writes them."""

    model_config = ConfigDict(allow_inf_nan=False)
    point_2d: Annotated[list[Coordinate], Field(min_length=2, max_length=2, description="[x, y]")]
    point_type: Literal["positive", "negative"]


class SessionState(BaseModel):
    session_id: str
    image_id: str
    height: int
    width: int
    coordinate_space: CoordinateSpace
    view_size: list[int] = Field(description="[H, W] of the view coordinates refer to (pixel space)")
    box: list[float] | None = Field(description="current box in full-resolution pixels")
    points: list[list[float]] = Field(description="current clicks in full-resolution pixels")
    labels: list[int]
    num_actions: int = Field(description="boxes and clicks applied (undo and reset lower it)")
    undo_available: int
    score: float | None
    mask_area: int = Field(description="pixels in the current mask")
    mask: Rle | None = Field(None, description="the current mask (COCO RLE); left out with include_mask=false")
    idle_expires_in_s: float
