"""``medseg-agent evaluate``: a policy driving a tool on whole datasets, with tables and plots.

The policy, tool and episode options are the option groups of :mod:`medseg_agent.cli.options`,
shared with ``segment`` so both commands spell them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medseg_agent.cli.common import console, fail, load_samples
from medseg_agent.cli.options import EpisodeOptions, PolicyOptions, RunOptions, ToolOptions, expand_options


@expand_options
def evaluate(
    data: Annotated[
        list[Path],
        typer.Option("--data", "-d", exists=True, help="Dataset folder or file (any supported layout); repeatable."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                      help="Run folder: records.jsonl, summary.*, plots/.")],
    *,  # option groups: see medseg_agent.cli.options
    policy: PolicyOptions,
    tool: ToolOptions,
    split: Annotated[str, typer.Option("--split", help="Samples of this split only; 'all' for every split.")] = "test",
    data_format: Annotated[str, typer.Option("--format", help="Dataset layout (default: detected).")] = "auto",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N samples per --data.")] = None,
    episode: EpisodeOptions,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Base seed (per-sample seeds derive from it).")] = 0,
    run: RunOptions,
) -> None:
    """Evaluate a POLICY driving a TOOL on datasets: one trajectory record per sample in
    OUT/records.jsonl (appended atomically; rerun the same command to resume after a kill), then
    summary tables (OUT/summary.md, .csv, .json: Dice, IoU, NSD, HD95, turns, format-error rate, stop
    rate per dataset, modality, target and overall) and plots (OUT/plots/).

    Ground-truth policies (upper bounds) on the demo data:

      medseg-agent evaluate --data ~/.cache/medseg-agent/demo --policy expert --out runs/eval-expert

    A served model (first, elsewhere: vllm serve Qwen/Qwen3-VL-8B-Instruct --port 8000):

      medseg-agent evaluate -d data/test --policy openai --base-url http://localhost:8000/v1 -o runs/qwen3vl

    A local checkpoint:

      medseg-agent evaluate -d data/test --policy hf --model-path runs/sft/final -o runs/sft-eval

    See docs/inference.md for serving, native tool calls and Ray.
    """
    from medseg_agent.evaluation.evaluate import EvalSpec, describe_run, evaluate_to_folder
    from medseg_agent.policies.chat import PolicyError

    try:
        config = episode.config()
        described = describe_run(policy.policy, policy.kwargs(), tool.tool, tool.settings(), config, seed)
        spec = EvalSpec(tool.factory(), policy.factory(), config, seed, described)
    except ValueError as exc:
        fail(str(exc))
    if run.ray_address is None:  # fail fast, before reading data; one local worker reuses what was built
        built = spec.with_built(tool.build(), policy.build())
        spec = built if run.workers == 1 else spec
    samples = load_samples(data, data_format=data_format, split=None if split == "all" else split, limit=limit)
    try:
        results, paths = evaluate_to_folder(samples, spec, out, **run.kwargs())
    except PolicyError as exc:
        fail(f"{exc}\nrecords so far are kept in {out / 'records.jsonl'}; rerun the same command to resume")
    except (ValueError, RuntimeError) as exc:  # settings differ from the stored run; Ray missing
        fail(str(exc))
    _print_overview(results)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


def _print_overview(results) -> None:
    from rich.table import Table

    from medseg_agent.evaluation.summary import summarize

    table = Table(title=f"{len(results)} samples")
    for column in ("group", "n", "Dice", "IoU", "NSD", "HD95", "turns", "fmt err", "stop"):
        table.add_column(column)

    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"

    for row in summarize(results):
        if row["level"] in ("all", "modality"):
            name = f"all ({row['name']})" if row["level"] == "all" else row["name"]
            metrics = [fmt(row[m]) for m in ("dice", "iou", "nsd")]
            rates = [fmt(row["hd95"], 1), fmt(row["turns"], 2), fmt(row["format_error_rate"]), fmt(row["stop_rate"])]
            table.add_row(name, str(row["n"]), *metrics, *rates)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
