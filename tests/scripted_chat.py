"""A real OpenAI-compatible chat server (FastAPI + uvicorn on 127.0.0.1) answering from a script,
shared by the policy tests and the annotation app's tests.

Each script step is a dict: ``{"content": str}``, ``{"tool_calls": [(name, arguments)]}``,
``{"status": 500}`` (an error response, retry hinted after 10 ms), ``{"body": ...}`` (answered as it
is: JSON, or a ``Response`` such as a proxy's HTML page), with an optional ``"delay"`` in seconds.
``server.models_body``, when set, is answered to ``GET /v1/models`` instead of the model list. Every
request body is kept in ``server.requests`` for assertions.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

MODEL = "tiny-agent"


class ScriptedServer:
    def __init__(self, models: tuple[str, ...] = (MODEL,)) -> None:
        self.models = models
        self.model = models[0]
        self.script: deque[dict[str, Any]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.models_body: Any = None
        self.app = FastAPI()
        self.app.get("/v1/models")(self._models)
        self.app.post("/v1/chat/completions")(self._chat)

    async def _models(self) -> Any:
        if self.models_body is not None:
            return _as_response(self.models_body)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in self.models]
        return {"object": "list", "data": data}

    async def _chat(self, request: Request) -> Any:
        body = await request.json()
        self.requests.append(body)
        if body.get("model") not in self.models:
            message = f"The model `{body.get('model')}` does not exist."
            return JSONResponse({"error": {"message": message, "type": "NotFoundError", "code": 404}}, 404)
        step = self.script.popleft() if self.script else {"content": ""}
        await asyncio.sleep(step.get("delay", 0.0))
        if "status" in step:
            error = {"error": {"message": "scripted failure", "type": "InternalServerError"}}
            return JSONResponse(error, step["status"], headers={"retry-after-ms": "10"})
        if "body" in step:
            return _as_response(step["body"])
        message: dict[str, Any] = {"role": "assistant", "content": step.get("content")}
        if "reasoning_content" in step:
            message["reasoning_content"] = step["reasoning_content"]
        calls = step.get("tool_calls") or []
        if calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
                }
                for i, (name, args) in enumerate(calls)
            ]
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    def reply(self, *steps: dict[str, Any]) -> None:
        self.script.extend(steps)


def _as_response(body: Any) -> Response:
    return body if isinstance(body, Response) else JSONResponse(body)


@contextmanager
def scripted_chat_server() -> Iterator[ScriptedServer]:
    """Serve a :class:`ScriptedServer` on a free local port; ``server.base_url`` ends in ``/v1``."""
    server = ScriptedServer()
    config = uvicorn.Config(server.app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not runner.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the scripted chat server did not start")
        time.sleep(0.02)
    port = runner.servers[0].sockets[0].getsockname()[1]
    server.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield server
    finally:
        runner.should_exit = True
        thread.join(timeout=10)
