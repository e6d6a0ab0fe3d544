"""``medseg-agent app``: the browser app for people: the agent proposes, the annotator corrects, and
every saved session is a trajectory record ready for ``trajectories export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medseg_agent.cli.common import (
    CheckpointOption,
    DeviceOption,
    ModelTypeOption,
    RandomWeightsOption,
    err_console,
    say,
    warn,
)
from medseg_agent.cli.serve import (
    HostOption,
    LogLevelOption,
    MaxBodyOption,
    PortOption,
    SessionTtlOption,
    TokenOption,
    ToolExtraOption,
    served_tool,
    server_config,
    warn_if_open,
)

DEMO_VOLUME_TARGET = "brain"


def app_command(
    tool: Annotated[
        str, typer.Option("--tool", help="Segmentation tool: classic (no weights), sam, medsam, sam2.")
    ] = "classic",
    tool_option: ToolExtraOption = None,
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "cpu",
    model_type: ModelTypeOption = None,
    random_weights: RandomWeightsOption = False,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where saved sessions go (trajectories.jsonl, images/, masks/).")
    ] = Path("runs/app"),
    data: Annotated[
        Path | None,
        typer.Option("--data", help="A dataset to offer in the page's library (default: the demo dataset)."),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Build (or reuse) the demo dataset when --data is not given.")
    ] = True,
    annotator: Annotated[
        str, typer.Option("--annotator", help="Default annotator name written into records (the page can change it).")
    ] = "",
    agent_url: Annotated[
        str | None, typer.Option("--agent-url", help="Default OpenAI-compatible URL of the agent, e.g. http://gpu:8000/v1.")
    ] = None,
    agent_model: Annotated[str | None, typer.Option("--agent-model", help="Default served model name.")] = None,
    agent_checkpoint: Annotated[
        str | None, typer.Option("--agent-checkpoint", help="Default local Hugging Face checkpoint folder (hf agent).")
    ] = None,
    agent_device: Annotated[str, typer.Option("--agent-device", help="Device of hf agents: auto, cpu, cuda.")] = "auto",
    max_turns: Annotated[
        int, typer.Option("--max-turns", min=1, max=64, help="Turns (agent and person) before an episode ends.")
    ] = 20,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8265,
    token: TokenOption = None,
    max_body_mb: MaxBodyOption = 1024,
    session_ttl: SessionTtlOption = 3600.0,
    log_level: LogLevelOption = "warning",
) -> None:
    """Open the annotation app in a browser: images and volumes, an agent that proposes, a person who corrects.

    One server holds the tool, its embedding cache, the sessions and the token; several annotators can
    use it at once (give each the URL with the token). Every saved session appends one trajectory record
    (each turn marked agent or person) to OUT/trajectories.jsonl, with the image in OUT/images/ and the
    mask in OUT/masks/ (PNG, or NIfTI on the source grid for a slice of a volume). Examples:

        medseg-agent app

        medseg-agent app --tool sam2 --checkpoint MedSAM2_latest.pt --device cuda
            --agent-url http://gpu:8000/v1 --host 0.0.0.0 --token "$MEDSEG_AGENT_TOKEN" --out /data/annotations

    Then `medseg-agent trajectories export OUT --out sft/` turns the saved sessions into SFT data
    (docs/app.md says how to weight corrected sessions).
    """
    from medseg_agent.annotation.library import Library
    from medseg_agent.serving.app import create_app
    from medseg_agent.serving.app_api import install_app
    from medseg_agent.serving.app_state import AppConfig
    from medseg_agent.serving.config import MIB
    from medseg_agent.serving.server import run_server

    config = server_config(token, max_body_bytes=max_body_mb * MIB, session_ttl_s=session_ttl)
    segmenter = served_tool(tool, checkpoint, device, model_type, random_weights, tool_option or [])
    library_data, volumes = (data, []) if data is not None or not demo else _demo_library()
    library, warning = Library.from_paths(library_data, volumes)
    if warning:
        warn(warning)
    app = create_app(segmenter, config)
    install_app(
        app,
        AppConfig(
            out_dir=out,
            library=library,
            library_warning=warning,
            annotator=annotator,
            max_turns=max_turns,
            agent_base_url=agent_url,
            agent_model=agent_model,
            agent_checkpoint=agent_checkpoint,
            agent_device=agent_device,
        ),
    )
    warn_if_open(host, config)
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/app/" + (f"#token={config.token}" if config.token else "")
    err_console.print(f"{segmenter.name} tool; {len(library)} library entries; saved sessions go to {out.resolve()}")
    say("open ", (url, "bold"), " in a browser (Ctrl-C stops the server)")
    run_server(app, host=host, port=port, log_level=log_level)


def _demo_library() -> tuple[Path | None, list[Any]]:
    """The demo dataset (built on first use) and its brain MRI volume; nothing when unavailable."""
    from medseg_agent.annotation.library import LibraryVolume
    from medseg_agent.data.demo import DemoBuildError, build_demo_dataset, fetch_mricron_templates

    try:
        root = build_demo_dataset(progress=lambda line: err_console.print(f"demo data: {line}"))
        templates = fetch_mricron_templates()
    except (DemoBuildError, OSError) as exc:
        warn(f"no demo data ({exc}); open your own images from the page")
        return None, []
    volume = LibraryVolume(templates / "ch2.nii.gz", "Colin27 T1 brain MRI (NIfTI volume)", DEMO_VOLUME_TARGET, "MRI")
    return root, [volume]


def register(app: typer.Typer) -> None:
    app.command("app")(app_command)
