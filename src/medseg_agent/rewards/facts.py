"""What a reward needs to know about an episode, derived once from a trajectory record.

Every reward term is a pure function of :class:`EpisodeFacts`: per-reply facts (what was done, was it
valid, the IoU before and after, where a click landed relative to the error regions) plus the final
scores. Masks are decoded from the record exactly (RLE or PNG), so terms that look at pixels (click
correctness, redundancy) see the masks the policy saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg_agent.environment.record import TrajectoryRecord, final_mask, gt_mask, turn_masks
from medseg_agent.metrics import box_iou, dice, iou, normalized_surface_dice
from medseg_agent.vocabulary.actions import Action, AddBox, AddPoint, Stop
from medseg_agent.vocabulary.errors import ActionError
from medseg_agent.vocabulary.stop import StopReason

BOX, POINT, STOP, ERROR, NONE = "box", "point", "stop", "error", "none"


@dataclass
class StepFacts:
    """One policy reply. ``iou_before``/``iou_after`` are None when there is no ground truth."""

    turn: int  # 1-based reply index, as in the record
    kind: str  # box | point | stop | error | none
    valid: bool  # parsed and accepted by the environment
    has_reasoning: bool
    has_answer: bool  # a stop carrying an IBIS-style final answer
    iou_before: float | None
    iou_after: float | None
    dice_after: float | None
    changed_mask: bool = False
    point_xy: tuple[int, int] | None = None  # full-resolution pixel, for points
    positive: bool | None = None
    box_xyxy: tuple[float, float, float, float] | None = None  # full-resolution pixels, for boxes
    click_state: str | None = None  # "missed" (FN), "leak" (FP), "correct" (pixel already right)
    repeated_box: bool = False

    @property
    def ran_tool(self) -> bool:
        return self.kind in (BOX, POINT)

    @property
    def gain(self) -> float | None:
        if self.iou_before is None or self.iou_after is None:
            return None
        return self.iou_after - self.iou_before

    @property
    def click_correct(self) -> bool | None:
        """IBIS rule: a positive click in the missed region or a negative click in the leak."""
        if self.kind != POINT or self.click_state is None:
            return None
        return self.click_state == ("missed" if self.positive else "leak")

    @property
    def redundant_reasons(self) -> list[str]:
        reasons = []
        if self.ran_tool and not self.changed_mask:
            reasons.append("no_change")
        if self.kind == POINT and self.click_state == "correct":
            reasons.append("correct_pixel")
        if self.repeated_box:
            reasons.append("repeated_box")
        return reasons


@dataclass
class EpisodeFacts:
    protocol: str
    max_turns: int
    stop_reason: StopReason | None
    has_ground_truth: bool
    steps: list[StepFacts] = field(default_factory=list)
    final_iou: float = 0.0
    final_dice: float = 0.0
    final_nsd: float = 0.0
    #: the policy's replies: ``steps`` and, when a training engine ended the episode because a reply
    #: called no tool, that reply (see :attr:`TrajectoryRecord.num_replies`)
    replies: int = 0

    @property
    def stopped(self) -> bool:
        return self.stop_reason is StopReason.STOP_ACTION

    @property
    def tool_steps(self) -> list[StepFacts]:
        return [s for s in self.steps if s.ran_tool]

    @property
    def num_tool_turns(self) -> int:
        return len(self.tool_steps)

    @property
    def iou_trace(self) -> list[float]:
        """IoU after every tool-running turn (ground-truth records only)."""
        return [s.iou_after for s in self.tool_steps if s.iou_after is not None]


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _step_kind(action: Action | None, error: ActionError | None) -> str:
    if error is not None:
        return ERROR
    if isinstance(action, AddBox):
        return BOX
    if isinstance(action, AddPoint):
        return POINT
    return STOP if isinstance(action, Stop) else NONE


def episode_facts(
    record: TrajectoryRecord,
    base: Path | None = None,
    *,
    nsd_tolerance: float = 2.0,
    repeated_box_iou: float = 0.95,
) -> EpisodeFacts:
    """Derive :class:`EpisodeFacts` from ``record`` (``base``: the record's folder, for PNG masks).

    A box counts as repeated when its IoU with the previous box is at least ``repeated_box_iou``.
    """
    gt = gt_mask(record)
    h, w = record.image_size
    masks_after = iter(turn_masks(record, base))
    current = np.zeros((h, w), dtype=bool)
    current_iou = iou(current, gt) if gt is not None else None
    last_box: tuple[float, float, float, float] | None = None
    steps: list[StepFacts] = []
    for turn in record.turns:
        kind = _step_kind(turn.action, turn.error)
        step = StepFacts(
            turn=turn.turn,
            kind=kind,
            valid=turn.error is None and kind != NONE,
            has_reasoning=bool(turn.reasoning and turn.reasoning.strip()),
            has_answer=isinstance(turn.action, Stop) and bool(turn.action.answer),
            iou_before=current_iou,
            iou_after=current_iou,
            dice_after=dice(current, gt) if gt is not None else None,
        )
        if kind in (BOX, POINT):
            after = next(masks_after)
            pixels = turn.action_pixels
            if isinstance(pixels, AddPoint):
                x = min(max(round(pixels.x), 0), w - 1)
                y = min(max(round(pixels.y), 0), h - 1)
                step.point_xy = (x, y)
                step.positive = pixels.positive
                if gt is not None:
                    if gt[y, x] == current[y, x]:
                        step.click_state = "correct"
                    else:
                        step.click_state = "missed" if gt[y, x] else "leak"
            elif isinstance(pixels, AddBox):
                box = (pixels.x1, pixels.y1, pixels.x2, pixels.y2)
                step.box_xyxy = box
                step.repeated_box = last_box is not None and box_iou(last_box, box) >= repeated_box_iou
                last_box = box
            step.changed_mask = not np.array_equal(after, current)
            current = after
            if gt is not None:
                step.iou_after = _finite(turn.iou) if turn.iou is not None else iou(current, gt)
                step.dice_after = _finite(turn.dice) if turn.dice is not None else dice(current, gt)
                current_iou = step.iou_after
        steps.append(step)
    facts = EpisodeFacts(
        protocol=record.protocol,
        max_turns=record.max_turns,
        stop_reason=record.stop_reason,
        has_ground_truth=gt is not None,
        steps=steps,
        replies=record.num_replies,
    )
    if gt is not None:
        metrics = record.final_metrics or {}
        final = final_mask(record, base) if record.final_mask_rle or record.final_mask_png else current
        facts.final_iou = _finite(metrics.get("iou")) if metrics.get("iou") is not None else iou(final, gt)
        facts.final_dice = _finite(metrics.get("dice")) if metrics.get("dice") is not None else dice(final, gt)
        nsd = _finite(metrics.get("nsd"))
        if nsd is None:
            nsd = normalized_surface_dice(final, gt, nsd_tolerance, record.spacing)
        facts.final_nsd = nsd
    return facts
