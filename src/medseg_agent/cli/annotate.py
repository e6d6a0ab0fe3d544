"""``medseg-agent app``: the browser app for people: the agent proposes, the annotator corrects, and
every saved session is a trajectory record ready for ``trajectories export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medseg_agent.cli.common import err_console, say, warn, warn_if_open
from medseg_agent.cli.options import AgentOptions, AppServerOptions, ServedToolOptions, expand_options


@expand_options
def app_command(
    *,  # option groups: see medseg_agent.cli.options
    served: ServedToolOptions,
    out: Annotated[
        Path, typer.Option("--out", "-o", file_okay=False,
                           help="Where saved sessions go (trajectories.jsonl, images/, masks/).")
    ] = Path("runs/app"),
    data: Annotated[
        Path | None,
        typer.Option("--data", help="A dataset to offer in the page's library (default: the demo dataset)."),
    ] = None,
    agent: AgentOptions,
    server: AppServerOptions,
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
    from medseg_agent.annotation.library import Library, demo_sources
    from medseg_agent.serving.app_api import app_url, create_annotation_app
    from medseg_agent.serving.server import run_server

    config = server.config()
    segmenter = served.build()
    sources, volumes, missing = (data, [], None) if data is not None or not agent.demo else demo_sources(
        progress=lambda line: err_console.print(f"demo data: {line}"))
    library, warning = Library.from_paths(sources, volumes)
    for message in (missing, warning):
        if message:
            warn(message)
    web = create_annotation_app(segmenter, config, agent.config(out, library, warning), owns_tool=True)
    warn_if_open(server.host, config)
    err_console.print(f"{segmenter.name} tool; {len(library)} library entries; saved sessions go to {out.resolve()}")
    say("open ", (app_url(server.host, server.port, config.token), "bold"), " in a browser (Ctrl-C stops the server)")
    run_server(web, host=server.host, port=server.port, log_level=server.log_level)


def register(app: typer.Typer) -> None:
    app.command("app")(app_command)
