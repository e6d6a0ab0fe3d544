"""Image endpoints and stateless prediction (what :class:`HttpSegmentationTool` uses).

``POST /v1/images`` stores an image under its content hash; ``POST /v1/predict`` decodes full
prompts (box, points, previous logits) against the image's cached embedding. Concurrent predictions
for one image are batched by the model worker.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Path, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from medseg_agent.serving.images import IMAGE_ID_PATTERN, decode_image_bytes, image_key, upload_digest
from medseg_agent.serving.schemas import (
    ErrorResponse,
    ImageInfo,
    PredictionOut,
    PredictRequest,
    PredictResponse,
    PromptIn,
)
from medseg_agent.serving.state import ServerState, get_state, require_token
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.prompts import Prompt

ERRORS = {
    401: {"model": ErrorResponse, "description": "Missing or wrong token."},
    413: {"model": ErrorResponse, "description": "Request body above the server's limit."},
    422: {"model": ErrorResponse, "description": "Malformed request; `detail` names the field."},
}
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such image on this server."}}
ImageIdPath = Annotated[str, Path(pattern=IMAGE_ID_PATTERN, description="SHA-256 content hash of the image")]

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=ERRORS)


#: Uploads at least this large are hashed off the event loop (hashlib releases the GIL).
_HASH_OFF_LOOP_BYTES = 256 * 1024


def decode_upload(data: bytes, max_side: int) -> np.ndarray:
    """The one place the server turns uploaded bytes into pixels (RGB uint8, limits checked)."""
    return decode_image_bytes(data, max_side)


async def load_image(state: ServerState, data: bytes | str) -> tuple[str, np.ndarray, bool]:
    """Store an uploaded image (file bytes, or base64 text of an inline one); return (key, image,
    created). The upload's bytes are hashed first: bytes seen before cost no decoding at all."""
    digest = await run_in_threadpool(upload_digest, data) if len(data) >= _HASH_OFF_LOOP_BYTES \
        else upload_digest(data)
    known = state.images.find_upload(digest)
    if known is not None:
        return known[0], known[1], False
    decoding = state.uploads_in_flight.get(digest)
    if decoding is not None:  # the same bytes are being decoded for another request: wait for that
        key, image, _ = await asyncio.shield(decoding)
        return key, image, False

    def decode() -> tuple[str, np.ndarray]:
        raw = decode_base64(data, "image_base64") if isinstance(data, str) else data
        image = decode_upload(raw, state.config.max_image_side)
        return image_key(image), image

    async def decode_and_store() -> tuple[str, np.ndarray, bool]:
        key, image = await run_in_threadpool(decode)
        key, created = state.images.put(image, key, upload=digest)  # stored before any waiter resumes
        stored = state.images.get(key)
        return key, (image if stored is None else stored), created

    task = asyncio.ensure_future(decode_and_store())
    task.add_done_callback(lambda done: done.cancelled() or done.exception())  # seen, even if all waiters left
    state.uploads_in_flight[digest] = task
    try:
        return await asyncio.shield(task)
    finally:
        if state.uploads_in_flight.get(digest) is task:
            del state.uploads_in_flight[digest]


def decode_base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, f"{field} is not valid base64") from None


def image_info(state: ServerState, key: str, image: np.ndarray, created: bool = False) -> ImageInfo:
    return ImageInfo(
        image_id=key, height=image.shape[0], width=image.shape[1], created=created, embedded=key in state.cache
    )


def stored_image(state: ServerState, key: str) -> np.ndarray:
    image = state.images.get(key)
    if image is None:
        raise HTTPException(404, f"image {key} is not on this server; upload it with POST /v1/images")
    return image


@router.post("/images", response_model=ImageInfo, summary="Upload an image (PNG, JPEG, TIFF, BMP or .npy)")
async def upload_image(
    file: Annotated[UploadFile, File(description="image file (PNG, JPEG, TIFF, BMP) or a .npy array")],
    encode: Annotated[bool, Query(description="compute the embedding before answering")] = False,
    state: ServerState = Depends(get_state),
) -> ImageInfo:
    """Store an image under its content hash (uploading the same pixels again is free)."""
    key, image, created = await load_image(state, await file.read())
    if encode:
        await state.embedding(key, image)
    return image_info(state, key, image, created)


@router.get("/images/{image_id}", response_model=ImageInfo, responses=NOT_FOUND, summary="Is this image here?")
async def get_image(image_id: ImageIdPath, state: ServerState = Depends(get_state)) -> ImageInfo:
    return image_info(state, image_id, stored_image(state, image_id))


@router.post(
    "/images/{image_id}/encode", response_model=ImageInfo, responses=NOT_FOUND, summary="Embed a stored image"
)
async def encode_image(image_id: ImageIdPath, state: ServerState = Depends(get_state)) -> ImageInfo:
    """Compute (or find in the cache) the image's embedding; concurrent calls share one encode."""
    image = stored_image(state, image_id)
    await state.embedding(image_id, image)
    return image_info(state, image_id, image)


@router.post("/predict", response_model=PredictResponse, responses=NOT_FOUND, summary="Predict masks for prompts")
async def predict(body: PredictRequest, state: ServerState = Depends(get_state)) -> PredictResponse:
    """Decode each prompt (pixels of the full image) against the image's embedding.

    Feed a prediction's ``logits`` back unchanged as the next prompt's ``mask_input``.
    """
    limit = state.config.max_prompts_per_request
    if len(body.prompts) > limit:
        raise HTTPException(422, f"prompts: {len(body.prompts)} given; at most {limit} per request")
    image = stored_image(state, body.image_id)
    h, w = image.shape[:2]
    prompts = [to_prompt(p, f"prompts[{i}]", h, w) for i, p in enumerate(body.prompts)]
    outcomes = await asyncio.gather(
        *(state.predict(body.image_id, image, p) for p in prompts), return_exceptions=True
    )
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, ToolError):
            raise HTTPException(422, f"prompts[{i}]: {outcome}")
        if isinstance(outcome, BaseException):
            raise outcome
    return PredictResponse(
        image_id=body.image_id,
        predictions=[PredictionOut.from_encoded(p, body.return_logits) for p in outcomes],
    )


def to_prompt(body: PromptIn, field: str, height: int, width: int) -> Prompt:
    """Validate one prompt against the image size (422 naming the field)."""
    if body.box is None and not body.points:
        raise HTTPException(422, f"{field}: a prompt needs a box or at least one point")
    if len(body.points) != len(body.labels):
        raise HTTPException(
            422, f"{field}.labels: one label per point expected, got {len(body.labels)} for {len(body.points)} points"
        )
    if body.box is not None:
        x1, y1, x2, y2 = body.box
        _check_xy(f"{field}.box", x1, y1, height, width)
        _check_xy(f"{field}.box", x2, y2, height, width)
        if x1 > x2 or y1 > y2:
            raise HTTPException(422, f"{field}.box {body.box} is inverted: need x1 <= x2 and y1 <= y2")
    for j, (x, y) in enumerate(body.points):
        _check_xy(f"{field}.points[{j}]", x, y, height, width)
    mask_input = None
    if body.mask_input is not None:
        try:
            mask_input = body.mask_input.to_numpy(f"{field}.mask_input")
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    return Prompt(
        box=None if body.box is None else np.array(body.box, dtype=np.float32),
        points=np.array(body.points, dtype=np.float32).reshape(-1, 2),
        labels=np.array(body.labels, dtype=np.int64),
        mask_input=mask_input,
    )


def _check_xy(field: str, x: float, y: float, height: int, width: int) -> None:
    if not (0 <= x <= width and 0 <= y <= height):
        raise HTTPException(
            422, f"{field}: ({x:g}, {y:g}) is outside the image; expected x in [0, {width}] and y in [0, {height}]"
        )
