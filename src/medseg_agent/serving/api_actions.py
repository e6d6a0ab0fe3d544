"""The two action routes, ``add_bbox`` and ``add_point``, answered without FastAPI's per-request
machinery.

In a GRPO rollout nearly every request the server gets is one of these two. For each request
FastAPI matches its route table, resolves the dependencies, parses the content type with the
``email`` package, validates the parameters and serialises through the response model: about half a
millisecond of CPU, more than everything else the server does for an action. :class:`LeanActionRoutes`
sits inside the token, body-size and metrics middleware, recognises ``POST
/v1/sessions/{session_id}/box`` and ``.../point`` by their path and answers them itself, with the
same pieces the FastAPI routes use: the same pydantic models validate the body (same errors, same
422 answer), :func:`~medseg_agent.serving.api_sessions.apply_action` applies the action and
:func:`~medseg_agent.serving.api_sessions.session_answer` builds the answer, serialised by
pydantic-core. The FastAPI routes stay declared: they are the OpenAPI documentation, and they serve
when the lean layer is off (``ServerConfig(lean_actions=False)``); the tests check that both give
the same answers. Every other request passes through untouched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_json
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from medseg_agent.serving import api_sessions
from medseg_agent.serving.api_sessions import apply_action, session_answer
from medseg_agent.serving.schemas import BoxAction, PointAction, validation_error_body
from medseg_agent.serving.sessions import SessionNotFound
from medseg_agent.serving.state import ServerState
from medseg_agent.vocabulary.actions import ADD_BBOX, ADD_POINT
from medseg_agent.vocabulary.errors import ModelUnavailable

PREFIX = "/v1/sessions/"
#: path suffix -> (action name, body model, route template)
ACTIONS: dict[str, tuple[str, type[BaseModel], str]] = {
    "/box": (ADD_BBOX, BoxAction, "/v1/sessions/{session_id}/box"),
    "/point": (ADD_POINT, PointAction, "/v1/sessions/{session_id}/point"),
}
_BOOL = TypeAdapter(bool)
_JSON_HEADERS = [(b"content-type", b"application/json")]


class LeanActionRoutes:
    """ASGI middleware answering the two action routes; ``routes`` are the documented FastAPI
    routes by template, put in ``scope["route"]`` so that metrics label requests exactly as before."""

    def __init__(self, app: ASGIApp, state: ServerState, routes: dict[str, BaseRoute]) -> None:
        missing = {template for _, _, template in ACTIONS.values()} - set(routes)
        if missing:
            raise ValueError(f"the app declares no route for {', '.join(sorted(missing))}")
        self.app = app
        self.state = state
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = _match(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if matched is None:
            await self.app(scope, receive, send)
            return
        session_id, (name, model, template) = matched
        scope["route"] = self.routes[template]
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        status, answer = await self._answer(scope, session_id, name, model, body)
        payload = to_json(answer)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, scope: Scope, session_id: str, name: str, model: type[BaseModel],
                      body: bytes) -> tuple[int, dict[str, Any]]:
        include_mask, errors = _include_mask(scope["query_string"])
        arguments, body_errors = _validate_body(body, _header(scope, b"content-type"), model)
        if errors or body_errors:
            return 422, validation_error_body([*errors, *body_errors])
        try:
            session = await apply_action(self.state, session_id, name, arguments)
        except SessionNotFound as exc:
            return 404, {"detail": exc.detail}
        except HTTPException as exc:
            return exc.status_code, {"detail": exc.detail}
        except ModelUnavailable as exc:
            return 503, {"detail": str(exc)}
        return 200, session_answer(self.state, session, include_mask)


def action_routes() -> dict[str, BaseRoute]:
    """The documented FastAPI routes of the two actions, by template."""
    templates = {template for _, _, template in ACTIONS.values()}
    return {route.path: route for route in api_sessions.router.routes
            if isinstance(route, APIRoute) and route.path in templates}


def _match(scope: Scope) -> tuple[str, tuple[str, type[BaseModel], str]] | None:
    """(session id, action) when the path is one of the two action routes."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if not path.startswith(PREFIX):
        return None
    for suffix, action in ACTIONS.items():
        if path.endswith(suffix):
            session_id = path[len(PREFIX) : -len(suffix)]
            return (session_id, action) if session_id and "/" not in session_id else None
    return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _include_mask(query: bytes) -> tuple[bool, list[dict[str, Any]]]:
    """The ``include_mask`` query parameter (default true; FastAPI's reading of booleans)."""
    values = [v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k == "include_mask"] \
        if query else []
    if not values:
        return True, []
    try:
        return _BOOL.validate_python(values[-1]), []
    except ValidationError as exc:
        return True, [{**err, "loc": ("query", "include_mask")} for err in exc.errors()]


def _validate_body(body: bytes, content_type: bytes | None,
                   model: type[BaseModel]) -> tuple[dict[str, Any], Sequence[Any]]:
    """The body validated by ``model`` as FastAPI does it: JSON only when the content type says so,
    errors located under ``body``."""
    if not body:
        return {}, [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
    data: Any = body
    if content_type is not None and _is_json(content_type):
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            return {}, [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                         "input": {}, "ctx": {"error": exc.msg}}]
        except UnicodeDecodeError:
            return {}, [{"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error",
                         "input": {}, "ctx": {"error": "the body is not UTF-8 text"}}]
    try:
        return model.model_validate(data).model_dump(), []
    except ValidationError as exc:
        return {}, [{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]


def _is_json(content_type: bytes) -> bool:
    kind = content_type.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None
