"""Reward presets: weighted sums of terms, with optional clipped groups, and the scoring entry point.

A :class:`RewardSpec` is ``total = Σ w·term + Σ_g w_g · clip(Σ w_gi·term_i, lo, hi)``. That one shape
expresses both published rewards exactly and our own:

* ``medsam_agent`` (MedSAM-Agent): ``0.2·format + 0.8·clip(0.5·IoU + 0.5·Dice − overshoot − 0.01·turns
  + 0.1·Σ max(0, ΔIoU), 0, 1)``; turns cost nothing in single-turn episodes; ΔIoU is the gain of a
  tool turn over the previous tool turn.
* ``ibis_agent`` (IBISAgent): ``(fmt + ans + click + pseg + len) / 5`` per step, averaged over the
  episode's replies (its RL samples are single steps; the mean over steps is the trajectory score).
* ``medseg`` (ours): outcome-dominated, with small process terms; the weights and why are in
  ``docs/training.md`` (measured with ``medseg-agent reward compare``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg_agent.environment.record import TrajectoryRecord
from medseg_agent.rewards.facts import EpisodeFacts, episode_facts
from medseg_agent.rewards.terms import TERMS, RewardParams, evaluate_terms, step_table


@dataclass(frozen=True)
class TermGroup:
    """A clipped sub-sum, e.g. MedSAM-Agent's quality ``clip(..., 0, 1)``."""

    weight: float
    terms: dict[str, float]
    clip: tuple[float | None, float | None] = (None, None)


@dataclass(frozen=True)
class RewardSpec:
    name: str
    terms: dict[str, float] = field(default_factory=dict)
    groups: dict[str, TermGroup] = field(default_factory=dict)
    params: RewardParams = field(default_factory=RewardParams)
    description: str = ""

    def term_names(self) -> list[str]:
        names = list(self.terms)
        for group in self.groups.values():
            names += [n for n in group.terms if n not in names]
        return names

    def needs_ground_truth(self) -> bool:
        return any(TERMS[n].needs_ground_truth for n in self.term_names())


@dataclass
class RewardBreakdown:
    """The total and every term by name, plus how each weighted term contributed."""

    preset: str
    total: float
    terms: dict[str, float]
    contributions: dict[str, float]
    groups: dict[str, dict[str, float]]
    steps: list[dict[str, Any]] = field(default_factory=list)

    def flat(self) -> dict[str, float]:
        """``{"score": total, "<term>": value, "group/<name>": clipped}``: scalars for loggers (verl)."""
        out = {"score": self.total}
        out.update(self.terms)
        out.update({f"group/{k}": v["clipped"] for k, v in self.groups.items()})
        return out


def _clip(value: float, bounds: tuple[float | None, float | None]) -> float:
    lo, hi = bounds
    if lo is not None:
        value = max(lo, value)
    if hi is not None:
        value = min(hi, value)
    return value


def score_facts(facts: EpisodeFacts, spec: RewardSpec, with_steps: bool = False) -> RewardBreakdown:
    if spec.needs_ground_truth() and not facts.has_ground_truth:
        raise ValueError(
            f"reward preset {spec.name!r} needs the ground-truth mask, but the record has none "
            "(gt_mask_rle is empty); record episodes with ground truth to score them"
        )
    values = evaluate_terms(facts, spec.term_names(), spec.params)
    contributions = {name: weight * values[name] for name, weight in spec.terms.items()}
    total = sum(contributions.values())
    groups = {}
    for gname, group in spec.groups.items():
        raw = sum(w * values[n] for n, w in group.terms.items())
        clipped = _clip(raw, group.clip)
        groups[gname] = {"raw": raw, "clipped": clipped, "weight": group.weight}
        for n, w in group.terms.items():
            contributions[f"{gname}.{n}"] = w * values[n]
        total += group.weight * clipped
    steps = step_table(facts, spec.params) if with_steps else []
    return RewardBreakdown(spec.name, float(total), values, contributions, groups, steps)


def score_record(
    record: TrajectoryRecord,
    spec: RewardSpec | str = "medseg",
    base: Path | None = None,
    with_steps: bool = False,
) -> RewardBreakdown:
    """Score one trajectory record under a preset (name or spec). ``base``: folder of PNG masks."""
    if isinstance(spec, str):
        spec = get_preset(spec)
    facts = episode_facts(
        record, base, nsd_tolerance=spec.params.nsd_tolerance, repeated_box_iou=spec.params.repeated_box_iou
    )
    return score_facts(facts, spec, with_steps)


# -- built-in presets ----------------------------------------------------------------------------
MEDSAM_AGENT = RewardSpec(
    name="medsam_agent",
    terms={"format_medsam": 0.2},
    groups={
        "quality": TermGroup(
            weight=0.8,
            terms={
                "outcome_iou": 0.5,
                "outcome_dice": 0.5,
                "overshoot": -1.0,
                "turn_cost_medsam": -0.01,
                "improvement": 0.1,
            },
            clip=(0.0, 1.0),
        )
    },
    description="MedSAM-Agent (arXiv 2602.03320): 0.2*format + 0.8*clip(quality, 0, 1)",
)

IBIS_AGENT = RewardSpec(
    name="ibis_agent",
    terms={"ibis_fmt": 0.2, "ibis_ans": 0.2, "ibis_click": 0.2, "ibis_pseg": 0.2, "ibis_len": 0.2},
    description="IBISAgent (arXiv 2601.03054): (fmt + ans + click + pseg + len) / 5, mean over steps",
)

# Weights chosen with `medseg-agent reward compare` and scripts/train/reward_weight_search.py on the
# demo records (grid over the process weights, chosen on the MRI samples, checked on the microscopy
# samples); the table and the reasoning are in docs/training.md, "Choosing the weights". Terms with
# weight 0 there (boundary_nsd, improvement, redundant, stopping) are left out; add them in YAML.
MEDSEG = RewardSpec(
    name="medseg",
    terms={"format_valid": 0.1},
    groups={
        "quality": TermGroup(
            weight=0.9,
            terms={
                "outcome_dice": 0.8,
                "outcome_iou": 0.2,
                "overshoot": -0.5,
                "turn_fraction": -0.05,
                "click_correctness": 0.02,
            },
            clip=(0.0, None),  # no upper clip: at 1 it would hide the process terms for perfect masks
        )
    },
    description="medseg-agent: 0.1*valid replies + 0.9*max(0.8*Dice + 0.2*IoU - 0.5*overshoot "
    "- 0.05*turns/budget + 0.02*click correctness, 0)",
)

PRESETS: dict[str, RewardSpec] = {spec.name: spec for spec in (MEDSAM_AGENT, IBIS_AGENT, MEDSEG)}


def available_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> RewardSpec:
    if name not in PRESETS:
        raise ValueError(f"unknown reward preset {name!r}; choose one of {', '.join(available_presets())}")
    return PRESETS[name]
