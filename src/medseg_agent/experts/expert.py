"""The simulated expert: a ground-truth policy that produces human-like, parsimonious trajectories.

Two modes:

``hybrid`` (MedSAM-Agent-style "box then points"): the first action is chosen per target by
:mod:`medseg_agent.experts.strategy` (a jittered ground-truth box for compact targets, a positive
point for thin, elongated or few-part targets, with a seeded random share of the other strategy).
Then corrections: a box redraw when the box cuts the target off, otherwise a click at the
interior-most point of the largest missed (positive) or leaked (negative) region, never on an
earlier click. Parsimony: each candidate is tried on the tool first (:class:`ActionProbe`) and kept
only if it raises IoU by at least ``delta`` (the first action: reaches IoU ``first_min_iou``);
otherwise the next candidate is tried, up to ``max_tries`` (plus, for the first action, one of the
other strategy). When none qualifies, the best one is played if it gains at least ``epsilon`` (the
first action always is), else the expert stops. It also stops when IoU >= ``tau`` or at its
action limit.

``clicks`` (IBISAgent's released generator): empty start, the RITM clicker rule
(:func:`medseg_agent.policies.clicks.next_click`), stop at IoU >= ``tau`` (0.8) or at the turn
limit (20 in the generator).

Every action carries a rationale from the observed geometry (:mod:`medseg_agent.experts.rationale`),
sent as ``<think>`` reasoning when ``reasoning`` is on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medseg_agent.environment.episode import Observation
from medseg_agent.experts import defaults
from medseg_agent.experts import rationale as why
from medseg_agent.experts.probe import ActionProbe
from medseg_agent.experts.strategy import (
    BOX,
    POINT,
    ErrorRegion,
    FirstChoice,
    StrategyRules,
    analyse_target,
    choose_first,
    error_region_at,
    error_regions,
    jittered_box,
    outside_box,
)
from medseg_agent.metrics import iou
from medseg_agent.policies.base import EpisodeContext, Policy, PolicyReply
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.registry import register_policy
from medseg_agent.tools.base import ToolSession
from medseg_agent.vocabulary.actions import ADD_BBOX, AddBox, AddPoint, CoordinateSpace, Stop
from medseg_agent.vocabulary.prompts import Prediction, PromptState

#: When none of the ``max_tries`` largest errors is worth a click, up to this many times as many
#: are tried before the expert stops (a small missed part is still worth a click).
MORE_CLICKS = 3


@dataclass
class Candidate:
    """A possible next action: in model coordinates (``action``) and where it lands (``pixels``)."""

    kind: str  # "box", "redraw", "positive", "negative"
    action: AddBox | AddPoint
    pixels: AddBox | AddPoint
    rationale: str
    state: PromptState | None = None
    prediction: Prediction | None = None
    iou: float = 0.0
    intended: tuple[float, float] | None = None  # the click pixel before rounding to the policy's grid


@dataclass
class EpisodeInfo:
    """What the expert decided, kept in the trajectory record's ``meta["expert"]``."""

    mode: str
    first: str = ""  # strategy played first
    rule: str = ""  # what the rule said
    reason: str = ""
    explored: bool = False
    probes: int = 0  # candidate actions tried on the tool
    rejected: int = 0  # tried and not played
    stop: str = ""  # why it stopped: accurate (IoU >= tau) | no_gain (no click raises IoU) | limit (budget)
    two_step: int = 0  # actions kept for the gain of a two-action plan
    probe_mismatches: int = 0  # previews that differed from the environment's mask (non-deterministic tool)
    kinds: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ExpertPolicy(Policy):
    """Options are keyword arguments (``build_policy("expert", **options)``).

    Look-ahead needs the episode's tool session: :func:`~medseg_agent.policies.runner.run_episode`
    binds it (:meth:`bind_session`) before every episode, so probes reuse the single image encode.
    ``clicks`` mode does not look ahead.
    """

    name = "expert"
    uses_ground_truth = True
    wants_session = True

    def __init__(
        self,
        mode: str = "hybrid",
        *,
        delta: float = defaults.DELTA,
        epsilon: float = defaults.EPSILON,
        tau: float | None = None,
        max_tries: int = defaults.MAX_TRIES,
        first_min_iou: float = defaults.FIRST_MIN_IOU,
        lookahead: bool = True,
        max_actions: int | None = None,
        box_jitter: float = defaults.BOX_JITTER,
        other_share: float = defaults.OTHER_SHARE,
        box_redraw_fraction: float = defaults.BOX_REDRAW_FRACTION,
        reasoning: bool = False,
        rules: StrategyRules | None = None,
    ) -> None:
        if mode not in defaults.MODES:
            raise ValueError(f"expert mode must be one of {', '.join(defaults.MODES)}, got {mode!r}")
        if not 0.0 <= epsilon <= delta:
            raise ValueError(f"need 0 <= epsilon <= delta, got epsilon={epsilon}, delta={delta}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, got {max_tries}")
        for option, value in (("other_share", other_share), ("box_jitter", box_jitter), ("delta", delta),
                              ("first_min_iou", first_min_iou), ("box_redraw_fraction", box_redraw_fraction)):
            if not 0.0 <= value <= 1.0:  # NaN fails too
                raise ValueError(f"{option} must be in [0, 1], got {value}")
        if tau is not None and not 0.0 < tau < float("inf"):
            raise ValueError(f"tau must be a number > 0 (above 1: never stop on IoU), got {tau}")
        if max_actions is not None and max_actions < 1:
            raise ValueError(f"max_actions must be at least 1, got {max_actions}")
        self.mode = mode
        self.delta, self.epsilon = float(delta), float(epsilon)
        self.tau = float(defaults.TAU[mode] if tau is None else tau)
        self.max_tries = int(max_tries)
        self.first_min_iou = float(first_min_iou)
        self.lookahead = bool(lookahead)
        self.max_actions = max_actions
        self.box_jitter = float(box_jitter)
        self.other_share = float(other_share)
        self.box_redraw_fraction = float(box_redraw_fraction)
        self.reasoning = bool(reasoning)
        self.rules = rules or StrategyRules()
        self._next_session: ToolSession | None = None

    # -- episode set-up -----------------------------------------------------------------------
    def bind_session(self, session: ToolSession) -> None:
        """Use ``session`` (the environment's) for look-ahead in the next episode."""
        self._next_session = session

    def reset(self, context: EpisodeContext, observation: Observation) -> None:
        if context.gt_mask is None:
            raise ValueError("the expert policy needs the ground-truth mask (EpisodeContext.gt_mask)")
        self.context = context
        self.gt = np.asarray(context.gt_mask, dtype=bool)
        self.target = context.target
        self.rng = np.random.default_rng(context.seed)
        self.info = EpisodeInfo(self.mode)
        self.actions = 0
        session, self._next_session = self._next_session, None
        self.shape = analyse_target(self.gt, self.rules.min_part_fraction)
        if self.mode == "clicks":
            self.info.first = self.info.rule = "point"
            self._clicker = ClickerPolicy(stop_iou=self.tau)
            self._clicker.reset(context, observation)
            return
        self.can_box = ADD_BBOX in context.protocol.supported_tools
        self.state = PromptState()
        self.clicked: list[tuple[float, float]] = []
        self.expected: np.ndarray | None = None
        self.probe = ActionProbe(self._session(session, context))

    def _session(self, session: ToolSession | None, context: EpisodeContext) -> ToolSession:
        if session is None:
            raise ValueError(
                "the hybrid expert tries candidate actions on the tool before choosing one: call "
                "bind_session(session) with the environment's tool session before reset() "
                "(medseg_agent.policies.runner.run_episode does)"
            )
        if tuple(session.image_size) != tuple(context.image.shape[:2]):
            raise ValueError(
                f"the bound tool session is for an image of size {tuple(session.image_size)}, "
                f"this episode's image is {tuple(context.image.shape[:2])}"
            )
        return session

    @property
    def episode_info(self) -> dict[str, Any]:
        info = self.info.to_dict()
        if self.mode == "hybrid":
            info["probes"] = self.probe.calls
        if not info["stop"] and self.actions >= self._limit():  # the environment ended it: the budget
            info["stop"] = "limit"
        return info

    def _limit(self) -> int:
        """The action budget: this expert's own, within the episode's turn limit."""
        return min(self.max_actions or self.context.max_turns, self.context.max_turns)

    # -- acting -------------------------------------------------------------------------------
    def act(self, observation: Observation) -> PolicyReply:
        if self.mode == "clicks":
            return self._act_clicks(observation)
        mask = observation.mask
        if self.expected is not None and not np.array_equal(mask, self.expected):
            self.info.probe_mismatches += 1
        current = iou(mask, self.gt)
        if self.actions == 0:
            need = max(self.delta, self.first_min_iou)
            return self._commit(self._select(self._first_candidates(), current, must_act=True, need=need))
        if current >= self.tau:
            return self._stop("accurate", mask)
        limit = self._limit()
        if self.actions >= limit:
            return self._stop("limit", mask)
        candidates = self._corrections(mask)
        chosen = self._select(candidates, current, must_act=False, need=self.delta)
        if chosen is None:  # keep clicking while a click still raises IoU: the smaller errors too
            more = self._clicks(mask, start=self.max_tries, limit=MORE_CLICKS * self.max_tries)
            chosen = self._select(more, current, must_act=False, need=self.delta)
            candidates += more
        if chosen is None and self.lookahead and self.actions + 2 <= limit:
            chosen = self._two_steps(candidates, current)
        if chosen is None:
            return self._stop("no_gain", mask)
        return self._commit(chosen)

    def _two_steps(self, candidates: list[Candidate], current: float) -> Candidate | None:
        """When no single action helps: the candidate whose best follow-up click gains >= delta over
        the two actions (a tool may need a click to undo a leak before a far-away part appears)."""
        best, best_iou = None, current + self.delta
        for candidate in candidates:
            assert candidate.state is not None and candidate.prediction is not None  # tried by _select
            clicked = self.clicked + self._clicks_of(candidate)
            for region in error_regions(candidate.prediction.mask, self.gt, clicked, limit=self.max_tries):
                follow = self._click(region, "")
                _, prediction = self.probe.preview(candidate.state, follow.pixels)
                value = iou(prediction.mask, self.gt)
                if value >= best_iou:
                    best, best_iou = candidate, value
        if best is not None:
            self.info.two_step += 1
            self.info.rejected -= 1  # it was counted as rejected by _select
        return best

    def _select(
        self, candidates: list[Candidate], current: float, must_act: bool, need: float
    ) -> Candidate | None:
        """Parsimony: the first candidate gaining >= ``need``; else the best if it gains >= epsilon."""
        chosen: Candidate | None = None
        best: Candidate | None = None
        tried = 0
        for candidate in candidates:
            tried += 1
            candidate.state, candidate.prediction = self.probe.preview(self.state, candidate.pixels)
            candidate.iou = iou(candidate.prediction.mask, self.gt)
            if candidate.iou - current >= need:
                chosen = candidate
                break
            if best is None or candidate.iou > best.iou:
                best = candidate
        if chosen is None and best is not None and (must_act or best.iou - current >= self.epsilon):
            chosen = best
        self.info.rejected += tried - (chosen is not None)
        return chosen

    def _commit(self, candidate: Candidate) -> PolicyReply:
        assert candidate.state is not None and candidate.prediction is not None
        self.state = candidate.state
        self.expected = candidate.prediction.mask
        self.actions += 1
        self.info.kinds.append(candidate.kind)
        self.clicked += self._clicks_of(candidate)
        return PolicyReply(action=candidate.action, reasoning=candidate.rationale if self.reasoning else None)

    @staticmethod
    def _clicks_of(candidate: Candidate) -> list[tuple[float, float]]:
        """The pixels a click candidate occupies: where it was aimed and where it lands on the grid."""
        if not isinstance(candidate.pixels, AddPoint):
            return []
        aimed = [candidate.intended] if candidate.intended is not None else []
        return [*aimed, (candidate.pixels.x, candidate.pixels.y)]

    def _stop(self, reason: str, mask: np.ndarray) -> PolicyReply:
        self.info.stop = reason
        largest = next(iter(error_regions(mask, self.gt, self.clicked, limit=1)), None)
        text = why.stop_rationale(self.target, reason, largest, self.gt)
        return PolicyReply(action=Stop(answer=self._answer()), reasoning=text if self.reasoning else None)

    def _answer(self) -> str:
        return f"The {why.short_target(self.target)} is segmented."

    # -- candidates ---------------------------------------------------------------------------
    def _first_candidates(self) -> list[Candidate]:
        choice = choose_first(self.shape, self.rng, self.rules, self.other_share, self.can_box)
        self.info.first, self.info.rule = choice.strategy, choice.rule
        self.info.reason, self.info.explored = choice.reason, choice.explored
        text = why.first_action_rationale(self.target, self.shape, choice, self.gt)
        primary = self._box_candidates(text) if choice.strategy == BOX else self._first_points(text)
        candidates = primary[: self.max_tries]
        if self.can_box:  # the other strategy, once, when every primary candidate falls short
            other = FirstChoice(POINT if choice.strategy == BOX else BOX, choice.rule, choice.reason, True)
            other_text = why.first_action_rationale(self.target, self.shape, other, self.gt)
            fallback = (
                self._first_points(other_text) if choice.strategy == BOX else self._box_candidates(other_text)
            )
            candidates += fallback[:1]
        return candidates

    def _box_candidates(self, text: str) -> list[Candidate]:
        """Jittered boxes, each retry drawn more carefully (half the jitter)."""
        h, w = self.gt.shape
        return [
            self._box(jittered_box(self.shape.bbox, (h, w), self.rng, self.box_jitter * 0.5**k), text, "box")
            for k in range(self.max_tries)
        ]

    def _first_points(self, text: str) -> list[Candidate]:
        """A positive point in the largest part; retries go to the next parts (their own rationale)."""
        regions = error_regions(np.zeros_like(self.gt), self.gt, limit=self.max_tries)
        return [
            self._click(r, text if i == 0 else why.click_rationale(self.target, r, self.gt, self.shape.bbox))
            for i, r in enumerate(regions)
        ]

    def _corrections(self, mask: np.ndarray) -> list[Candidate]:
        """A box redraw when the box cuts the target off, and clicks on the largest errors; on a
        target in several parts the clicks come first (a new box replaces the mask of every part)."""
        redraw = []
        box = self.state.box
        if self.can_box and box is not None:
            cut = outside_box(self.gt, box)
            fraction = float(cut.sum()) / self.shape.area
            if fraction >= self.box_redraw_fraction:
                text = why.redraw_rationale(self.target, box, self.shape.bbox, fraction)
                h, w = self.gt.shape
                redrawn = jittered_box(self.shape.bbox, (h, w), self.rng, self.box_jitter * 0.25)
                redraw.append(self._box(redrawn, text, "redraw"))
        clicks = self._clicks(mask, start=0, limit=self.max_tries)
        candidates = clicks + redraw if self.shape.parts > 1 else redraw + clicks
        return candidates[: self.max_tries]

    def _clicks(self, mask: np.ndarray, start: int, limit: int) -> list[Candidate]:
        """Clicks on the error regions ranked ``start`` to ``limit`` (largest first)."""
        regions = error_regions(mask, self.gt, self.clicked, limit=limit)[start:]
        return [self._click(r, why.click_rationale(self.target, r, self.gt, self.shape.bbox)) for r in regions]

    def _box(self, box: tuple[float, float, float, float], text: str, kind: str) -> Candidate:
        frame = self.context.frame
        x1, y1 = frame.from_pixels(box[0], box[1])
        x2, y2 = frame.from_pixels(box[2], box[3])
        ux, uy = frame.upper
        step = 1e-4 if frame.space is CoordinateSpace.NORM1 else 1.0
        if x2 <= x1:  # a box thinner than the grid: widen it by one grid step
            x1, x2 = max(0.0, x1 - step), min(ux, x2 + step)
        if y2 <= y1:
            y1, y2 = max(0.0, y1 - step), min(uy, y2 + step)
        action = AddBox(x1, y1, x2, y2)
        (px1, py1), (px2, py2) = frame.to_pixels(x1, y1), frame.to_pixels(x2, y2)
        return Candidate(kind, action, AddBox(px1, py1, px2, py2), text)

    def _click(self, region: ErrorRegion, text: str) -> Candidate:
        frame = self.context.frame
        x, y = frame.from_pixels(region.x, region.y)
        px, py = frame.to_pixels(x, y)
        kind = "positive" if region.positive else "negative"
        return Candidate(
            kind,
            AddPoint(x, y, region.positive),
            AddPoint(px, py, region.positive),
            text,
            intended=(float(region.x), float(region.y)),
        )

    # -- clicks-only mode ---------------------------------------------------------------------
    def _act_clicks(self, observation: Observation) -> PolicyReply:
        reply = self._clicker.act(observation)
        mask = observation.mask
        if isinstance(reply.action, Stop):
            accurate = iou(mask, self.gt) >= self.tau
            self.info.stop = "accurate" if accurate else "no_gain"
            text = why.stop_rationale(
                self.target, self.info.stop, None if accurate else self._largest(mask), self.gt
            )
            return PolicyReply(action=Stop(answer=self._answer()), reasoning=text if self.reasoning else None)
        x, y = (int(v) for v in self._clicker.clicked[-2])  # the intended pixel (clicker keeps it first)
        region = error_region_at(mask, self.gt, x, y)
        self.actions += 1
        kind = "positive" if reply.action.positive else "negative"
        self.info.kinds.append(kind)
        text = why.click_rationale(self.target, region, self.gt, self.shape.bbox) if region else None
        return PolicyReply(action=reply.action, reasoning=text if self.reasoning else None)

    def _largest(self, mask: np.ndarray) -> ErrorRegion | None:
        return next(iter(error_regions(mask, self.gt, self._clicker.clicked, limit=1)), None)


def register_expert_policy() -> None:
    """Entry point (group ``medseg_agent.policies``): ``build_policy("expert", **options)``."""
    register_policy("expert", ExpertPolicy)
