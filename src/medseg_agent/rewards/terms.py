"""Reward terms: small pure functions of :class:`EpisodeFacts`, registered by name.

Each term measures one thing in its natural unit (an IoU, a count, a mean of ±1); presets weight and
combine them. Penalties are positive quantities (``overshoot``, ``turns``, ``redundant``) that a
preset gives a negative weight, so a breakdown reads the same whatever the preset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from medseg_agent.rewards.facts import BOX, POINT, STOP, EpisodeFacts, StepFacts
from medseg_agent.vocabulary.numbers import is_finite_number


@dataclass(frozen=True)
class RewardParams:
    """Thresholds used by the terms; every preset can override them (YAML ``params:``)."""

    good_iou: float = 0.9  # a mask this good justifies stopping
    easy_gain: float = 0.05  # a last action that gained this much says more gain was easy
    min_gain: float = 0.005  # smaller IoU changes count as "no gain"
    repeated_box_iou: float = 0.95  # a box this close to the previous one is a repeat
    nsd_tolerance: float = 2.0  # pixels (or the record's spacing unit), when NSD is recomputed
    medsam_free_turns: int = 1  # MedSAM-Agent: single-turn episodes pay no turn cost
    ibis_optimal_steps: int = 5  # IBISAgent: steps up to this many earn len = 1
    ibis_length_gamma: float = 0.2  # IBISAgent: len = -gamma * (steps - optimal) beyond that

    @classmethod
    def from_dict(cls, data: dict, source: str = "params") -> RewardParams:
        whole = {f.name for f in fields(cls) if f.type in (int, "int")}  # a string under postponed annotations
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown parameter(s) {unknown}; expected some of {sorted(known)}")
        values = {}
        for name, value in data.items():
            if not is_finite_number(value):
                raise ValueError(f"{source}.{name}: expected a finite number, got {value!r}")
            accepts, expected = _PARAM_RANGES[name]
            if not accepts(value):
                raise ValueError(f"{source}.{name}: expected {expected}, got {value!r}")
            values[name] = int(value) if name in whole else value
        return cls(**values)


def _fraction(value: float) -> bool:
    return 0.0 <= value <= 1.0


#: What each parameter accepts: a threshold on IoU or on a gain is a fraction, and a negative tolerance,
#: step count or length penalty would turn a term's meaning around without any error.
_PARAM_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "good_iou": (_fraction, "a fraction in [0, 1]"),
    "easy_gain": (_fraction, "a fraction in [0, 1]"),
    "min_gain": (_fraction, "a fraction in [0, 1]"),
    "repeated_box_iou": (_fraction, "a fraction in [0, 1]"),
    "nsd_tolerance": (lambda v: v > 0, "a number > 0"),
    "medsam_free_turns": (lambda v: v >= 0 and v == int(v), "a whole number >= 0"),
    "ibis_optimal_steps": (lambda v: v >= 1 and v == int(v), "a whole number >= 1"),
    "ibis_length_gamma": (lambda v: v >= 0, "a number >= 0"),
}


TermFn = Callable[[EpisodeFacts, RewardParams], float]


@dataclass(frozen=True)
class Term:
    name: str
    fn: TermFn
    description: str
    needs_ground_truth: bool = True


TERMS: dict[str, Term] = {}


def term(name: str, description: str, needs_ground_truth: bool = True) -> Callable[[TermFn], TermFn]:
    def decorator(fn: TermFn) -> TermFn:
        TERMS[name] = Term(name, fn, description, needs_ground_truth)
        return fn

    return decorator


# -- format ------------------------------------------------------------------------------------
@term("format_valid", "share of replies that parsed and were accepted (1 = no invalid reply)", False)
def format_valid(facts: EpisodeFacts, params: RewardParams) -> float:
    if not facts.replies:
        return 0.0
    return sum(s.valid for s in facts.steps) / facts.replies


@term(
    "format_medsam",
    "MedSAM-Agent format: 1 if >=1 box/point AND the last call is stop_action, 0.5 if one holds, else 0",
    False,
)
def format_medsam(facts: EpisodeFacts, params: RewardParams) -> float:
    return 0.5 * (facts.num_tool_turns > 0) + 0.5 * facts.stopped


# -- outcome -----------------------------------------------------------------------------------
@term("outcome_iou", "IoU of the final mask")
def outcome_iou(facts: EpisodeFacts, params: RewardParams) -> float:
    return facts.final_iou


@term("outcome_dice", "Dice of the final mask")
def outcome_dice(facts: EpisodeFacts, params: RewardParams) -> float:
    return facts.final_dice


@term("boundary_nsd", "normalized surface Dice of the final mask (clinically meaningful edges)")
def boundary_nsd(facts: EpisodeFacts, params: RewardParams) -> float:
    return facts.final_nsd


# -- process -----------------------------------------------------------------------------------
@term("improvement", "sum of positive IoU gains of each tool turn over the previous tool turn")
def improvement(facts: EpisodeFacts, params: RewardParams) -> float:
    trace = facts.iou_trace
    return sum(max(0.0, b - a) for a, b in zip(trace, trace[1:], strict=False))


@term("overshoot", "best IoU reached during the episode minus the final IoU (refining past the best)")
def overshoot(facts: EpisodeFacts, params: RewardParams) -> float:
    trace = facts.iou_trace
    return max(0.0, max(trace) - facts.final_iou) if trace else 0.0


@term("turns", "number of tool-running turns (boxes and points)", False)
def turns(facts: EpisodeFacts, params: RewardParams) -> float:
    return float(facts.num_tool_turns)


@term("turn_fraction", "tool-running turns as a share of the turn budget", False)
def turn_fraction(facts: EpisodeFacts, params: RewardParams) -> float:
    return facts.num_tool_turns / max(1, facts.max_turns)


@term(
    "turn_cost_medsam",
    "MedSAM-Agent turn count: the number of tool turns, 0 for single-turn episodes",
    False,
)
def turn_cost_medsam(facts: EpisodeFacts, params: RewardParams) -> float:
    n = facts.num_tool_turns
    return float(n) if n > params.medsam_free_turns else 0.0


@term("redundant", "actions that change nothing, click an already-correct pixel, or repeat the box")
def redundant(facts: EpisodeFacts, params: RewardParams) -> float:
    return float(sum(bool(s.redundant_reasons) for s in facts.steps))


@term(
    "click_correctness",
    "mean over clicks of +1 (positive in the miss / negative in the leak) or -1; boxes only: 1; no action: 0",
)
def click_correctness(facts: EpisodeFacts, params: RewardParams) -> float:
    # A box-only episode made no wrong click (0 would pay an agent for clicking at all); an episode
    # without any tool action earns nothing.
    judged = [s.click_correct for s in facts.steps if s.click_correct is not None]
    if not judged:
        return 1.0 if facts.num_tool_turns else 0.0
    return sum(1.0 if ok else -1.0 for ok in judged) / len(judged)


def _idle_tail(facts: EpisodeFacts, params: RewardParams) -> int:
    """Tool turns after the mask stopped improving (after the last turn that gained ``min_gain``)."""
    steps = facts.tool_steps
    last_gain = -1
    for i, s in enumerate(steps):
        if s.gain is not None and s.gain >= params.min_gain:
            last_gain = i
    return len(steps) - 1 - last_gain if last_gain >= 0 else len(steps)


@term(
    "stopping",
    "+1 justified stop (good mask or progress stalled), -1 stop while still gaining fast below "
    "good_iou, 0 no stop; minus idle turns after progress stopped, as a share of the budget",
)
def stopping(facts: EpisodeFacts, params: RewardParams) -> float:
    steps = facts.tool_steps
    value = 0.0
    if facts.stopped and steps:
        last_gain = steps[-1].gain or 0.0
        premature = facts.final_iou < params.good_iou and last_gain >= params.easy_gain
        value = -1.0 if premature else 1.0
    value -= _idle_tail(facts, params) / max(1, facts.max_turns)
    return max(-1.0, min(1.0, value))


# -- IBISAgent per-step terms (each is the mean over the episode's replies) ---------------------
def ibis_step_terms(step: StepFacts, facts: EpisodeFacts, params: RewardParams) -> dict[str, float]:
    """The five IBISAgent step rewards for one reply (its released ``compute_score``).

    fmt: a valid action (with ``<think>`` and, on termination, ``<answer>`` under the ibis protocol);
    ans: 3/2/1/0 for IoU after the step > 0.8/0.7/0.5; click: ±1 for a point (0 otherwise); pseg: 1 if a
    box/point raised IoU (0 on termination); len: 1 up to ``ibis_optimal_steps``, then
    ``-gamma * (step - optimal)``. Invalid replies score 0 on all but len, as in the released code.
    """
    fmt = step.valid
    if facts.protocol == "ibis":
        fmt = fmt and step.has_reasoning and (step.kind != STOP or step.has_answer)
    ans = 0.0
    if step.valid and step.iou_after is not None:
        value = step.iou_after
        ans = 3.0 if value > 0.8 else 2.0 if value > 0.7 else 1.0 if value > 0.5 else 0.0
    click = 0.0 if step.click_correct is None else (1.0 if step.click_correct else -1.0)
    pseg = 1.0 if step.kind in (BOX, POINT) and (step.gain or 0.0) > 0 else 0.0
    return {"fmt": float(fmt), "ans": ans, "click": click, "pseg": pseg, "len": _ibis_length(step.turn, params)}


def _ibis_length(turn: int, params: RewardParams) -> float:
    if turn <= params.ibis_optimal_steps:
        return 1.0
    return -params.ibis_length_gamma * (turn - params.ibis_optimal_steps)


def ibis_unrecorded_reply_terms(turn: int, params: RewardParams) -> dict[str, float]:
    """The five step rewards of the reply that ended a training rollout without a tool call (it has
    no step in the record): an invalid reply's, 0 on all but len."""
    return {"fmt": 0.0, "ans": 0.0, "click": 0.0, "pseg": 0.0, "len": _ibis_length(turn, params)}


def _ibis_mean(key: str) -> TermFn:
    """The mean over every reply, the one that ended a training rollout without a tool call included."""

    def fn(facts: EpisodeFacts, params: RewardParams) -> float:
        replies = max(facts.replies, len(facts.steps))
        if not replies:
            return 0.0
        total = sum(ibis_step_terms(s, facts, params)[key] for s in facts.steps)
        unrecorded = range(len(facts.steps) + 1, replies + 1)
        return (total + sum(ibis_unrecorded_reply_terms(turn, params)[key] for turn in unrecorded)) / replies

    return fn


for _key, _text in (
    ("fmt", "IBISAgent format (think + action + answer valid), mean over replies"),
    ("ans", "IBISAgent answer level 3/2/1/0 for IoU > .8/.7/.5, mean over replies"),
    ("click", "IBISAgent click placement ±1, mean over replies"),
    ("pseg", "IBISAgent progress: 1 if the step raised IoU, mean over replies"),
    ("len", "IBISAgent length: 1 up to 5 steps, -0.2 per extra step, mean over replies"),
):
    term(f"ibis_{_key}", _text, _key in ("ans", "click", "pseg"))(_ibis_mean(_key))


def evaluate_terms(facts: EpisodeFacts, names: list[str], params: RewardParams) -> dict[str, float]:
    """Values of the named terms. Unknown names fail with the list of known ones."""
    unknown = [n for n in names if n not in TERMS]
    if unknown:
        raise ValueError(f"unknown reward term(s) {unknown}; known terms: {', '.join(sorted(TERMS))}")
    return {name: float(TERMS[name].fn(facts, params)) for name in names}


_WRONG = {
    "correct": "wrong: pixel already right",
    "missed": "wrong: in the miss",
    "leak": "wrong: in the leak",
    None: "-",
}


def step_table(facts: EpisodeFacts, params: RewardParams) -> list[dict[str, object]]:
    """One row per reply, for ``reward explain``: what happened and how each process term saw it."""
    rows = []
    for s in facts.steps:
        rows.append(
            {
                "turn": s.turn,
                "kind": s.kind + ("" if s.kind != POINT else "+" if s.positive else "-"),
                "valid": s.valid,
                "iou": s.iou_after,
                "gain": s.gain,
                "click": None if s.click_correct is None else ("ok" if s.click_correct else _WRONG[s.click_state]),
                "redundant": ",".join(s.redundant_reasons),
                "ibis": ibis_step_terms(s, facts, params),
            }
        )
    return rows
