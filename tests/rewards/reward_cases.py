"""Hand-built trajectory records: exact masks per turn, so expected rewards can be computed by hand."""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg_agent.environment.record import TrajectoryRecord, TurnRecord
from medseg_agent.io.masks import encode_rle
from medseg_agent.metrics import dice, iou, segmentation_metrics
from medseg_agent.vocabulary.actions import AddBox, AddPoint, Stop
from medseg_agent.vocabulary.errors import ActionError, ErrorKind
from medseg_agent.vocabulary.stop import StopReason

SIZE = (10, 10)


def rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Rows r0..r1 and columns c0..c1, inclusive."""
    m = np.zeros(SIZE, dtype=bool)
    m[r0 : r1 + 1, c0 : c1 + 1] = True
    return m


def build_record(
    gt: np.ndarray,
    steps: list[tuple[Any, ...]],
    *,
    protocol: str = "medsam",
    max_turns: int = 5,
    stop_reason: str | None = None,
    policy: str = "hand",
    sample_id: str = "s0",
) -> TrajectoryRecord:
    """steps: ("box", (x1, y1, x2, y2), mask) | ("point", (x, y, positive), mask) |
    ("stop", answer_or_None) | ("error",); add reasoning with a trailing {"reasoning": "..."}."""
    turns = []
    mask = np.zeros(SIZE, dtype=bool)
    interactions = 0
    reason = stop_reason
    for i, step in enumerate(steps, 1):
        extra = step[-1] if isinstance(step[-1], dict) else {}
        kind = step[0]
        turn = TurnRecord(turn=i, reasoning=extra.get("reasoning"))
        if kind == "box":
            turn.action = turn.action_pixels = AddBox(*(float(v) for v in step[1]))
        elif kind == "point":
            x, y, positive = step[1]
            turn.action = turn.action_pixels = AddPoint(float(x), float(y), positive)
        elif kind == "stop":
            turn.action = Stop(step[1] or None)
            reason = reason or StopReason.STOP_ACTION
        else:
            turn.error = ActionError(ErrorKind.NO_ACTION, "no tool call found")
        if kind in ("box", "point"):
            mask = step[2]
            interactions += 1
            turn.mask_rle = encode_rle(mask)
            turn.iou, turn.dice = iou(mask, gt), dice(mask, gt)
        turns.append(turn)
    return TrajectoryRecord(
        sample_id=sample_id,
        dataset="hand",
        target="box",
        image_size=SIZE,
        view_size=SIZE,
        protocol=protocol,
        coordinate_space="norm1000" if protocol == "medsam" else "norm1",
        tool="hand",
        policy=policy,
        max_turns=max_turns,
        turns=turns,
        final_mask_rle=encode_rle(mask),
        gt_mask_rle=encode_rle(gt),
        final_metrics=segmentation_metrics(mask, gt),
        stop_reason=reason or StopReason.TURN_LIMIT,
        num_interactions=interactions,
        num_errors=sum(t.error is not None for t in turns),
    )


def gt_rect() -> np.ndarray:
    return rect(0, 3, 0, 4)  # 4 rows x 5 columns = 20 pixels
