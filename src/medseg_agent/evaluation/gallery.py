"""An overlay gallery of the best, median and worst cases by Dice.

Each panel is the last view the policy saw (rebuilt from the record by
:func:`medseg_agent.environment.replay.replay_views`: final mask in green, clicks and box drawn) with
the ground-truth outline in magenta, so a reader sees both what was segmented and what was wanted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from medseg_agent.environment.record import TrajectoryRecord, gt_mask
from medseg_agent.environment.replay import replay_views
from medseg_agent.evaluation.summary import SampleResult

GT_COLOR = (255, 0, 255)


def pick_cases(results: Sequence[SampleResult], per_row: int = 4) -> dict[str, list[SampleResult]]:
    """Up to ``per_row`` best, median and worst scored samples by Dice (ties broken by key)."""
    ranked = sorted((r for r in results if r.scored), key=lambda r: (-float(r.dice), r.key))
    if not ranked:
        return {}
    k = max(1, min(per_row, len(ranked) // 3))  # rows overlap as little as the sample count allows
    middle = max(0, len(ranked) // 2 - k // 2)
    return {"best": ranked[:k], "median": ranked[middle : middle + k], "worst": ranked[-k:][::-1]}


def panel(record: TrajectoryRecord, image: np.ndarray) -> np.ndarray:
    """The final view with the ground-truth outline drawn on it."""
    view = replay_views(record, image)[-1].copy()
    gt = gt_mask(record)
    if gt is not None and gt.any():
        vh, vw = view.shape[:2]
        small = cv2.resize(gt.astype(np.uint8), (vw, vh), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(view, contours, -1, GT_COLOR, max(1, round(max(vh, vw) / 256)))
    return view


def write_gallery(
    results: Sequence[SampleResult],
    record_of: Callable[[str], TrajectoryRecord | None],
    image_of: Callable[[str], np.ndarray | None],
    path: str | Path,
    per_row: int = 4,
) -> Path | None:
    """Save the gallery PNG; None when nothing is scored. Samples whose image is unavailable are
    left out of their row."""
    from medseg_agent.evaluation.plots import pyplot, save_figure

    cases = pick_cases(results, per_row)
    if not cases:
        return None
    plt = pyplot()
    columns = max(len(row) for row in cases.values())
    fig, axes = plt.subplots(len(cases), columns, figsize=(3 * columns, 3.3 * len(cases)), squeeze=False)
    for row_index, (label, members) in enumerate(cases.items()):
        for col in range(columns):
            ax = axes[row_index][col]
            ax.axis("off")
            if col >= len(members):
                continue
            result = members[col]
            record, image = record_of(result.key), image_of(result.key)
            if record is None or image is None:
                continue
            ax.imshow(panel(record, image))
            ax.set_title(
                f"{label}: Dice {result.dice:.3f}\n{result.target[:38]}\n{result.modality} · {result.turns} turns",
                fontsize=7,
            )
    fig.suptitle("final mask (green) vs ground truth (magenta)", fontsize=9)
    out = save_figure(fig, Path(path))
    plt.close(fig)
    return out
