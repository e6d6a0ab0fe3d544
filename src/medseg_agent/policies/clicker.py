"""The RITM clicker as a policy: corrective clicks only, from an empty start."""

from __future__ import annotations

from medseg_agent.environment.episode import Observation
from medseg_agent.metrics import iou
from medseg_agent.policies.base import EpisodeContext, Policy, PolicyReply
from medseg_agent.policies.clicks import next_click
from medseg_agent.vocabulary.actions import AddPoint, Stop


class ClickerPolicy(Policy):
    """Clicks where the error is deepest; stops at ``stop_iou`` (None: never, for NoC curves)."""

    name = "clicker"
    uses_ground_truth = True

    def __init__(self, stop_iou: float | None = 0.9) -> None:
        if stop_iou is not None and not 0.0 < stop_iou <= 1.0:
            raise ValueError(f"stop_iou must be in (0, 1] (or None: never stop), got {stop_iou}")
        self.stop_iou = stop_iou

    def reset(self, context: EpisodeContext, observation: Observation) -> None:
        if context.gt_mask is None:
            raise ValueError("the clicker policy needs a ground-truth mask")
        self.context = context
        self.clicked: list[tuple[float, float]] = []

    def act(self, observation: Observation) -> PolicyReply:
        gt = self.context.gt_mask
        current = observation.mask
        if self.clicked and self.stop_iou is not None and iou(current, gt) >= self.stop_iou:
            return PolicyReply(action=Stop())
        click = next_click(current, gt, self.clicked)
        if click is None:
            return PolicyReply(action=Stop())
        x, y = self.context.frame.from_pixels(click.x, click.y)
        # Remember where the click lands after rounding to the policy's grid, and the intended pixel.
        self.clicked += [(click.x, click.y), self.context.frame.to_pixels(x, y)]
        return PolicyReply(action=AddPoint(x, y, click.positive))
