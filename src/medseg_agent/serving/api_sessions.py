"""Session endpoints: one interactive segmentation per session (web UI, RL rollouts).

Actions take the model's tool-call arguments unchanged (``{"bbox_2d": [...]}``,
``{"point_2d": [...], "point_type": "positive"}``) in the coordinate space chosen at creation, and
are validated by the same code as the environment's (:func:`medseg_agent.protocols.base.build_action`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from starlette.concurrency import run_in_threadpool

from medseg_agent.protocols.base import ParseFailure, build_action
from medseg_agent.serving.api_images import ERRORS, load_image, stored_image
from medseg_agent.serving.schemas import BoxAction, ErrorResponse, PointAction, Rle, SessionCreate, SessionState
from medseg_agent.serving.sessions import Session, SessionNotFound
from medseg_agent.serving.state import ServerState, get_state, require_token
from medseg_agent.vocabulary.actions import ADD_BBOX, ADD_POINT, AddPoint
from medseg_agent.vocabulary.coordinates import CoordinateFrame, view_size_for
from medseg_agent.vocabulary.errors import ToolError

SESSION_NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown, deleted or expired session."}}
CONFLICT = {409: {"model": ErrorResponse, "description": "The action does not fit the session's state."}}
IncludeMask = Annotated[
    bool,
    Query(description="include the current mask (COCO RLE, computed once when the mask was predicted) in the "
                      "answer; false when only the area and score are needed"),
]

router = APIRouter(prefix="/v1/sessions", dependencies=[Depends(require_token)], responses=ERRORS, tags=["sessions"])


@router.post(
    "",
    response_model=SessionState,
    status_code=201,
    responses={
        404: {"model": ErrorResponse, "description": "No image with this image_id on the server."},
        503: {"model": ErrorResponse, "description": "The server holds its maximum number of sessions."},
    },
    summary="Start a session on an image",
)
async def create_session(body: SessionCreate, state: ServerState = Depends(get_state)) -> SessionState:
    """Start a session on an uploaded image (``image_id``) or an inline one (``image_base64``).

    Sessions on the same image share one embedding, computed once.
    """
    if (body.image_id is None) == (body.image_base64 is None):
        raise HTTPException(422, "give exactly one of image_id (an uploaded image) or image_base64")
    if body.image_base64 is not None:
        key, image, _ = await load_image(state, body.image_base64)
    else:
        key = body.image_id
        image = stored_image(state, key)
    if body.view_longest_side is not None and body.coordinate_space != "pixel":
        raise HTTPException(422, "view_longest_side only applies to coordinate_space 'pixel'")
    h, w = image.shape[:2]
    frame = CoordinateFrame(body.coordinate_space, (h, w), view_size_for((h, w), body.view_longest_side))
    try:
        session = state.sessions.create(key, frame)
    except KeyError:  # evicted between the upload and now
        raise HTTPException(404, f"image {key} is not on this server; upload it with POST /v1/images") from None
    if body.prefetch:
        state.spawn(state.embedding(key, image), f"encoding image {key[:12]}")
    return session_state(state, session, include_mask=False)


@router.get("/{session_id}", response_model=SessionState, responses=SESSION_NOT_FOUND, summary="Session status")
async def get_session(
    session_id: str, include_mask: IncludeMask = False, state: ServerState = Depends(get_state)
) -> SessionState:
    return session_state(state, state.sessions.get(session_id), include_mask)


@router.post(
    "/{session_id}/box",
    response_model=SessionState,
    responses={**SESSION_NOT_FOUND},
    summary="add_bbox: a new box starts a new mask",
)
async def add_box(
    session_id: str, body: BoxAction, include_mask: IncludeMask = True, state: ServerState = Depends(get_state)
) -> SessionState:
    """Replace the prompt by this box (earlier box, points and logits are dropped) and predict."""
    return session_state(state, await apply_action(state, session_id, ADD_BBOX, body.model_dump()), include_mask)


@router.post(
    "/{session_id}/point",
    response_model=SessionState,
    responses={**SESSION_NOT_FOUND, **CONFLICT},
    summary="add_point: refine the mask with a click",
)
async def add_point(
    session_id: str, body: PointAction, include_mask: IncludeMask = True, state: ServerState = Depends(get_state)
) -> SessionState:
    """Add a click to the prompt and predict again from it and the previous logits."""
    return session_state(state, await apply_action(state, session_id, ADD_POINT, body.model_dump()), include_mask)


@router.post(
    "/{session_id}/undo",
    response_model=SessionState,
    responses={**SESSION_NOT_FOUND, **CONFLICT},
    summary="Undo the last action",
)
async def undo(
    session_id: str, include_mask: IncludeMask = True, state: ServerState = Depends(get_state)
) -> SessionState:
    """Restore the prompt, logits and mask from before the last action (or reset)."""
    session = state.sessions.get(session_id)
    async with session.lock:
        if not session.undo():
            raise HTTPException(409, "nothing to undo in this session")
    return session_state(state, session, include_mask)


@router.post(
    "/{session_id}/reset", response_model=SessionState, responses=SESSION_NOT_FOUND, summary="Reset the session"
)
async def reset(
    session_id: str, include_mask: IncludeMask = True, state: ServerState = Depends(get_state)
) -> SessionState:
    """Drop all prompts and the mask (undo brings them back)."""
    session = state.sessions.get(session_id)
    async with session.lock:
        session.reset()
    return session_state(state, session, include_mask)


@router.get(
    "/{session_id}/mask",
    response_model=None,
    responses={
        **SESSION_NOT_FOUND,
        200: {
            "description": "The current mask: COCO RLE (JSON) or a 0/255 PNG.",
            "content": {"application/json": {"schema": Rle.model_json_schema()}, "image/png": {}},
        },
    },
    summary="The current mask as RLE or PNG",
)
async def get_mask(
    session_id: str,
    format: Annotated[Literal["rle", "png"], Query(description="rle (JSON) or png")] = "rle",
    state: ServerState = Depends(get_state),
) -> Any:
    session = state.sessions.get(session_id)
    if format == "png":
        return Response(content=await run_in_threadpool(_png, session.mask()), media_type="image/png")
    return Rle(**session.rle)


@router.delete("/{session_id}", status_code=204, responses=SESSION_NOT_FOUND, summary="End a session")
async def delete_session(session_id: str, state: ServerState = Depends(get_state)) -> Response:
    if not state.sessions.delete(session_id):
        raise SessionNotFound(session_id)
    return Response(status_code=204)


# -- helpers (shared with the lean action routes, medseg_agent.serving.api_actions) -------------------
async def apply_action(state: ServerState, session_id: str, name: str, arguments: dict[str, Any]) -> Session:
    """Validate ``add_bbox`` / ``add_point`` arguments against the session's frame, predict, commit.

    Raises SessionNotFound (404) or HTTPException: 422 for arguments the action refuses or the tool
    rejects, 409 past the session's click limit.
    """
    session = state.sessions.get(session_id)
    async with session.lock:
        try:
            action = build_action(name, arguments, session.frame, (ADD_BBOX, ADD_POINT))
        except ParseFailure as exc:
            raise HTTPException(422, exc.error.message) from None
        if isinstance(action, AddPoint) and len(session.state.points) >= state.config.max_points:
            raise HTTPException(
                409, f"the session already has {state.config.max_points} points (the limit); add a box or reset"
            )
        new_state = session.next_state(action)  # type: ignore[arg-type]
        try:
            prediction = await state.predict(session.image_key, session.image, new_state.to_prompt())
        except ToolError as exc:
            raise HTTPException(422, f"{name}: {exc}") from None
        session.commit(new_state, prediction)
    return session


def _png(mask: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise RuntimeError("PNG encoding of the mask failed")
    return png.tobytes()


def session_answer(state: ServerState, session: Session, include_mask: bool) -> dict[str, Any]:
    """The session's state as the JSON object :class:`SessionState` describes (plain values only)."""
    prompt = session.state
    h, w = session.size
    score = session.score
    return {
        "session_id": session.id,
        "image_id": session.image_key,
        "height": h,
        "width": w,
        "coordinate_space": session.frame.space.value,
        "view_size": list(session.frame.view_size),
        "box": None if prompt.box is None else [float(v) for v in prompt.box],
        "points": [[float(x), float(y)] for x, y in prompt.points],
        "labels": list(prompt.labels),
        "num_actions": session.actions,
        "undo_available": session.undo_available,
        "score": score if score is not None and math.isfinite(score) else None,
        "mask_area": session.mask_area(),
        "mask": session.rle if include_mask else None,
        "idle_expires_in_s": round(state.sessions.expires_in(session), 3),
    }


def session_state(state: ServerState, session: Session, include_mask: bool) -> SessionState:
    return SessionState(**session_answer(state, session, include_mask))
