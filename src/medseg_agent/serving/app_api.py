"""The annotation app's HTTP API (``/v1/app``) and its page (``/app``), served by the tool server.

A person opens an image, a volume slice or a library sample, starts an episode with a target and
optionally an agent, and then acts (box, clicks), lets the agent act, undoes, redoes, resets and
saves; every answer carries the whole episode (turns with their actor, prompt, mask as COCO RLE).
The page (``serving/static/app``) uses nothing but these endpoints and ``/health``.
"""

from __future__ import annotations

import dataclasses
import gzip
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import Field
from starlette.concurrency import run_in_threadpool

import medseg_agent
from medseg_agent.annotation.episode import EpisodeClosed, InvalidPersonAction, NothingToUndo, SharedEpisode
from medseg_agent.annotation.library import LibraryEntry
from medseg_agent.annotation.volumes import Contrast, Volume, VolumeOpenError, ct_window_presets, open_volume
from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.io.images import MIN_SIDE, EncodedImage, ImageLimits, ImageLoadError, load_image
from medseg_agent.io.masks import encode_rle
from medseg_agent.policies.chat import PolicyError
from medseg_agent.policies.registry import build_policy
from medseg_agent.protocols import PROTOCOLS
from medseg_agent.serving.api_images import ERRORS, stored_image
from medseg_agent.serving.app import create_app
from medseg_agent.serving.app_schemas import (
    AgentDefaults,
    AgentSpec,
    AppInfo,
    BoxIn,
    ContrastOut,
    EpisodeCreate,
    EpisodeOut,
    OpenedImage,
    OpenedVolume,
    PointIn,
    PromptOut,
    SavedOut,
    SliceRef,
    SliceRequest,
    TurnOut,
)
from medseg_agent.serving.app_state import AppConfig, AppState, ImageSource, LiveEpisode
from medseg_agent.serving.config import ServerConfig
from medseg_agent.serving.images import IMAGE_ID_PATTERN, ImageRejected
from medseg_agent.serving.schemas import ErrorResponse, Rle
from medseg_agent.serving.state import ServerState, get_state, require_token
from medseg_agent.tools.base import SegmentationTool, ToolError
from medseg_agent.vocabulary.sample import Sample

STATIC_DIR = Path(__file__).parent / "static" / "app"
NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown (or expired) episode, volume, image or entry."}}
CONFLICT = {409: {"model": ErrorResponse, "description": "The episode has ended, or nothing to undo/redo."}}
AGENT_FAILED = {502: {"model": ErrorResponse, "description": "The agent's model could not be queried."}}
Opened = Annotated[OpenedImage | OpenedVolume, Field(discriminator="kind")]
ImageIdPath = Annotated[str, PathParam(pattern=IMAGE_ID_PATTERN, description="SHA-256 content hash of the image")]

router = APIRouter(prefix="/v1/app", dependencies=[Depends(require_token)], responses=ERRORS, tags=["app"])


def create_annotation_app(tool: SegmentationTool, server: ServerConfig, config: AppConfig, *,
                          owns_tool: bool = False) -> FastAPI:
    """A tool server (:func:`medseg_agent.serving.app.create_app`, ``owns_tool`` as there) with the
    annotation app on it: one process holds the tool, its embedding cache, every annotator's session
    and the token."""
    app = create_app(tool, server, owns_tool=owns_tool)
    install_app(app, config)
    return app


def app_url(host: str, port: int, token: str | None) -> str:
    """The page's address to open in a browser (the token in the fragment: never sent to a proxy log)."""
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/app/" + (f"#token={token}" if token else "")


def install_app(app: FastAPI, config: AppConfig) -> AppState:
    """Add the annotation app to a tool server made by :func:`medseg_agent.serving.app.create_app`."""
    state = AppState(app.state.server, config)
    app.state.annotation = state
    app.include_router(router)
    app.mount("/app", StaticFiles(directory=STATIC_DIR, html=True), name="app")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/app/")

    return state


def get_app(request: Request) -> AppState:
    state = getattr(request.app.state, "annotation", None)
    if state is None:
        raise HTTPException(404, "this server runs without the annotation app; start it with `medseg-agent app`")
    return state


# -- what the page starts from ------------------------------------------------------------------------
@router.get("/info", response_model=AppInfo, summary="The app's settings: tool, output folder, defaults")
async def info(app_state: AppState = Depends(get_app)) -> AppInfo:
    config = app_state.config
    return AppInfo(
        tool=app_state.tool.name,
        version=medseg_agent.__version__,
        out_dir=str(config.out_dir.resolve()),
        annotator=config.annotator,
        protocols=sorted(PROTOCOLS),
        max_turns=config.max_turns,
        window_presets=ct_window_presets(),
        agent=AgentDefaults(
            base_url=config.agent_base_url, model=config.agent_model, checkpoint=config.agent_checkpoint
        ),
        library_size=len(config.library),
        library_warning=config.library_warning,
    )


@router.get("/library", response_model=list[LibraryEntry], summary="Samples and volumes one click away")
async def library(app_state: AppState = Depends(get_app)) -> list[LibraryEntry]:
    return app_state.config.library.entries()


@router.post("/library/{entry_id}/open", response_model=Opened, responses=NOT_FOUND, summary="Open a library entry")
async def open_entry(entry_id: str, app_state: AppState = Depends(get_app)) -> OpenedImage | OpenedVolume:
    lib = app_state.config.library
    sample = lib.sample(entry_id)
    if sample is not None:
        return _store_image(app_state, sample, has_reference=bool(np.any(sample.mask)))
    entry = lib.volume(entry_id)
    if entry is None:
        raise HTTPException(404, f"no library entry {entry_id!r}; GET /v1/app/library lists them")
    try:
        volume = await run_in_threadpool(open_volume, entry.path, entry.name, entry.modality)
    except VolumeOpenError as exc:
        raise HTTPException(422, str(exc)) from None
    return _volume_out(app_state, volume, entry.target)


# -- images and volumes -------------------------------------------------------------------------------
@router.post("/open", response_model=Opened, summary="Open an uploaded image, NIfTI volume or DICOM series")
async def open_files(
    files: Annotated[list[UploadFile], File(description="one image (PNG, JPEG, TIFF, BMP, DICOM), one NIfTI "
                                                        "volume (.nii, .nii.gz), or the files of a DICOM series")],
    modality: Annotated[str | None, Form(max_length=40, description="CT, MRI, ... (default: guessed)")] = None,
    app_state: AppState = Depends(get_app),
) -> OpenedImage | OpenedVolume:
    uploads = [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
    if not uploads:
        raise HTTPException(422, "files: send at least one file")
    modality = (modality or "").strip() or None
    try:
        opened = await run_in_threadpool(_open_uploads, uploads, modality, app_state.server.config.max_image_side)
    except (VolumeOpenError, ImageRejected) as exc:
        raise HTTPException(422, str(exc)) from None
    if isinstance(opened, Volume):
        return _volume_out(app_state, opened, "")
    return _store_image(app_state, opened)


@router.get(
    "/images/{image_id}.png",
    response_class=Response,
    responses={**NOT_FOUND, 200: {"content": {"image/png": {}}, "description": "The image the tool segments."}},
    summary="An image of the server as PNG (what the page shows)",
)
async def image_png(image_id: ImageIdPath, state: ServerState = Depends(get_state)) -> Response:
    image = stored_image(state, image_id)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return Response(png.tobytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post(
    "/volumes/{volume_id}/slice", response_model=OpenedImage, responses=NOT_FOUND, summary="Show one slice"
)
async def volume_slice(volume_id: str, body: SliceRequest, app_state: AppState = Depends(get_app)) -> OpenedImage:
    volume = app_state.volumes.get(volume_id)
    if volume is None:
        raise HTTPException(404, f"volume {volume_id!r} is not open on this server (any more); open it again")
    try:
        contrast = _contrast(body, volume)
        image = await run_in_threadpool(volume.render, body.axis, body.index, contrast)
    except (ValueError, IndexError) as exc:
        raise HTTPException(422, str(exc)) from None
    if min(image.shape[:2]) < MIN_SIDE:  # a volume one voxel thick along this view (a single-slice series)
        raise HTTPException(
            422,
            f"{volume.name}: a {body.axis} slice is {image.shape[0]}x{image.shape[1]} pixels, at least "
            f"{MIN_SIDE}x{MIN_SIDE} are needed; view the volume along another axis",
        )
    stem = f"{_safe_name(volume.name)}_{body.axis}{body.index:03d}"
    sample = Sample(
        image=image,
        mask=np.zeros(image.shape[:2], dtype=bool),
        target="",
        modality=volume.modality,
        dataset="volume",
        sample_id=stem,
        spacing=volume.spacing(body.axis),
        image_path=volume.source or None,
        meta={"volume": volume.name, "axis": body.axis, "slice_index": body.index, "contrast": contrast.describe()},
    )
    source = ImageSource(sample, volume_id=volume_id, volume=volume, axis=body.axis, index=body.index,
                         contrast=contrast)
    return _store_image(app_state, sample, source=source)


# -- episodes -------------------------------------------------------------------------------------------
@router.post(
    "/episodes",
    response_model=EpisodeOut,
    status_code=201,
    responses={**NOT_FOUND, **AGENT_FAILED, 503: {"model": ErrorResponse, "description": "Too many episodes."}},
    summary="Start an episode on an image",
)
async def create_episode(body: EpisodeCreate, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    """Start segmenting ``target`` on an opened image, by hand (``agent.kind`` none) or with an agent."""
    started = time.perf_counter()
    image = stored_image(app_state.server, body.image_id)
    source = app_state.sources.get(body.image_id) or _upload_source(body.image_id, image)
    policy, policy_lock, agent = await _agent(app_state, body.agent)
    session = await app_state.session_for(body.image_id, image)
    config = EpisodeConfig(
        max_turns=body.max_turns or app_state.config.max_turns,
        protocol=body.protocol,
        view_longest_side=app_state.config.view_longest_side,
    )
    env = SegmentationEnv(app_state.tool, config)
    sample = dataclasses.replace(source.sample, target=body.target.strip())
    episode = await run_in_threadpool(
        lambda: SharedEpisode(env, sample, session, policy, has_ground_truth=source.has_reference)
    )
    live = LiveEpisode(
        id=_new_id(),
        episode=episode,
        source=source,
        image_id=body.image_id,
        annotator=body.annotator or app_state.config.annotator,
        agent=agent,
        policy_lock=policy_lock,
    )
    try:
        app_state.add_episode(live)
    except RuntimeError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})  # type: ignore[return-value]
    return episode_out(live, started)


@router.get("/episodes/{episode_id}", response_model=EpisodeOut, responses=NOT_FOUND, summary="The episode now")
async def get_episode(episode_id: str, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    return episode_out(_live(app_state, episode_id), time.perf_counter())


@router.post("/episodes/{episode_id}/box", response_model=EpisodeOut, responses={**NOT_FOUND, **CONFLICT},
             summary="A person draws a box (a new box starts a new mask)")
async def person_box(episode_id: str, body: BoxIn, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    x1, y1, x2, y2 = body.box
    return await _run(app_state, episode_id, lambda e: e.person_box(x1, y1, x2, y2))


@router.post("/episodes/{episode_id}/point", response_model=EpisodeOut, responses={**NOT_FOUND, **CONFLICT},
             summary="A person clicks (positive adds, negative removes)")
async def person_point(episode_id: str, body: PointIn, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    x, y = body.point
    return await _run(app_state, episode_id, lambda e: e.person_point(x, y, body.positive))


@router.post("/episodes/{episode_id}/agent", response_model=EpisodeOut,
             responses={**NOT_FOUND, **CONFLICT, **AGENT_FAILED}, summary="The agent takes one turn")
async def agent_turn(episode_id: str, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    live = _live(app_state, episode_id)
    if live.episode.policy is None or live.policy_lock is None:
        raise HTTPException(409, "this episode has no agent; start a new episode with one")
    lock = live.policy_lock

    def turn(episode: SharedEpisode) -> Any:
        with lock:
            return episode.agent_turn()

    return await _run(app_state, episode_id, turn)


@router.put("/episodes/{episode_id}/agent", response_model=EpisodeOut, responses={**NOT_FOUND, **AGENT_FAILED},
            summary="Choose another agent for the next turns")
async def set_agent(episode_id: str, body: AgentSpec, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    """The agent reads the episode so far (a person's turns as if they were its own) at its next turn."""
    live = _live(app_state, episode_id)
    policy, policy_lock, agent = await _agent(app_state, body)
    async with live.lock:
        live.episode.set_policy(policy)
        live.policy_lock, live.agent = policy_lock, agent
    return episode_out(live, time.perf_counter())


@router.post("/episodes/{episode_id}/undo", response_model=EpisodeOut, responses={**NOT_FOUND, **CONFLICT},
             summary="Undo the last turn (or reset)")
async def undo(episode_id: str, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    return await _run(app_state, episode_id, lambda e: e.undo())


@router.post("/episodes/{episode_id}/redo", response_model=EpisodeOut, responses={**NOT_FOUND, **CONFLICT},
             summary="Redo what was undone")
async def redo(episode_id: str, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    return await _run(app_state, episode_id, lambda e: e.redo())


@router.post("/episodes/{episode_id}/reset", response_model=EpisodeOut, responses=NOT_FOUND,
             summary="Clear every turn (undoable)")
async def reset(episode_id: str, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    return await _run(app_state, episode_id, lambda e: e.reset())


@router.post("/episodes/{episode_id}/save", response_model=EpisodeOut, responses=NOT_FOUND,
             summary="Accept the mask: save it and the trajectory record")
async def save(episode_id: str, app_state: AppState = Depends(get_app)) -> EpisodeOut:
    """Ends the episode with a person's stop (unless it has ended), then writes the mask (PNG, or a
    NIfTI label volume on the source grid for a slice) and appends the record to the output folder's
    ``trajectories.jsonl``. Undo reopens the episode; saving again adds a new row."""
    live = _live(app_state, episode_id)

    def work(episode: SharedEpisode) -> None:
        if not episode.done:
            episode.person_stop()
        _save(app_state, live)

    return await _run(app_state, episode_id, work)


@router.get("/episodes/{episode_id}/record", responses=NOT_FOUND, summary="The trajectory record (JSON)")
async def record(episode_id: str, app_state: AppState = Depends(get_app)) -> JSONResponse:
    live = _live(app_state, episode_id)
    data = _annotated(live).model_dump(mode="json")
    return JSONResponse(data, headers={"Content-Disposition": f'attachment; filename="{live.id}.json"'})


@router.get(
    "/episodes/{episode_id}/mask",
    response_class=Response,
    responses={**NOT_FOUND, 200: {"content": {"image/png": {}, "application/gzip": {}}}},
    summary="The current mask: PNG, or NIfTI on the source volume's grid",
)
async def mask_file(
    episode_id: str,
    format: Annotated[str, Query(pattern="^(png|nifti)$", description="png or nifti (slices of volumes)")] = "png",
    app_state: AppState = Depends(get_app),
) -> Response:
    live = _live(app_state, episode_id)
    mask = live.episode.mask
    if format == "nifti":
        source = live.source
        if source.volume is None or source.axis is None or source.index is None:
            raise HTTPException(422, "format nifti needs an episode on a slice of a volume")
        volume, axis, index = source.volume, source.axis, source.index
        data = await run_in_threadpool(lambda: _gzip(volume.mask_image(mask, axis, index).to_bytes()))
        return Response(data, media_type="application/gzip",
                        headers={"Content-Disposition": f'attachment; filename="{live.id}.nii.gz"'})
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise RuntimeError("PNG encoding of the mask failed")
    return Response(png.tobytes(), media_type="image/png",
                    headers={"Content-Disposition": f'attachment; filename="{live.id}.png"'})


@router.delete("/episodes/{episode_id}", status_code=204, responses=NOT_FOUND, summary="Close an episode")
async def delete_episode(episode_id: str, app_state: AppState = Depends(get_app)) -> Response:
    _live(app_state, episode_id)
    app_state.episodes.pop(episode_id, None)
    return Response(status_code=204)


# -- helpers ------------------------------------------------------------------------------------------
def _live(app_state: AppState, episode_id: str) -> LiveEpisode:
    live = app_state.episode(episode_id)
    if live is None:
        raise HTTPException(404, f"episode {episode_id!r} does not exist (closed, expired or never started)")
    return live


async def _run(app_state: AppState, episode_id: str, operation: Callable[[SharedEpisode], Any]) -> EpisodeOut:
    """Run one operation off the event loop, one at a time per episode, errors as HTTP answers."""
    started = time.perf_counter()
    live = _live(app_state, episode_id)
    async with live.lock:
        try:
            await run_in_threadpool(operation, live.episode)
        except InvalidPersonAction as exc:
            raise HTTPException(422, str(exc)) from None
        except (EpisodeClosed, NothingToUndo) as exc:
            raise HTTPException(409, str(exc)) from None
        except PolicyError as exc:
            raise HTTPException(502, f"agent: {exc}") from None
        except ToolError as exc:
            raise HTTPException(422, f"tool: {exc}") from None
    return episode_out(live, started)


async def _agent(app_state: AppState, spec: AgentSpec) -> tuple[Any, Any, dict[str, Any]]:
    """The policy for ``spec`` (built once per configuration), its lock and a description."""
    config = app_state.config
    if spec.kind == "none":
        return None, None, {"kind": "none"}
    if spec.kind == "openai":
        base_url = spec.base_url or config.agent_base_url
        if not base_url:
            raise HTTPException(422, "agent.base_url: give the model server's URL, e.g. http://localhost:8000/v1")
        model = spec.model or config.agent_model
        options: dict[str, Any] = {
            "base_url": base_url, "model": model, "api_key": spec.api_key, "native_tools": spec.native_tools,
            "max_history_images": spec.max_history_images, "temperature": spec.temperature,
        }
        if spec.max_tokens is not None:
            options["max_tokens"] = spec.max_tokens
        description = {"kind": "openai", "base_url": base_url, "model": model}
    else:
        checkpoint = spec.checkpoint or config.agent_checkpoint
        if not checkpoint:
            raise HTTPException(422, "agent.checkpoint: give a checkpoint folder on the server")
        if not Path(checkpoint).expanduser().is_dir():
            raise HTTPException(422, f"agent.checkpoint: {checkpoint} is not a folder on this server")
        options = {"model_path": checkpoint, "device": config.agent_device, "native_tools": spec.native_tools,
                   "max_history_images": spec.max_history_images}
        if spec.max_tokens is not None:
            options["max_new_tokens"] = spec.max_tokens
        description = {"kind": "hf", "checkpoint": checkpoint}
    key = (spec.kind, *sorted((k, str(v)) for k, v in options.items()))
    try:
        policy, lock = await run_in_threadpool(
            app_state.policy, key, lambda: build_policy(spec.kind, **options)
        )
    except PolicyError as exc:
        raise HTTPException(502, f"agent: {exc}") from None
    except (ValueError, OSError) as exc:
        raise HTTPException(422, f"agent: {exc}") from None
    if spec.kind == "openai":  # the served model the policy resolved (the only one, when none was named)
        description["model"] = getattr(policy, "model", description["model"])
    return policy, lock, description


def _open_uploads(uploads: list[tuple[str, bytes]], modality: str | None, max_side: int) -> Volume | Sample:
    """Uploaded bytes -> a volume (NIfTI, DICOM series) or a display-ready 2-D sample."""
    names = [Path(name).name or f"file{i}" for i, (name, _) in enumerate(uploads)]
    lower = [name.lower() for name in names]
    first = uploads[0][1]
    volumes = [name for name, low in zip(names, lower, strict=True) if low.endswith((".nii", ".nii.gz"))]
    if len(uploads) > 1 and volumes:
        raise VolumeOpenError(f"open one NIfTI volume at a time ({', '.join(volumes)} came with {len(uploads) - 1} "
                              "other file(s)); several files are read as the slices of one DICOM series")
    is_volume = bool(volumes)
    is_series = len(uploads) > 1 or lower[0].endswith(".dcm") or first[128:132] == b"DICM"
    if is_volume or is_series:
        with tempfile.TemporaryDirectory(prefix="medseg-app-upload-") as tmp:
            folder = Path(tmp)
            for i, ((_, data), name) in enumerate(zip(uploads, names, strict=True)):
                (folder / (f"{i:05d}_{name}" if len(uploads) > 1 else name)).write_bytes(data)
            try:
                if is_volume:
                    return open_volume(folder / names[0], names[0], modality)
                return open_volume(folder, f"DICOM series ({len(names)} files)", modality)
            except VolumeOpenError as exc:  # the server's temporary folder means nothing to the person
                raise VolumeOpenError(str(exc).replace(str(folder), "the upload")) from None
    limits = ImageLimits(max_side=max_side, max_pixels=max_side * max_side)
    try:
        image = load_image(EncodedImage(first, names[0]), modality, limits=limits)
    except ImageLoadError as exc:
        raise ImageRejected(str(exc)) from None
    h, w = image.shape[:2]
    stem = names[0].split(".")[0] or "upload"
    return Sample(image=image, mask=np.zeros((h, w), dtype=bool), target="", modality=modality or "",
                  dataset="upload", sample_id=_safe_name(stem))


def _store_image(
    app_state: AppState, sample: Sample, *, has_reference: bool = False, source: ImageSource | None = None
) -> OpenedImage:
    key, _ = app_state.server.images.put(sample.image)
    source = source or ImageSource(sample, has_reference=has_reference)
    app_state.remember_source(key, source)
    h, w = sample.image.shape[:2]
    return OpenedImage(
        image_id=key,
        height=h,
        width=w,
        name=sample.sample_id,
        target=sample.target,
        modality=sample.modality,
        has_reference=source.has_reference,
        slice=_slice_ref(source),
        contrast=None if source.contrast is None else ContrastOut(**source.contrast.describe()),
    )


def _upload_source(image_id: str, image: np.ndarray) -> ImageSource:
    """An image uploaded through ``POST /v1/images`` (no library entry, no volume)."""
    sample = Sample(image=image, mask=np.zeros(image.shape[:2], dtype=bool), target="", modality="",
                    dataset="upload", sample_id=image_id[:16])
    return ImageSource(sample)


def _volume_out(app_state: AppState, volume: Volume, target: str) -> OpenedVolume:
    volume_id = app_state.add_volume(volume)
    return OpenedVolume(
        volume_id=volume_id,
        name=volume.name,
        modality=volume.modality,
        shape=list(volume.shape),
        slices={axis: volume.slices(axis) for axis in ("axial", "coronal", "sagittal")},
        spacing_mm=[float(z) for z in volume.zooms],
        contrast=ContrastOut(**volume.default_contrast().describe()),
        target=target,
    )


def _contrast(body: SliceRequest, volume: Volume) -> Contrast:
    if body.window is not None and (body.width is not None or body.level is not None):
        raise ValueError("give either window (a preset) or width and level, not both")
    if body.percentiles is not None and (body.window is not None or body.width is not None):
        raise ValueError("give either a CT window or percentiles, not both")
    if (body.width is None) != (body.level is None):
        raise ValueError("width and level go together: give both")
    if body.window is not None:
        return Contrast(window=body.window)
    if body.width is not None and body.level is not None:
        return Contrast(window=(body.width, body.level))
    if body.percentiles is not None:
        return Contrast(percentiles=(body.percentiles[0], body.percentiles[1]))
    return volume.default_contrast()


def _annotated(live: LiveEpisode) -> Any:
    sample = live.episode.sample
    source = {"dataset": sample.dataset, "sample_id": sample.sample_id, "image_id": live.image_id}
    if live.source.volume is not None:
        source.update(volume=live.source.volume.name, volume_path=live.source.volume.source, axis=live.source.axis,
                      slice_index=live.source.index)
    if live.source.contrast is not None:
        source["contrast"] = live.source.contrast.describe()
    return live.episode.annotated_record(
        {"annotator": live.annotator, "episode_id": live.id, "agent": live.agent, "source": source}
    )


def _save(app_state: AppState, live: LiveEpisode) -> None:
    episode, source = live.episode, live.source
    mask = episode.mask
    volume_mask = None
    if source.volume is not None and source.axis is not None and source.index is not None:
        volume_mask = source.volume.mask_image(mask, source.axis, source.index)
    sample = episode.sample
    key = f"{live.annotator or 'anonymous'}/{sample.dataset}/{sample.sample_id}/{live.id[:8]}"
    saved = app_state.store.save(
        key, sample, _annotated(live), mask, mask_volume=volume_mask, extra={"annotator": live.annotator}
    )
    live.saved.append((saved, "nifti" if volume_mask is not None else "png"))


def episode_out(live: LiveEpisode, started: float) -> EpisodeOut:
    episode = live.episode
    record = episode.record
    turns = [
        TurnOut(
            turn=t.turn,
            actor=t.actor,
            name=None if t.error is not None or t.action is None else t.action.name,
            **t.model_dump(mode="json", include={"action", "action_pixels", "error"}),
            raw_text=t.raw_text,
            reasoning=t.reasoning,
            tool_score=_finite(t.tool_score),
            iou=_finite(t.iou),
            dice=_finite(t.dice),
            policy_seconds=round(t.policy_seconds, 4),
            tool_seconds=round(t.tool_seconds, 4),
        )
        for t in record.turns
    ]
    prompt = episode.prompt
    mask = episode.mask
    h, w = mask.shape
    score = next((t.tool_score for t in reversed(turns) if t.tool_score is not None), None)
    return EpisodeOut(
        episode_id=live.id,
        image_id=live.image_id,
        height=h,
        width=w,
        target=episode.sample.target,
        protocol=record.protocol,
        coordinate_space=record.coordinate_space,
        agent=live.agent,
        annotator=live.annotator,
        done=episode.done,
        stop_reason=record.stop_reason,
        turns=turns,
        prompt=PromptOut(
            box=None if prompt.box is None else [float(v) for v in prompt.box],
            points=[[float(x), float(y)] for x, y in prompt.points],
            labels=[int(v) for v in prompt.labels],
        ),
        mask=Rle(**encode_rle(mask)),
        mask_area=int(np.count_nonzero(mask)),
        score=score if episode.interactions else None,
        interactions=episode.interactions,
        max_turns=episode.env.config.max_turns,
        can_undo=episode.can_undo,
        can_redo=episode.can_redo,
        slice=_slice_ref(live.source),
        saved=[SavedOut(key=s.key, **s.relative(s.store.parent), mask_format=fmt) for s, fmt in live.saved],  # type: ignore[arg-type]
        server_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _slice_ref(source: ImageSource) -> SliceRef | None:
    if source.volume_id is None or source.axis is None or source.index is None:
        return None
    return SliceRef(volume_id=source.volume_id, axis=source.axis, index=source.index)  # type: ignore[arg-type]


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6)


def _safe_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._")
    return cleaned[:80] or "image"


def _new_id() -> str:
    return secrets.token_urlsafe(16)
