"""The segmentation tool server: FastAPI app factory.

``create_app(tool, config)`` wires the pieces: an embedding cache shared by all sessions
(:mod:`.cache`), one model thread with decode batching (:mod:`.batching`), sessions with undo and
idle expiry (:mod:`.sessions`), limits (:mod:`.limits`), Prometheus metrics (:mod:`.metrics`).
Errors are JSON ``{"detail": "..."}`` naming the field; malformed input never gets a 500.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

import medseg_agent
from medseg_agent.serving import api_images, api_sessions
from medseg_agent.serving.api_actions import LeanActionRoutes, action_routes
from medseg_agent.serving.config import ServerConfig
from medseg_agent.serving.images import ImageRejected
from medseg_agent.serving.limits import BodyLimitMiddleware, TokenMiddleware
from medseg_agent.serving.metrics import CONTENT_TYPE, Metrics, RequestMetricsMiddleware
from medseg_agent.serving.schemas import validation_error_body
from medseg_agent.serving.sessions import SessionLimit, SessionNotFound
from medseg_agent.serving.state import ServerState, get_state, require_token
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.errors import ModelUnavailable

API_DESCRIPTION = """\
Promptable medical image segmentation for agents and RL rollouts.

* Upload an image once (`POST /v1/images`); it is addressed by its SHA-256 content hash.
* Its embedding is computed once and shared by every session and prediction on it.
* Sessions (`/v1/sessions`) take the agent's tool calls (`add_bbox`, `add_point`) verbatim.
* `POST /v1/predict` decodes full prompts (what `--tool http://host:port` uses).

Send `Authorization: Bearer <token>` when the server was started with `--token`.
"""


class Health(BaseModel):
    status: str
    tool: str
    version: str
    uptime_s: float
    #: The event loop's package (``uvloop``, or ``asyncio`` where uvloop is not installed).
    event_loop: str
    sessions: int
    queue_depth: int
    cache: dict[str, Any]
    model: dict[str, Any]
    tool_counters: dict[str, float]
    limits: dict[str, Any]


def create_app(tool: SegmentationTool, config: ServerConfig | None = None, *, owns_tool: bool = False) -> FastAPI:
    """A ready-to-serve app for ``tool`` (run it with uvicorn, see :mod:`.server`).

    ``owns_tool``: close the tool when the server shuts down (``medseg-agent serve`` builds its tool
    for the server alone). It must happen there: on SIGTERM uvicorn shuts down, then raises the signal
    again, which ends the process without its exit handlers, so a model process would be left to
    notice the closed pipe and its shared memory to the resource tracker.
    """
    config = config or ServerConfig()
    state = ServerState.build(tool, config)
    metrics = Metrics()
    metrics.watch(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.worker.start()
        sweeper = asyncio.create_task(state.sweep_sessions(), name="medseg-session-sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await state.worker.stop()
            state.sessions.clear()
            if owns_tool:
                await asyncio.to_thread(tool.close)

    app = FastAPI(
        title="medseg-agent segmentation tool server",
        version=medseg_agent.__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        **_telemetry_options(config.opentelemetry),
    )
    app.state.server = state
    app.state.metrics = metrics
    _add_error_handlers(app)
    app.include_router(api_images.router)
    app.include_router(api_sessions.router)

    @app.get("/health", response_model=Health, tags=["operations"], summary="Liveness and load (no token)")
    async def health(state: ServerState = Depends(get_state)) -> Health:
        state.tool.check_available()
        cache = state.cache.stats()
        work = state.worker.stats
        return Health(
            status="ok",
            tool=state.tool.name,
            version=app.version,
            uptime_s=round(time.monotonic() - state.started, 3),
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
            sessions=len(state.sessions),
            queue_depth=state.worker.queue_depth,
            cache={
                "entries": cache.entries,
                "bytes": cache.bytes,
                "max_bytes": cache.max_bytes,
                "hits": cache.hits,
                "misses": cache.misses,
                "hit_rate": round(cache.hit_rate, 4),
                "evictions": cache.evictions,
            },
            model={
                "encodes": work.encodes,
                "encode_seconds": round(work.encode_seconds, 3),
                "decode_batches": work.decode_batches,
                "decoded_prompts": work.decoded_prompts,
                "decode_seconds": round(work.decode_seconds, 3),
                "largest_batch": work.largest_batch,
                "most_images_in_a_batch": work.images_per_batch_max,
            },
            tool_counters=state.tool.stats(),
            limits={
                "max_body_bytes": config.max_body_bytes,
                "max_image_side": config.max_image_side,
                "session_ttl_s": config.session_ttl_s,
                "max_sessions": config.max_sessions,
                "max_points": config.max_points,
                "max_prompts_per_request": config.max_prompts_per_request,
                "token_required": config.token is not None,
            },
        )

    @app.get(
        "/metrics",
        dependencies=[Depends(require_token)],
        response_class=Response,
        tags=["operations"],
        summary="Prometheus metrics",
        responses={200: {"content": {CONTENT_TYPE: {}}}, 401: {"description": "Missing or wrong token."}},
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # Added last = runs first: metrics see every answer, the token is checked before the body is read,
    # and the two action routes are answered inside all three.
    if config.lean_actions:
        app.add_middleware(LeanActionRoutes, state=state, routes=action_routes())
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(TokenMiddleware, token=config.token)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app


def _telemetry_options(enabled: bool) -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (FastAPI >= 0.162) looks for configured OpenTelemetry providers
    on every request, about 45 us of CPU here even when none is configured; the server's metrics are
    Prometheus (``/metrics``), so it is off unless ``ServerConfig.opentelemetry`` asks for it."""
    if enabled or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # the framework could not parse the body (e.g. broken multipart)
            return JSONResponse({"detail": f"body: {exc.detail}"}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(SessionNotFound)
    async def session_not_found(request: Request, exc: SessionNotFound) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=404)

    @app.exception_handler(SessionLimit)
    async def session_limit(request: Request, exc: SessionLimit) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(ModelUnavailable)
    async def model_unavailable(request: Request, exc: ModelUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(ImageRejected)
    async def image_rejected(request: Request, exc: ImageRejected) -> JSONResponse:
        return JSONResponse({"detail": f"image: {exc}"}, status_code=422)
