"""Limits and budgets of the tool server, in one place (the ``serve`` command maps its options here)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Every limit the server enforces. Defaults suit one GPU (or CPU) serving a GRPO trainer."""

    token: str | None = None  # bearer token required on /v1/* and /metrics; None: open
    cache_bytes: int = 2048 * MIB  # embedding cache budget (SAM 2 at 1024: ~16 MiB per image)
    image_bytes: int = 1024 * MIB  # uploaded-image budget (images pinned by live sessions stay)
    max_body_bytes: int = 64 * MIB  # request bodies above this get 413
    max_image_side: int = 8192  # pixels; checked from the file header before decoding
    session_ttl_s: float = 900.0  # a session idle this long is deleted
    sweep_interval_s: float = 30.0  # how often idle sessions are looked for
    max_sessions: int = 4096  # live sessions; creating more gets 503
    max_points: int = 64  # clicks in one session's prompt; more gets 409 (reset or add a box)
    undo_depth: int = 32  # actions that can be undone
    max_batch: int = 32  # prompts per batched decode
    max_prompts_per_request: int = 64  # prompts in one POST /v1/predict
    #: answer the two action routes outside FastAPI's routing (same answers, a fraction of the CPU;
    #: see medseg_agent.serving.api_actions); False sends them through FastAPI like every other route
    lean_actions: bool = True
    #: FastAPI's built-in OpenTelemetry traces, metrics and logs (FastAPI >= 0.162) for a configured
    #: OpenTelemetry collector; off by default: even unconfigured it costs ~45 us of CPU per request
    opentelemetry: bool = False

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_image_side", "max_sessions", "max_points", "max_batch",
                     "max_prompts_per_request"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServerConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("cache_bytes", "image_bytes", "undo_depth"):
            if getattr(self, name) < 0:
                raise ValueError(f"ServerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.session_ttl_s <= 0 or self.sweep_interval_s <= 0:
            raise ValueError("ServerConfig.session_ttl_s and sweep_interval_s must be > 0")
        if self.token is not None and not self.token.strip():
            raise ValueError("ServerConfig.token must not be blank (use None for an open server)")
