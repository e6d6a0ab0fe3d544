"""The one interface every policy implements: a model, a simulated expert or a clicker."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from medseg_agent.environment.episode import Observation
from medseg_agent.protocols import ActionProtocol
from medseg_agent.tools.base import ToolSession
from medseg_agent.vocabulary.actions import Action, ToolCall
from medseg_agent.vocabulary.coordinates import CoordinateFrame


@dataclass
class EpisodeContext:
    """What a policy may know about the episode.

    ``gt_mask`` is set only for ground-truth policies (expert, clicker); model policies get None.
    """

    target: str
    frame: CoordinateFrame
    protocol: ActionProtocol
    image: np.ndarray
    gt_mask: np.ndarray | None = None
    max_turns: int = 5
    seed: int = 0


@dataclass
class PolicyReply:
    """Either model text (and/or native tool calls) to be parsed, or a ready action."""

    text: str | None = None
    tool_calls: list[ToolCall] | None = None
    action: Action | None = None
    reasoning: str | None = None
    meta: dict = field(default_factory=dict)


class Policy(ABC):
    name: str = "policy"
    #: Ground-truth policies see the mask; the runner refuses to give it to the others.
    uses_ground_truth: bool = False
    #: Look-ahead policies try actions on the episode's tool session before choosing one (the expert):
    #: :func:`~medseg_agent.policies.runner.run_episode` then calls :meth:`bind_session` before reset.
    wants_session: bool = False

    def bind_session(self, session: ToolSession) -> None:
        """Receive the episode's tool session (the image already encoded) for the next episode."""
        return None  # only look-ahead policies keep it

    @abstractmethod
    def reset(self, context: EpisodeContext, observation: Observation) -> None: ...

    @abstractmethod
    def act(self, observation: Observation) -> PolicyReply: ...
