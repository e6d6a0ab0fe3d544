"""The box-only baseline: the tight ground-truth box, then stop. What one perfect box buys with a tool."""

from __future__ import annotations

import numpy as np

from medseg_agent.environment.episode import Observation
from medseg_agent.policies.base import EpisodeContext, Policy, PolicyReply
from medseg_agent.vocabulary.actions import AddBox, Stop


class BoxOnlyPolicy(Policy):
    """One box from the ground truth's bounding box (rounded to the policy's grid), then stop."""

    name = "box-only"
    uses_ground_truth = True

    def reset(self, context: EpisodeContext, observation: Observation) -> None:
        if context.gt_mask is None:
            raise ValueError("the box-only policy needs a ground-truth mask")
        self.context = context
        self.boxed = False

    def act(self, observation: Observation) -> PolicyReply:
        if self.boxed:
            return PolicyReply(action=Stop())
        self.boxed = True
        ys, xs = np.nonzero(self.context.gt_mask)
        if len(xs) == 0:
            raise ValueError("the box-only policy needs a non-empty ground-truth mask")
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
        frame = self.context.frame
        (a, b), (c, d) = frame.from_pixels(x1, y1), frame.from_pixels(x2, y2)
        return PolicyReply(action=AddBox(a, b, max(c, a + 1), max(d, b + 1)))
