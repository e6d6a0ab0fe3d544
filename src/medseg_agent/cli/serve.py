"""``medseg-agent serve``: the segmentation tool server for RL rollouts, web UIs and remote inference."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from medseg_agent.cli.common import err_console, server_config, warn_if_open
from medseg_agent.cli.options import (
    HostOption,
    LogLevelOption,
    MaxBodyOption,
    PortOption,
    RayAddressOption,
    ServedToolOptions,
    SessionTtlOption,
    TokenOption,
    expand_options,
)

CacheOption = Annotated[
    int, typer.Option("--cache-mb", min=0, help="Embedding cache budget (SAM 2 at 1024: ~16 MB per image).")
]
ImageCacheOption = Annotated[int, typer.Option("--image-cache-mb", min=0, help="Uploaded-image budget.")]
MaxImageSideOption = Annotated[
    int, typer.Option("--max-image-side", min=16, help="Largest image side in pixels (422 above).")
]
MaxSessionsOption = Annotated[int, typer.Option("--max-sessions", min=1, help="Live sessions (503 above).")]
MaxBatchOption = Annotated[int, typer.Option("--max-batch", min=1, help="Prompts decoded together at most.")]
ReplicasOption = Annotated[
    int,
    typer.Option("--replicas", min=0, help="Model replicas behind this endpoint on Ray Serve (0: one plain "
                 "process). Each image's requests go to one replica, chosen by its hash."),
]
GpusPerReplicaOption = Annotated[
    float | None,
    typer.Option("--gpus-per-replica", min=0.0,
                 help="GPUs each replica reserves (with --replicas; default 1 with --device cuda, else 0)."),
]
CpusPerReplicaOption = Annotated[
    float, typer.Option("--cpus-per-replica", min=0.0, help="CPUs each replica reserves (with --replicas).")
]
AccessLogOption = Annotated[bool, typer.Option("--access-log", help="Log every request.")]


@expand_options
def serve(
    *,  # option group: see medseg_agent.cli.options
    served: ServedToolOptions,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8265,
    token: TokenOption = None,
    cache_mb: CacheOption = 2048,
    image_cache_mb: ImageCacheOption = 1024,
    max_body_mb: MaxBodyOption = 64,
    max_image_side: MaxImageSideOption = 8192,
    session_ttl: SessionTtlOption = 900.0,
    max_sessions: MaxSessionsOption = 4096,
    max_batch: MaxBatchOption = 32,
    replicas: ReplicasOption = 0,
    ray_address: RayAddressOption = None,
    gpus_per_replica: GpusPerReplicaOption = None,
    cpus_per_replica: CpusPerReplicaOption = 1.0,
    log_level: LogLevelOption = "info",
    access_log: AccessLogOption = False,
) -> None:
    """Serve a segmentation tool over HTTP, with one shared embedding per image.

    Every session and prediction on the same image (e.g. the 8 GRPO rollouts of a prompt) shares one
    cached embedding, computed once; concurrent decodes are batched; sessions expire when idle.
    Interactive API docs at http://HOST:PORT/docs, health at /health, Prometheus metrics at /metrics.

    With --replicas N the same server runs as N replicas on Ray Serve behind one endpoint (on every
    node of the Ray cluster), every request of one image routed to one replica by the image's hash.

    Use it from any command with --tool http://HOST:PORT, e.g.

      medseg-agent serve --tool sam2 --checkpoint MedSAM2_latest.pt --tool-option image_size=512

      medseg-agent segment scan.png -t "liver" -o out --tool http://127.0.0.1:8265
    """
    from medseg_agent.serving.app import create_app
    from medseg_agent.serving.config import MIB
    from medseg_agent.serving.server import run_server

    config = server_config(token, cache_bytes=cache_mb * MIB, image_bytes=image_cache_mb * MIB,
                           max_body_bytes=max_body_mb * MIB, max_image_side=max_image_side,
                           session_ttl_s=session_ttl, max_sessions=max_sessions, max_batch=max_batch)
    if replicas:
        _serve_replicas(served, config, replicas, ray_address, gpus_per_replica, cpus_per_replica, host, port,
                        log_level)
        return
    segmenter = served.build()
    warn_if_open(host, config)
    err_console.print(f"serving {segmenter.name} on http://{host}:{port} (docs: http://{host}:{port}/docs)")
    run_server(create_app(segmenter, config, owns_tool=True), host=host, port=port, log_level=log_level,
               access_log=access_log)


def _serve_replicas(served: ServedToolOptions, config: Any, replicas: int, ray_address: str | None,
                    gpus: float | None, cpus: float, host: str, port: int, log_level: str) -> None:
    """``--replicas``: the same app on Ray Serve (each replica builds the tool like ``make_tool``)."""
    from medseg_agent.serving.cluster import ClusterSpec, run_cluster

    if gpus is None:
        gpus = 1.0 if served.device.startswith("cuda") else 0.0
    spec = ClusterSpec(tool=served.spec(), config=config, replicas=replicas, cpus_per_replica=cpus,
                       gpus_per_replica=gpus, model_process=served.model_process)
    warn_if_open(host, config)
    err_console.print(f"serving {served.tool} as {replicas} Ray Serve replicas on http://{host}:{port} (every node)")
    run_cluster(spec, host=host, port=port, ray_address=ray_address, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
