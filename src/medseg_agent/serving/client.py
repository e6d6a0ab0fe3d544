"""Clients of ``medseg-agent serve``.

:class:`HttpSegmentationTool` is a :class:`~medseg_agent.tools.base.SegmentationTool` whose model
runs on the server: ``encode`` uploads the image once (or just references it by content hash) and
warms the server's shared embedding; ``decode`` sends the full prompt, previous logits included, to
``POST /v1/predict``. So ``build_tool("http://host:port")`` gives the environment, the evaluator and
the trainers a remote tool without any change to them: :func:`register_http_tool` is this package's
entry point in the ``medseg_agent.tools`` plug-in group (see :mod:`medseg_agent.tools.registry`).

:class:`ToolServerClient` / :class:`RemoteSession` speak the session API (web UIs, RL tool calls).

Every request has a timeout; connection failures are retried with exponential backoff (any request
when nothing was sent; idempotent requests also when the connection broke mid-way); errors carry
the server's own message.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from medseg_agent.io.masks import decode_rle
from medseg_agent.serving.images import image_key, is_image_id
from medseg_agent.serving.schemas import ArrayPayload
from medseg_agent.tools.base import ImageEmbedding, SegmentationTool
from medseg_agent.tools.registry import register_tool
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.images import as_rgb_uint8
from medseg_agent.vocabulary.prompts import Prediction, Prompt

TOKEN_ENV = "MEDSEG_AGENT_TOKEN"
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_BROKEN = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class ServerError(ToolError):
    """A request to the tool server failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ToolServerClient:
    """HTTP transport to one server: base URL, bearer token, timeout, retries, error messages.

    ``token`` defaults to ``$MEDSEG_AGENT_TOKEN``. Thread-safe (one pooled ``httpx.Client``).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_connections: int = 128,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ToolError(f"server URL must start with http:// or https://, got {url!r}")
        if retries < 0 or timeout <= 0:
            raise ToolError(f"retries must be >= 0 and timeout > 0, got retries={retries}, timeout={timeout}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout, limits=limits)

    # -- transport -----------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries; return the response if its status is in ``ok``, else raise ServerError."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                if isinstance(exc, _NOT_SENT) and attempt < self.retries:
                    attempt = self._sleep(attempt)
                    continue
                raise ServerError(
                    f"no answer from the medseg-agent server at {self.url} ({method} {path}) within "
                    f"{self.timeout:g} s; it may be overloaded or stuck (raise timeout=...)"
                ) from exc
            except httpx.TransportError as exc:
                retryable = isinstance(exc, _NOT_SENT) or (idempotent and isinstance(exc, _BROKEN))
                if retryable and attempt < self.retries:
                    attempt = self._sleep(attempt)
                    continue
                raise ServerError(
                    f"cannot reach the medseg-agent server at {self.url} ({method} {path}) after "
                    f"{attempt + 1} attempt(s): {type(exc).__name__}: {exc}. Is `medseg-agent serve` running there?"
                ) from exc
            if response.status_code == 503 and attempt < self.retries:
                attempt = self._sleep(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code in ok:
                return response
            raise self._error(method, path, response)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.parse(method, path, self.request(method, path, **kwargs))

    def parse(self, method: str, path: str, response: httpx.Response) -> Any:
        """The JSON body of an accepted answer; a body that is not JSON (another kind of server behind the
        URL: a model server, a web page) is a ServerError showing it."""
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"{method} {path} at {self.url} answered {response.status_code} with a body that is not JSON "
                f"({response.text[:120]!r}); is {self.url} a medseg-agent tool server (medseg-agent serve)?",
                response.status_code,
            ) from None

    def close(self) -> None:
        self._http.close()

    def _sleep(self, attempt: int, retry_after: str | None = None) -> int:
        delay = self.backoff_s * (2**attempt)
        if retry_after and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))
        return attempt + 1

    def _error(self, method: str, path: str, response: httpx.Response) -> ServerError:
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text[:500]
        status = response.status_code
        if status == 401:
            return ServerError(
                f"the medseg-agent server at {self.url} refused the request (401): {detail}. Pass token=... "
                f"or set ${TOKEN_ENV} to the server's --token.",
                status,
            )
        return ServerError(f"{method} {path} failed with {status}: {detail}", status)

    # -- API -----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The server's state; also the check that the URL is a medseg-agent tool server at all."""
        data = self.json("GET", "/health")
        if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
            raise ServerError(
                f"{self.url} is not a medseg-agent tool server: GET /health answered {str(data)[:120]!r} without "
                "the tool it serves; start one with `medseg-agent serve --tool ...` and pass its URL"
            )
        return data

    def metrics(self) -> str:
        return self.request("GET", "/metrics").text

    def upload(self, image: np.ndarray, encode: bool = False) -> dict[str, Any]:
        """Store ``image`` on the server (lossless PNG); returns its ImageInfo (``image_id``...)."""
        image = as_rgb_uint8(image)
        info = self.json(
            "POST", "/v1/images", files={"file": ("image.png", _png(image), "image/png")}, params={"encode": encode}
        )
        expected = image_key(image)
        if info["image_id"] != expected:
            raise ServerError(f"the server stored the image as {info['image_id']}, expected {expected}")
        return info

    def ensure_image(self, image: np.ndarray, encode: bool = False) -> dict[str, Any]:
        """Reference ``image`` by its content hash; upload it only if the server does not have it."""
        image = as_rgb_uint8(image)
        key = image_key(image)
        path = f"/v1/images/{key}/encode" if encode else f"/v1/images/{key}"
        response = self.request("POST" if encode else "GET", path, ok=(200, 404))
        if response.status_code == 404:
            return self.upload(image, encode=encode)
        return response.json()

    def create_session(
        self,
        image: np.ndarray | None = None,
        *,
        image_id: str | None = None,
        coordinate_space: str = "pixel",
        view_longest_side: int | None = None,
        prefetch: bool = True,
    ) -> RemoteSession:
        """A session on ``image`` (uploaded if the server lacks it) or on an uploaded ``image_id``."""
        if (image is None) == (image_id is None):
            raise ToolError("create_session needs exactly one of image or image_id")
        if image_id is not None and not is_image_id(image_id):
            raise ToolError(f"image_id must be the 64 hex digits that upload() returned, got {image_id!r}")
        if image is not None:
            image_id = self.ensure_image(image)["image_id"]
        body = {"image_id": image_id, "coordinate_space": coordinate_space, "prefetch": prefetch}
        if view_longest_side is not None:
            body["view_longest_side"] = view_longest_side
        state = self.json("POST", "/v1/sessions", json=body, ok=(201,))
        return RemoteSession(self, state)


class RemoteSession:
    """One server-side session. Methods return the server's session state (a dict); ``mask(state)``
    decodes its mask."""

    def __init__(self, client: ToolServerClient, state: dict[str, Any]) -> None:
        self.client = client
        self.id: str = state["session_id"]
        self.image_id: str = state["image_id"]
        self.state = state

    def add_box(self, bbox_2d: list[float]) -> dict[str, Any]:
        return self._act("box", {"bbox_2d": list(bbox_2d)})

    def add_point(self, point_2d: list[float], point_type: str = "positive") -> dict[str, Any]:
        return self._act("point", {"point_2d": list(point_2d), "point_type": point_type})

    def undo(self) -> dict[str, Any]:
        return self._act("undo", None)

    def reset(self) -> dict[str, Any]:
        return self._act("reset", None)

    def status(self) -> dict[str, Any]:
        self.state = self.client.json("GET", f"/v1/sessions/{self.id}")
        return self.state

    def mask(self, state: dict[str, Any] | None = None) -> np.ndarray:
        """The mask in ``state`` (an action's answer), or the server's current mask."""
        if state is not None and state.get("mask") is not None:
            return decode_rle(state["mask"])
        return decode_rle(self.client.json("GET", f"/v1/sessions/{self.id}/mask"))

    def close(self) -> None:
        self.client.request("DELETE", f"/v1/sessions/{self.id}", ok=(204, 404))

    def _act(self, action: str, body: dict[str, Any] | None) -> dict[str, Any]:
        # Not idempotent (a repeated click would be added twice): retried only if nothing was sent.
        self.state = self.client.json("POST", f"/v1/sessions/{self.id}/{action}", json=body, idempotent=False)
        return self.state


@dataclass
class RemoteImage:
    """What :meth:`HttpSegmentationTool.encode` returns as embedding data: the server's handle of
    the image, and the pixels to upload again if the server lost it (restart, eviction)."""

    image_id: str
    image: np.ndarray


class HttpSegmentationTool(SegmentationTool):
    """The tool interface over HTTP (``--tool http://host:port``).

    ``prefetch``: ``encode`` waits for the server's embedding (so encode cost shows up where it
    does for a local tool); ``False`` only uploads and lets the first prediction pay for it.
    """

    supports_batch_decode = True

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        prefetch: bool = True,
        **unexpected: Any,
    ) -> None:
        super().__init__()
        if unexpected:
            raise ToolError(
                f"option(s) {', '.join(sorted(unexpected))} do not apply to a tool server URL; the model is "
                "chosen when the server starts (medseg-agent serve --tool ...)"
            )
        self.client = ToolServerClient(url, token=token, timeout=timeout, retries=retries, backoff_s=backoff_s)
        self.url = self.client.url
        self.prefetch = prefetch
        health = self.client.health()
        self.remote_tool: str = health["tool"]
        self.name = self.remote_tool

    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        info = self.client.ensure_image(image, encode=self.prefetch)
        return ImageEmbedding(
            data=RemoteImage(info["image_id"], image), image_size=image.shape[:2], nbytes=int(image.nbytes)
        )

    def _decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction:
        return self._predict(embedding, [prompt])[0]

    def decode_batch(self, embedding: ImageEmbedding, prompts: list[Prompt]) -> list[Prediction]:
        """All prompts in one request; the server batches them on the model."""
        for i, prompt in enumerate(prompts):
            if prompt.is_empty:
                raise ToolError(f"prompt {i}: a prediction needs a box or at least one point")
        if not prompts:
            return []
        start = time.perf_counter()
        predictions = self._predict(embedding, prompts)
        with self._stats_lock:
            self.decode_count += len(prompts)
            self.decode_seconds += time.perf_counter() - start
        return predictions

    def server_stats(self) -> dict[str, Any]:
        """The server's /health answer (cache hits, encodes, sessions...)."""
        return self.client.health()

    def close(self) -> None:
        self.client.close()

    def _predict(self, embedding: ImageEmbedding, prompts: list[Prompt]) -> list[Prediction]:
        remote = embedding.data
        if not isinstance(remote, RemoteImage):
            raise ToolError(f"{self.url} cannot decode an embedding made by another tool ({type(remote).__name__})")
        body = {"image_id": remote.image_id, "prompts": [_prompt_json(p) for p in prompts], "return_logits": True}
        response = self.client.request("POST", "/v1/predict", json=body, ok=(200, 404))
        if response.status_code == 404:  # the server restarted or evicted the image: upload again
            self.client.upload(remote.image)
            response = self.client.request("POST", "/v1/predict", json=body)
        data = self.client.parse("POST", "/v1/predict", response)
        predictions = data.get("predictions") if isinstance(data, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(prompts):
            raise ServerError(
                f"POST /v1/predict at {self.url} answered {str(data)[:120]!r}, not {len(prompts)} prediction(s)"
            )
        return [_prediction(p) for p in predictions]


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ToolError("could not encode the image as PNG for upload")
    return data.tobytes()


def _prompt_json(prompt: Prompt) -> dict[str, Any]:
    body: dict[str, Any] = {
        "box": None if prompt.box is None else [float(v) for v in prompt.box],
        "points": [[float(x), float(y)] for x, y in prompt.points],
        "labels": [int(v) for v in prompt.labels],
    }
    if prompt.mask_input is not None:
        body["mask_input"] = ArrayPayload.from_numpy(np.asarray(prompt.mask_input)).model_dump()
    return body


def _prediction(data: dict[str, Any]) -> Prediction:
    logits = None
    if data.get("logits") is not None:
        logits = ArrayPayload(**data["logits"]).to_numpy("logits", finite=False)
    score = data.get("score")
    return Prediction(mask=decode_rle(data["mask"]), logits=logits, score=0.0 if score is None else float(score))


def build_http_tool(
    *, url: str, checkpoint: str | Path | None = None, device: str = "cpu", **options: Any
) -> HttpSegmentationTool:
    """Factory of ``http://`` / ``https://`` tool specs. The server chose its model and device when it
    started, so a local ``checkpoint`` is refused rather than silently ignored; ``device`` is ignored."""
    if checkpoint is not None:
        raise ToolError(
            f"--checkpoint {checkpoint} does not apply to a tool server URL ({url}); the server loads its "
            "own checkpoint (medseg-agent serve --checkpoint ...)"
        )
    return HttpSegmentationTool(url, **options)


def register_http_tool() -> None:
    """Entry point (group ``medseg_agent.tools``): tool-server URLs as tool specs."""
    register_tool("http://", build_http_tool)
    register_tool("https://", build_http_tool)
