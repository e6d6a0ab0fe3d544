"""Prometheus metrics of the server: requests and latencies per route, cache, sessions, model work.

Each app has its own registry (several servers can live in one process, e.g. in tests). Request
metrics are recorded by an ASGI middleware; everything else is read live from the server's state
when ``/metrics`` is scraped, so there is no second bookkeeping to drift.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from medseg_agent.serving.state import ServerState

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The registry of one app and its request instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "medseg_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "medseg_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def watch(self, state: ServerState) -> None:
        self.registry.register(_StateCollector(state))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        cache = state.cache.stats()
        work = state.worker.stats
        images = state.images.stats()
        counters = {
            "medseg_embedding_cache_hits": ("Embedding requests served without a new encode.", cache.hits),
            "medseg_embedding_cache_misses": ("Embedding requests that started an encode.", cache.misses),
            "medseg_embedding_cache_evictions": ("Embeddings dropped to stay within budget.", cache.evictions),
            "medseg_sessions_created": ("Sessions created.", state.sessions.created_total),
            "medseg_sessions_expired": ("Sessions deleted after the idle timeout.", state.sessions.expired_total),
            "medseg_model_encodes": ("Image encodes run by the model.", work.encodes),
            "medseg_model_encode_seconds": ("Seconds spent encoding.", work.encode_seconds),
            "medseg_model_decode_batches": ("Decode calls (each may hold several prompts).", work.decode_batches),
            "medseg_model_decoded_prompts": ("Prompts decoded.", work.decoded_prompts),
            "medseg_model_decode_seconds": ("Seconds spent decoding.", work.decode_seconds),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        gauges = {
            "medseg_embedding_cache_bytes": ("Bytes of embeddings held.", cache.bytes),
            "medseg_embedding_cache_max_bytes": ("Embedding cache budget.", cache.max_bytes),
            "medseg_embedding_cache_entries": ("Embeddings held.", cache.entries),
            "medseg_embedding_encodes_in_flight": ("Encodes running or queued.", cache.in_flight),
            "medseg_images_stored": ("Uploaded images held.", images["images"]),
            "medseg_images_bytes": ("Bytes of uploaded images held.", images["bytes"]),
            "medseg_sessions_active": ("Live sessions.", len(state.sessions)),
            "medseg_model_queue_depth": ("Model calls waiting or running.", state.worker.queue_depth),
            "medseg_model_largest_batch": ("Largest decode batch so far.", work.largest_batch),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        tool = GaugeMetricFamily("medseg_tool_counter", "The tool's own counters (SegmentationTool.stats), by name.",
                                 labels=["name"])
        for name, value in state.tool.stats().items():
            tool.add_metric([name], value)
        yield tool


class RequestMetricsMiddleware:
    """Counts requests and times them by route *template* (``/v1/sessions/{session_id}``), so
    session ids never become label values."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # (method, route, status) -> its counter and histogram: .labels() costs more than a dict lookup
        self._instruments: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            key = (scope.get("method", ""), getattr(route, "path", None) or "unmatched", str(status))
            instruments = self._instruments.get(key)
            if instruments is None:
                instruments = self._instruments[key] = (self.metrics.requests.labels(*key),
                                                        self.metrics.latency.labels(*key[:2]))
            instruments[0].inc()
            instruments[1].observe(time.perf_counter() - start)
