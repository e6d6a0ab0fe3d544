"""``medseg-agent reward``: read, explain and compare reward functions on trajectory records."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from medseg_agent.cli.common import console, fail, say
from medseg_agent.cli.options import RewardOption

reward_app = typer.Typer(
    help=(
        "Reward functions as a library: score trajectory records under a preset (medsam_agent, "
        "ibis_agent, medseg) or your own YAML, see every term, and check which trajectories a reward "
        "prefers before training with it.\n\n"
        "Start with `medseg-agent reward presets`, then `medseg-agent reward explain RECORD.json`."
    ),
    no_args_is_help=True,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override one field, repeatable: params.good_iou=0.85, groups.quality.terms.stopping=0.05, "
        "terms.format_valid=0.2.",
    ),
]


def _spec(reward: str, overrides: list[str] | None):
    from medseg_agent.rewards import RewardConfigError, resolve_reward

    try:
        return resolve_reward(reward, overrides or None)
    except RewardConfigError as exc:
        fail(str(exc))
        raise  # unreachable


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def presets(
    show_yaml: Annotated[bool, typer.Option("--yaml", help="Print each preset as an editable YAML config.")] = False,
) -> None:
    """List the presets with their formulas, and every term a reward can use."""
    import yaml

    from medseg_agent.rewards import PRESETS, TERMS, spec_to_dict

    for name, spec in PRESETS.items():
        say((name, "bold"), f": {spec.description}")
        if show_yaml:
            console.print(yaml.safe_dump(spec_to_dict(spec), sort_keys=False))
    table = Table(title="terms")
    table.add_column("term")
    table.add_column("needs ground truth")
    table.add_column("what it measures")
    for term in TERMS.values():
        table.add_row(term.name, "yes" if term.needs_ground_truth else "no", term.description)
    console.print(table)


def explain(
    record: Annotated[
        Path,
        typer.Argument(help="A trajectory record (.json), or a .jsonl of records (evaluate / trajectories runs)."),
    ],
    reward: RewardOption = "medseg",
    overrides: SetOption = None,
    line: Annotated[int, typer.Option("--line", min=1, help="For .jsonl: the line (1-based).")] = 1,
    trajectory: Annotated[
        int, typer.Option("--trajectory", min=0, help="For .jsonl lines holding several trajectories: which (0-based).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the breakdown as JSON.")] = False,
) -> None:
    """Print the reward of one trajectory record, term by term.

    Shows the total, every term, each weighted contribution, the clipped groups and a per-turn table (IoU,
    gain, click correctness, redundancy, IBIS step terms).

    Example: medseg-agent reward explain runs/eval/records.jsonl --line 3 --reward medsam_agent
    """
    from medseg_agent.environment.record import RecordError, load_record
    from medseg_agent.rewards import score_record
    from medseg_agent.rewards.compare import record_at

    spec = _spec(reward, overrides)
    try:
        loaded = load_record(record) if record.suffix != ".jsonl" else record_at(record, line, trajectory)
        breakdown = score_record(loaded, spec, base=record.parent, with_steps=True)
    except (RecordError, ValueError) as exc:
        fail(str(exc))
        return
    if as_json:
        print(json.dumps(breakdown.__dict__, indent=1, default=str))
        return
    _print_breakdown(record, loaded, spec, breakdown)


def _print_breakdown(record: Path, loaded: Any, spec: Any, breakdown: Any) -> None:
    """The total, one row per weighted term and clipped group, then one row per turn."""
    say((str(record), "bold"), "  reward ", (spec.name, "bold"), " = ", (f"{breakdown.total:.4f}", "bold green"))
    console.print(
        f"stop: {loaded.stop_reason}, tool turns: {loaded.num_interactions}, errors: {loaded.num_errors}, "
        f"final IoU {_num(loaded.final_metrics.get('iou'))}, Dice {_num(loaded.final_metrics.get('dice'))}"
    )
    table = Table(title="terms")
    for col in ("term", "value", "weight", "contribution"):
        table.add_column(col, justify="left" if col == "term" else "right")
    weights = dict(spec.terms)
    for gname, group in spec.groups.items():
        weights.update({f"{gname}.{n}": w for n, w in group.terms.items()})
    for key, contribution in breakdown.contributions.items():
        name = key.split(".")[-1]
        table.add_row(key, _num(breakdown.terms[name]), _num(weights[key]), _num(contribution))
    for gname, g in breakdown.groups.items():
        spec_group = spec.groups[gname]
        table.add_row(
            Text.assemble((gname, "bold"), f" (clip {spec_group.clip})"),
            f"{g['raw']:.4f} -> {g['clipped']:.4f}",
            _num(g["weight"]),
            _num(g["weight"] * g["clipped"]),
        )
    console.print(table)
    steps = Table(title="turns")
    for col in ("turn", "action", "valid", "IoU", "gain", "click", "redundant", "IBIS fmt/ans/click/pseg/len"):
        steps.add_column(col)
    for row in breakdown.steps:
        ibis = "/".join(f"{v:g}" for v in row["ibis"].values())
        steps.add_row(
            str(row["turn"]),
            row["kind"],
            str(row["valid"]),
            _num(row["iou"]),
            _num(row["gain"]),
            row["click"] or "-",
            row["redundant"] or "-",
            ibis,
        )
    console.print(steps)


def compare(
    records: Annotated[Path, typer.Option("--records", exists=True, file_okay=False,
                                          help="Folder of trajectory records (*.json, *.jsonl).")],
    rewards: Annotated[
        list[str] | None,
        typer.Option("--reward", "-r", help="Preset or YAML to compare, repeatable (default: all presets)."),
    ] = None,
    dice_tie: Annotated[
        float, typer.Option("--dice-tie", min=0.0, help="Dice differences up to this count as equal (process pairs).")
    ] = 0.01,
    out: Annotated[Path | None, typer.Option("--out", "-o", dir_okay=False,
                                             help="Also write the full report as JSON.")] = None,
) -> None:
    """Compare rewards on a folder of records: which trajectories does each prefer?

    Scores every record under several rewards and reports Spearman with the final Dice, agreement with Dice on
    pairs of the same sample, agreement with "fewer turns" when
    the Dice is tied, and the mean reward per policy. Judge a reward change in seconds.

    Records of different quality: `python scripts/train/reward_sandbox_records.py --out DIR`, or the
    records of `medseg-agent trajectories` / `medseg-agent evaluate` runs.

    Example: medseg-agent reward compare --records runs/reward_sandbox -r medsam_agent -r my_reward.yaml
    """
    from medseg_agent.rewards import PRESETS
    from medseg_agent.rewards.compare import compare as run_compare
    from medseg_agent.rewards.compare import format_report, load_records

    specs = [_spec(r, None) for r in rewards] if rewards else list(PRESETS.values())
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        fail(f"two rewards share a name ({', '.join(names)}); give each YAML its own name:")
    try:
        loaded = load_records(records)
        report = run_compare(loaded, specs, dice_tie=dice_tie)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        return
    typer.echo(format_report(report))
    if out is not None:
        from medseg_agent.io.atomic import atomic_write_json

        atomic_write_json(out, report.to_dict())
        console.print(f"report written to {out}")


def register(app: typer.Typer) -> None:
    reward_app.command("presets")(presets)
    reward_app.command("explain")(explain)
    reward_app.command("compare")(compare)
    app.add_typer(reward_app, name="reward")
