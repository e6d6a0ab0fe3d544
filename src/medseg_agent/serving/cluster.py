"""Several model replicas behind one endpoint, on Ray Serve, with affinity by image hash.

Every request about one image (its upload, its sessions, its predictions) goes to the same replica,
so each image is decoded and encoded once cluster-wide and its sessions live where its embedding
is. Ray Serve does the serving: the HTTP proxy on every node, replica placement (one per GPU with
``gpus_per_replica=1``), health checks and restarts. This module adds three small pieces:

* :class:`ClusterIngress`, the HTTP entry: it reads the routing key of a request (the image id, from
  the path, the session id, the JSON body, or by hashing and if needed decoding an upload) and
  forwards the request unchanged to a replica with that key;
* :class:`ImageAffinityRouter`, a Ray Serve request router: rendezvous hashing of the key over the
  running replicas (stable when replicas come and go: only the images of a lost replica move);
* :class:`ToolReplica`, one ``medseg-agent serve`` app (:func:`medseg_agent.serving.app.create_app`)
  with its own model, run in-process for each forwarded request.

Session ids start with 16 hex digits of their image id (:mod:`.sessions`), which is what lets the
ingress route ``/v1/sessions/{id}/...`` without any shared table. ``GET /health`` at the ingress
sums every replica's counters and lists each replica's own answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import secrets
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from medseg_agent.serving.config import ServerConfig
from medseg_agent.serving.images import ImageRejected, image_key, is_image_id, upload_digest
from medseg_agent.tools.spec import ToolSpec

log = logging.getLogger(__name__)

ROUTE_KEY_LENGTH = 16  # hex digits of the image id that route a request (and prefix session ids)
REPLICA_HEADER = "x-medseg-replica"  # which replica answered (every forwarded answer carries it)
IMAGE_HEADER = "x-medseg-image-id"  # optional: clients that know the image id may send it
_REPLICA_KEY = "replica:"  # routing key that addresses the i-th replica (cluster health)
_JSON_IMAGE_ID = re.compile(rb'"image_id"\s*:\s*"([0-9a-f]{64})"')
_JSON_IMAGE_B64 = re.compile(rb'"image_base64"\s*:\s*"([A-Za-z0-9+/=\s]*)"')
_SESSION_PATH = re.compile(r"^/v1/sessions/([0-9a-f]{16})[^/]*")
_IMAGE_PATH = re.compile(r"^/v1/images/([0-9a-f]{64})(/|$)")


@dataclass(frozen=True)
class ClusterSpec:
    """What every replica builds, and how many there are."""

    tool: ToolSpec
    config: ServerConfig = field(default_factory=ServerConfig)
    replicas: int = 2
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    #: each replica runs its model in a process of its own (:class:`~medseg_agent.tools.process.ProcessTool`)
    model_process: bool = False


# -- routing keys ---------------------------------------------------------------------------------
def route_key_of_image(key: str) -> str:
    return key[:ROUTE_KEY_LENGTH]


def route_key_of_path(path: str) -> str | None:
    """The key a request path carries (an image id, or a session id's image prefix), if any."""
    match = _IMAGE_PATH.match(path)
    if match:
        return route_key_of_image(match.group(1))
    match = _SESSION_PATH.match(path)
    if match and path != "/v1/sessions":
        return match.group(1)
    return None


def route_key_of_json(body: bytes) -> tuple[str | None, str | None]:
    """(key from an ``image_id`` field, base64 text of an ``image_base64`` field) of a JSON body,
    found without parsing it (the replica validates it properly)."""
    match = _JSON_IMAGE_ID.search(body)
    if match:
        return route_key_of_image(match.group(1).decode()), None
    inline = _JSON_IMAGE_B64.search(body)
    return None, (inline.group(1).decode("ascii") if inline else None)


def rendezvous_rank(key: str, replica_ids: Sequence[str]) -> list[int]:
    """Replica indices by preference for ``key`` (highest-random-weight hashing): each key gets a
    stable favourite, and removing a replica moves only the keys it was the favourite of."""
    def weight(index: int) -> bytes:
        return hashlib.blake2b(f"{key}|{replica_ids[index]}".encode(), digest_size=8).digest()

    return sorted(range(len(replica_ids)), key=weight, reverse=True)


# -- the request router (runs inside Ray Serve's handles) ------------------------------------------
def _router_base() -> type:
    from ray.serve.request_router import RequestRouter

    return RequestRouter


class ImageAffinityRouter(_router_base()):  # type: ignore[misc]
    """Ray Serve request router: a request whose routing key (the first argument of
    :meth:`ToolReplica.forward`) is an image routing key
    goes to that key's replica only (waiting while it is busy, never spilling to another one, since
    the image's sessions live there); ``replica:<i>`` addresses the i-th replica (by id); requests
    without a key go to the less loaded of two random replicas."""

    async def choose_replicas(self, candidate_replicas: list[Any], pending_request: Any = None) -> list[list[Any]]:
        if not candidate_replicas:
            return []
        key = _request_key(pending_request)
        if not key:
            return [random.sample(candidate_replicas, k=min(2, len(candidate_replicas)))]
        ordered = sorted(candidate_replicas, key=lambda r: r.replica_id.unique_id)
        if key.startswith(_REPLICA_KEY):
            return [[ordered[int(key[len(_REPLICA_KEY):]) % len(ordered)]]]
        ranks = rendezvous_rank(key, [r.replica_id.unique_id for r in ordered])
        return [[ordered[ranks[0]]]]


def _request_key(pending_request: Any) -> str:
    """The routing key :meth:`ClusterIngress.forward` passes as the first argument of ``forward``."""
    if pending_request is None or not pending_request.args:
        return ""
    key = pending_request.args[0]
    return key if isinstance(key, str) else ""


# -- in-process ASGI call ----------------------------------------------------------------------------
async def call_asgi(app: Any, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
                    body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run one HTTP request through an ASGI app in this process; (status, headers, body)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 0), "server": ("medseg-replica", 80),
    }
    answered = asyncio.Event()
    delivered = False
    status, out_headers, chunks = 500, [], []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()  # the client never goes away before the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status, out_headers = int(message["status"]), list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    answered.set()
    return status, out_headers, b"".join(chunks)


# -- deployments ------------------------------------------------------------------------------------
class ToolReplica:
    """One model and one server app; requests arrive already routed, as (method, path, ...)."""

    def __init__(self, spec: ClusterSpec) -> None:
        from medseg_agent.serving.app import create_app
        from medseg_agent.tools.process import ProcessTool

        self.tool = ProcessTool(spec.tool) if spec.model_process else spec.tool.build()
        self.app = create_app(self.tool, spec.config)
        self.replica_id = _replica_id()
        self._lifespan = self.app.router.lifespan_context(self.app)
        self._started: asyncio.Task[Any] | None = None

    def check_health(self) -> None:
        """Ray Serve's periodic health check: a replica whose model process died raises here, and
        Ray Serve replaces it (a new replica, a new model process) instead of answering 503 forever."""
        self.tool.check_available()

    async def forward(self, route: str, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One request, already routed by ``route`` (its key; read by :class:`ImageAffinityRouter`)."""
        if self._started is None:  # the app's lifespan (model worker, session sweeper) in this loop
            self._started = asyncio.ensure_future(self._lifespan.__aenter__())
        await asyncio.shield(self._started)
        status, out_headers, content = await call_asgi(self.app, method, path, query, headers, body)
        return status, [*out_headers, (REPLICA_HEADER.encode(), self.replica_id.encode())], content


class ClusterIngress:
    """The HTTP entry of the cluster: checks the token and the body size, finds the routing key,
    forwards to the key's replica. Keeps a bounded map of upload digests to image ids, so a known
    upload is routed without decoding it again here."""

    def __init__(self, spec: ClusterSpec, replicas: Any) -> None:
        self.spec = spec
        self.replicas = replicas
        self.token = spec.config.token
        self._uploads: OrderedDict[str, str] = OrderedDict()

    async def __call__(self, request: Request) -> Response:
        config = self.spec.config
        if self.token is not None and request.url.path.startswith(("/v1", "/metrics")):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return JSONResponse({"detail": "missing or wrong token: send 'Authorization: Bearer <token>' with "
                                               "the server's --token"}, 401, headers={"WWW-Authenticate": "Bearer"})
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > config.max_body_bytes:
            return JSONResponse({"detail": f"request body too large: {declared} bytes; this server accepts at most "
                                           f"{config.max_body_bytes} bytes"}, 413)
        body = await request.body()
        if len(body) > config.max_body_bytes:
            return JSONResponse({"detail": f"request body too large; this server accepts at most "
                                           f"{config.max_body_bytes} bytes"}, 413)
        path = request.url.path
        if request.method == "GET" and path == "/health":
            return JSONResponse(await self.health())
        key = await self.route_key(request, body)
        headers = [(k.lower(), v) for k, v in request.headers.raw if k.lower() != b"host"]
        query = request.url.query.encode()
        if path == "/metrics":  # one replica's metrics: ?replica=i
            index = request.query_params.get("replica", "0")
            key = f"{_REPLICA_KEY}{int(index) if index.isdigit() else 0}"
        status, out_headers, content = await self.replicas.forward.remote(
            key or "", request.method, path, query, headers, body)
        response = Response(content=content, status_code=status)
        response.raw_headers = [(k, v) for k, v in out_headers if k.lower() != b"content-length"]
        response.headers["content-length"] = str(len(content))
        return response

    async def route_key(self, request: Request, body: bytes) -> str | None:
        given = request.headers.get(IMAGE_HEADER)
        if given and is_image_id(given):
            return route_key_of_image(given)
        key = route_key_of_path(request.url.path)
        if key is not None or request.method != "POST":
            return key
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            key, inline = route_key_of_json(body)
            return key if inline is None else await self._upload_key(inline)
        if content_type.startswith("multipart/form-data") and request.url.path == "/v1/images":
            form = await request.form()
            upload = form.get("file")
            if upload is not None and hasattr(upload, "read"):
                return await self._upload_key(await upload.read())
        return None

    async def _upload_key(self, data: bytes | str) -> str | None:
        """The routing key of an uploaded image: from the digest of its bytes if seen, else decoded
        here once (the replica validates it again and answers any error)."""
        digest = await run_in_threadpool(upload_digest, data)
        known = self._uploads.get(digest)
        if known is not None:
            self._uploads.move_to_end(digest)
            return known
        try:
            key = await run_in_threadpool(_decode_to_key, data, self.spec.config.max_image_side)
        except (ImageRejected, ValueError):
            return None  # routed anywhere; the replica answers the 422
        self._uploads[digest] = key
        while len(self._uploads) > 65536:
            self._uploads.popitem(last=False)
        return key

    async def health(self) -> dict[str, Any]:
        """Every replica's /health, and the counters summed over the cluster."""
        # One after the other: calls made concurrently from one request share Ray Serve's internal
        # request id, which its router uses to match a routed call to its caller (Ray 2.60).
        answers = [await self.replicas.forward.remote(f"{_REPLICA_KEY}{i}", "GET", "/health", b"", [], b"")
                   for i in range(self.spec.replicas)]
        replicas = []
        for status, headers, content in answers:
            if status != 200:
                continue
            health = json.loads(content)
            health["replica"] = dict(headers).get(REPLICA_HEADER.encode(), b"").decode()
            replicas.append(health)
        if not replicas:
            return {"status": "unavailable", "replicas": []}
        total = {"status": "ok", "tool": replicas[0]["tool"], "version": replicas[0]["version"],
                 "replica_count": len(replicas), "sessions": 0, "queue_depth": 0, "cache": {}, "model": {},
                 "limits": replicas[0]["limits"], "replicas": replicas}
        for health in replicas:
            total["sessions"] += health["sessions"]
            total["queue_depth"] += health["queue_depth"]
            for section in ("cache", "model"):
                for name, value in health[section].items():
                    if name in ("hit_rate", "max_bytes"):
                        continue
                    merged = total[section].get(name, 0)
                    peak = name.startswith(("largest", "most"))
                    total[section][name] = max(merged, value) if peak else merged + value
        hits, misses = total["cache"].get("hits", 0), total["cache"].get("misses", 0)
        total["cache"]["hit_rate"] = round(hits / (hits + misses), 4) if hits + misses else 0.0
        return total


def _decode_to_key(data: bytes | str, max_side: int) -> str:
    from medseg_agent.serving.api_images import decode_upload

    raw = data
    if isinstance(data, str):
        import base64

        raw = base64.b64decode(data, validate=True)
    return route_key_of_image(image_key(decode_upload(raw, max_side)))


def _replica_id() -> str:
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return serve.get_replica_context().replica_id.unique_id
    except RayServeException:  # not inside a replica (tests building the class directly)
        return "local"


# -- running it ---------------------------------------------------------------------------------------
def build_application(spec: ClusterSpec) -> Any:
    """The Ray Serve application: the ingress in front of ``spec.replicas`` tool replicas."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    replica = serve.deployment(
        ToolReplica,
        name="medseg-tool",
        num_replicas=spec.replicas,
        max_ongoing_requests=max(spec.config.max_sessions, 64),  # queueing happens in the app's batcher
        ray_actor_options={"num_cpus": spec.cpus_per_replica, "num_gpus": spec.gpus_per_replica},
        request_router_config=RequestRouterConfig(
            request_router_class="medseg_agent.serving.cluster:ImageAffinityRouter"),
    )
    ingress = serve.deployment(ClusterIngress, name="medseg-ingress", max_ongoing_requests=4096,
                               ray_actor_options={"num_cpus": 0})
    return ingress.bind(spec, replica.bind(spec))


#: Ray Serve's setting for how long an HTTP proxy may take to report ready, and ours (Ray's: 5 s)
PROXY_READY_TIMEOUT = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
PROXY_READY_TIMEOUT_S = "60"


def run_cluster(spec: ClusterSpec, host: str = "127.0.0.1", port: int = 8265, ray_address: str | None = None,
                log_level: str = "warning", blocking: bool = True) -> None:
    """Start (or join, with ``ray_address``) a Ray cluster and serve the application on
    ``host:port`` of every node, until interrupted."""
    import ray
    from ray import serve

    paths = [p for p in sys.path if p and Path(p).is_dir() and "site-packages" not in p]
    # Ray Serve gives each node's HTTP proxy 5 s to report ready and kills it otherwise: too short on a
    # loaded node (a busy 2-core machine missed it). Read by the Ray processes started here, and by
    # this job's workers on a cluster joined with ray_address; an explicit setting wins.
    patience = os.environ.setdefault(PROXY_READY_TIMEOUT, PROXY_READY_TIMEOUT_S)
    runtime_env = {"env_vars": {"PYTHONPATH": ":".join(paths),  # this checkout's code in every worker
                                PROXY_READY_TIMEOUT: patience}}
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, runtime_env=runtime_env,
                 logging_level=log_level.upper(), log_to_driver=log_level == "debug")
    serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": log_level.upper()})
    serve.run(build_application(spec), name="medseg-agent", route_prefix="/", blocking=blocking)
