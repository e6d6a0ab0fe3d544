"""Try a candidate action on the episode's tool session without committing it.

The expert's parsimony rule needs the mask an action *would* give before choosing it. The probe
decodes on the same :class:`ToolSession` as the environment (the image is encoded once) and builds
the prompt exactly as :class:`SegmentationEnv` does, so the mask it previews is the mask the
environment produces when the action is then taken (checked in tests/experts).
"""

from __future__ import annotations

from dataclasses import replace

from medseg_agent.tools.base import ToolSession
from medseg_agent.vocabulary.actions import AddBox, AddPoint
from medseg_agent.vocabulary.prompts import Prediction, PromptState


def advance(state: PromptState, action: AddBox | AddPoint) -> PromptState:
    """The prompt state after ``action`` in full-resolution pixels: the environment's own transition."""
    return state.after(action)


class ActionProbe:
    """Previews actions on ``session``; ``calls`` counts decodes spent on look-ahead."""

    def __init__(self, session: ToolSession) -> None:
        self.session = session
        self.calls = 0

    def preview(self, state: PromptState, action: AddBox | AddPoint) -> tuple[PromptState, Prediction]:
        """(state after the action, with its logits; the prediction). ``state`` is left unchanged."""
        after = advance(state, action)
        prediction = self.session.predict(after.to_prompt())
        self.calls += 1
        return replace(after, logits=prediction.logits), prediction
