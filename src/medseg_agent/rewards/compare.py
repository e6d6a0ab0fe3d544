"""The reward-design sandbox: score existing records under several presets and check the rankings.

A reward is worth training with only if it prefers the trajectories we prefer. For every preset this
reports (1) the Spearman correlation of reward with final Dice over all records, (2) on pairs of
records of the same sample, how often the reward orders them like the final Dice does (outcome pairs,
Dice differs by more than ``dice_tie``) and like the turn count does when the Dice is tied (process
pairs: fewer turns is better), and (3) the mean reward per policy, next to its mean Dice and turns.
Scoring is pure Python over the records: seconds, not GPU days.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from medseg_agent.environment.record import RecordError, TrajectoryRecord, load_record, record_from_dict
from medseg_agent.rewards.facts import episode_facts
from medseg_agent.rewards.presets import RewardSpec, score_facts


@dataclass
class LoadedRecords:
    records: list[tuple[str, TrajectoryRecord, Path]] = field(default_factory=list)  # (name, record, base)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def iter_record_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            yield path


def records_in_row(row: Any) -> list[dict[str, Any]]:
    """The record dicts one JSON(L) row holds, in the project's layouts: a record itself,
    ``{"record": {...}}`` (``evaluate``'s records.jsonl) or ``{"trajectories": [...]}``
    (``trajectories generate``'s trajectories.jsonl)."""
    if not isinstance(row, dict):
        return []
    if isinstance(row.get("record"), dict):
        return [row["record"]]
    if isinstance(row.get("trajectories"), list):
        return [r for r in row["trajectories"] if isinstance(r, dict)]
    return [row] if "turns" in row and "image_size" in row else []


def jsonl_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, value, None)`` for each JSON line, ``(line number, None, why)`` for a line that
    is not JSON; blank lines are passed over but counted, so numbers match an editor's."""
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw), None
        except UnicodeDecodeError as exc:
            yield number, None, f"not UTF-8 text: {exc}"
        except json.JSONDecodeError as exc:
            yield number, None, f"not valid JSON: {exc}"


def record_at(path: str | Path, line: int, trajectory: int = 0) -> TrajectoryRecord:
    """The ``trajectory``-th record held by line ``line`` (1-based) of a ``.jsonl`` file."""
    path = Path(path)
    try:
        rows = {number: (row, problem) for number, row, problem in jsonl_rows(path)}
    except FileNotFoundError:
        raise RecordError(f"record file {path} does not exist") from None
    except OSError as exc:
        raise RecordError(f"cannot read record file {path}: {exc.strerror or exc}") from None
    if line not in rows:
        last = max(rows, default=0)
        why = "is blank" if line < last else f"is past the end ({last} line(s))"
        raise RecordError(f"{path} line {line} {why}")
    row, problem = rows[line]
    if problem is not None:
        raise RecordError(f"{path} line {line} is {problem}")
    found = records_in_row(row)
    if trajectory >= len(found):
        raise RecordError(f"{path} line {line} holds {len(found)} trajectory record(s); --trajectory {trajectory}")
    return record_from_dict(found[trajectory], f"{path} line {line}")


def load_records(folder: str | Path) -> LoadedRecords:
    """Every record under ``folder``: ``*.json`` files holding one record, and ``*.jsonl`` files in
    any layout :func:`records_in_row` reads (one record or several per line).

    Files that are not records (manifests, summaries) are skipped and listed with the reason.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"records folder {folder} does not exist")
    out = LoadedRecords()
    for path in iter_record_files(folder):
        rel = str(path.relative_to(folder))
        if path.suffix == ".json":
            try:
                out.records.append((rel, load_record(path), path.parent))
            except RecordError as exc:
                out.skipped.append((rel, str(exc)))
            continue
        try:
            rows = list(jsonl_rows(path))
        except OSError as exc:
            out.skipped.append((rel, f"cannot read: {exc.strerror or exc}"))
            continue
        for i, row, problem in rows:
            if problem is not None:
                out.skipped.append((f"{rel}:{i}", problem))
                continue
            found = records_in_row(row)
            if not found:
                out.skipped.append((f"{rel}:{i}", "no trajectory record in this line"))
            for j, data in enumerate(found):
                name = f"{rel}:{i}" + (f"#{j}" if len(found) > 1 else "")
                try:
                    out.records.append((name, record_from_dict(data, name), path.parent))
                except RecordError as exc:
                    out.skipped.append((name, str(exc)))
    return out


@dataclass
class ScoredRecord:
    name: str
    sample_key: str
    policy: str
    dice: float
    turns: int
    rewards: dict[str, float]


@dataclass
class PresetSummary:
    preset: str
    spearman_dice: float
    outcome_agreement: float
    outcome_pairs: int
    process_agreement: float
    process_pairs: int
    mean_reward: float


@dataclass
class CompareReport:
    presets: list[PresetSummary]
    policies: list[dict[str, Any]]  # policy, n, dice, turns, reward per preset
    records: list[ScoredRecord]
    skipped: list[tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "presets": [vars(p) for p in self.presets],
            "policies": self.policies,
            "records": [vars(r) for r in self.records],
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
        }


def score_records(loaded: LoadedRecords, specs: list[RewardSpec]) -> list[ScoredRecord]:
    scored = []
    for name, record, base in loaded.records:
        if record.gt_mask_rle is None:
            loaded.skipped.append((name, "no ground-truth mask in the record (gt_mask_rle)"))
            continue
        facts = episode_facts(record, base)
        rewards = {spec.name: score_facts(facts, spec).total for spec in specs}
        scored.append(
            ScoredRecord(
                name=name,
                sample_key=f"{record.dataset}/{record.sample_id}/{record.target}",
                policy=record.policy or "unknown",
                dice=facts.final_dice,
                turns=facts.num_tool_turns,
                rewards=rewards,
            )
        )
    return scored


def pair_agreement(scored: list[ScoredRecord], preset: str, dice_tie: float) -> tuple[float, int, float, int]:
    by_sample: dict[str, list[ScoredRecord]] = defaultdict(list)
    for r in scored:
        by_sample[r.sample_key].append(r)
    outcome = [0.0, 0]
    process = [0.0, 0]
    for group in by_sample.values():
        for a, b in combinations(group, 2):
            if abs(a.dice - b.dice) > dice_tie:
                better, worse, bucket = (a, b, outcome) if a.dice > b.dice else (b, a, outcome)
            elif a.turns != b.turns:
                better, worse, bucket = (a, b, process) if a.turns < b.turns else (b, a, process)
            else:
                continue
            ra, rb = better.rewards[preset], worse.rewards[preset]
            bucket[0] += 1.0 if ra > rb + 1e-12 else 0.5 if abs(ra - rb) <= 1e-12 else 0.0
            bucket[1] += 1
    o = outcome[0] / outcome[1] if outcome[1] else math.nan
    p = process[0] / process[1] if process[1] else math.nan
    return o, outcome[1], p, process[1]


def compare(loaded: LoadedRecords, specs: list[RewardSpec], dice_tie: float = 0.01) -> CompareReport:
    scored = score_records(loaded, specs)
    if not scored:
        raise ValueError("no scorable records (records need a ground-truth mask)")
    summaries = []
    dices = [r.dice for r in scored]
    for spec in specs:
        values = [r.rewards[spec.name] for r in scored]
        rho = spearmanr(values, dices).statistic if len(set(values)) > 1 and len(set(dices)) > 1 else math.nan
        o, on, p, pn = pair_agreement(scored, spec.name, dice_tie)
        summaries.append(PresetSummary(spec.name, float(rho), o, on, p, pn, sum(values) / len(values)))
    policies = []
    by_policy: dict[str, list[ScoredRecord]] = defaultdict(list)
    for r in scored:
        by_policy[r.policy].append(r)
    for policy, rows in sorted(by_policy.items()):
        n = len(rows)
        entry: dict[str, Any] = {
            "policy": policy,
            "n": n,
            "dice": sum(r.dice for r in rows) / n,
            "turns": sum(r.turns for r in rows) / n,
        }
        for spec in specs:
            entry[spec.name] = sum(r.rewards[spec.name] for r in rows) / n
        policies.append(entry)
    return CompareReport(summaries, policies, scored, loaded.skipped)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_report(report: CompareReport) -> str:
    """Markdown tables (paste-able into docs and issues)."""
    lines = [
        "| preset | Spearman(reward, Dice) | outcome-pair agreement | process-pair agreement | mean reward |",
        "|---|---|---|---|---|",
    ]
    for p in report.presets:
        lines.append(
            f"| {p.preset} | {_fmt(p.spearman_dice)} | {_fmt(p.outcome_agreement)} ({p.outcome_pairs}) "
            f"| {_fmt(p.process_agreement)} ({p.process_pairs}) | {_fmt(p.mean_reward)} |"
        )
    names = [p.preset for p in report.presets]
    lines += ["", "| policy | n | Dice | turns | " + " | ".join(names) + " |", "|---" * (4 + len(names)) + "|"]
    for row in report.policies:
        cells = " | ".join(_fmt(row[n]) for n in names)
        lines.append(f"| {row['policy']} | {row['n']} | {_fmt(row['dice'])} | {_fmt(row['turns'], 2)} | {cells} |")
    if report.skipped:
        lines += ["", f"skipped {len(report.skipped)} file(s); first: {report.skipped[0][0]}: {report.skipped[0][1]}"]
    return "\n".join(lines)
