"""An episode that a person and an agent share, with undo and redo.

Either side may act at any turn: an agent turn is the policy's ``act`` followed by the environment's
``step``; a person's box or click is a ``step`` with a ready action. Every turn of the record says
who acted (``TurnRecord.actor``). The episode keeps the list of steps that made the current state; undo and redo move
between versions of that list and rebuild the environment from it (one decode per step, the image
embedding is reused), so the record always replays to the mask on screen.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from medseg_agent.environment.episode import Observation, SegmentationEnv
from medseg_agent.environment.record import Actor, TrajectoryRecord
from medseg_agent.environment.replay import conversation_from_record
from medseg_agent.policies.base import EpisodeContext, Policy
from medseg_agent.policies.chat import ChatPolicy
from medseg_agent.tools.base import ToolSession
from medseg_agent.vocabulary.actions import Action, AddBox, AddPoint, Stop, ToolCall
from medseg_agent.vocabulary.prompts import PromptState
from medseg_agent.vocabulary.sample import Sample

AGENT: Actor = "agent"
PERSON: Actor = "person"
MAX_VERSIONS = 256  # undo depth


class EpisodeClosed(RuntimeError):
    """The episode has ended (stop, turn limit, too many invalid replies); undo to continue."""


class NothingToUndo(RuntimeError):
    """Undo or redo with no version to go to."""


class InvalidPersonAction(ValueError):
    """A person's box or click the environment cannot take (outside the image, an empty box)."""


@dataclass(frozen=True)
class Step:
    """One turn as given to the environment: a person's ready action or an agent's raw reply."""

    actor: Actor
    action: Action | None = None
    text: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    reasoning: str | None = None
    policy_seconds: float = 0.0
    meta: dict = field(default_factory=dict, compare=False)


class SharedEpisode:
    """One image, one target, one tool session; steps by a person or by ``policy``.

    ``session`` is the tool session of the image (encoded once); rebuilding after undo reuses it.
    ``policy`` may be None (manual annotation). Not thread-safe: callers run one operation at a time.
    """

    def __init__(
        self,
        env: SegmentationEnv,
        sample: Sample,
        session: ToolSession,
        policy: Policy | None = None,
        *,
        seed: int = 0,
        has_ground_truth: bool = False,
    ) -> None:
        self.env = env
        self.sample = sample
        self.session = session
        self.policy = policy
        #: ``record.policy``: the agent the episode started with, kept when another agent takes over
        self.policy_name = policy.name if policy is not None else PERSON
        self.seed = seed
        self.has_ground_truth = has_ground_truth
        self.steps: tuple[Step, ...] = ()
        self._undo: list[tuple[Step, ...]] = []
        self._redo: list[tuple[Step, ...]] = []
        self.undone_steps: list[Step] = []  # steps a person undid, kept for the record's meta
        self._policy_synced_turns: int | None = None  # turns the policy's own history matches
        self.observation = self._rebuild(())

    # -- state ------------------------------------------------------------------------------------
    @property
    def record(self) -> TrajectoryRecord:
        record = self.env.record
        if record is None:
            raise RuntimeError("the episode has no record (the environment was never reset)")
        return record

    @property
    def mask(self) -> np.ndarray:
        return self.observation.mask

    @property
    def prompt(self) -> PromptState:
        return self.env.state

    @property
    def done(self) -> bool:
        return self.observation.done

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def actors(self) -> list[Actor]:
        """Who acted at each turn, read from the record."""
        return [turn.actor for turn in self.record.turns]

    @property
    def interactions(self) -> int:
        """Boxes and clicks that ran the tool so far (the turn budget counts these)."""
        return len(self.record.action_turns())

    # -- a person's actions (full-resolution pixels) ----------------------------------------------
    def person_box(self, x1: float, y1: float, x2: float, y2: float) -> Observation:
        h, w = self.env.image.shape[:2]
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        for x, y in ((x1, y1), (x2, y2)):
            _check_inside(x, y, h, w, "box corner")
        frame = self.env.frame
        mx1, my1 = frame.from_pixels(x1, y1)
        mx2, my2 = frame.from_pixels(x2, y2)
        if mx1 >= mx2 or my1 >= my2:
            raise InvalidPersonAction(
                f"the box ({x1:.0f}, {y1:.0f}) - ({x2:.0f}, {y2:.0f}) is too small to express in "
                f"{frame.space} coordinates; drag a larger box"
            )
        return self.apply(Step(PERSON, action=AddBox(mx1, my1, mx2, my2)))

    def person_point(self, x: float, y: float, positive: bool) -> Observation:
        h, w = self.env.image.shape[:2]
        _check_inside(x, y, h, w, "click")
        mx, my = self.env.frame.from_pixels(x, y)
        return self.apply(Step(PERSON, action=AddPoint(mx, my, positive)))

    def person_stop(self) -> Observation:
        """The person accepts the mask: a stop turn by the person ends the episode."""
        if self.interactions == 0:
            raise InvalidPersonAction("nothing is segmented yet: draw a box or click on the target first")
        return self.apply(Step(PERSON, action=Stop()))

    # -- the agent ----------------------------------------------------------------------------------
    def set_policy(self, policy: Policy | None) -> None:
        """Hand the episode to another agent (or to nobody); it reads the turns so far first."""
        self.policy = policy
        self._policy_synced_turns = None

    def agent_turn(self) -> Observation:
        """Ask the policy for one reply and apply it. Raises what the policy raises when its model
        cannot be queried (nothing changes then)."""
        if self.policy is None:
            raise RuntimeError("this episode has no agent; choose one when starting it")
        if self.done:
            raise EpisodeClosed(self._closed_message())
        self._sync_policy()
        started = time.perf_counter()
        reply = self.policy.act(self.observation)
        elapsed = time.perf_counter() - started
        step = Step(
            AGENT,
            action=reply.action,
            text=reply.text,
            tool_calls=tuple(reply.tool_calls) if reply.tool_calls else None,
            reasoning=reply.reasoning,
            policy_seconds=elapsed,
            meta=dict(reply.meta),
        )
        observation = self.apply(step)
        self._policy_synced_turns = len(self.record.turns)
        return observation

    def _sync_policy(self) -> None:
        """Bring the policy's history to the record: a person's turns read as the assistant's own."""
        turns = len(self.record.turns)
        if self._policy_synced_turns == turns:
            return
        policy = self.policy
        assert policy is not None
        context = EpisodeContext(
            target=self.sample.target,
            frame=self.env.frame,
            protocol=self.env.protocol,
            image=self.env.image,
            gt_mask=None,
            max_turns=self.env.config.max_turns,
            seed=self.seed,
        )
        if turns == 0:
            policy.reset(context, self.observation)
        elif isinstance(policy, ChatPolicy):
            policy.resume(context, conversation_from_record(self.record, self.env.image))
        else:
            raise RuntimeError(
                f"policy {policy.name!r} cannot continue an episode a person changed; only chat policies can"
            )
        self._policy_synced_turns = turns

    # -- steps, undo, redo ----------------------------------------------------------------------------
    def apply(self, step: Step) -> Observation:
        if self.done:
            raise EpisodeClosed(self._closed_message())
        self.observation = self._step(step)
        self._remember(self.steps)
        self.steps = (*self.steps, step)
        self._redo.clear()
        return self.observation

    def reset(self) -> Observation:
        """Back to the bare image (undoable)."""
        if not self.steps:
            return self.observation
        self._remember(self.steps)
        self._redo.clear()
        self._count_undone(self.steps, ())
        self.observation = self._rebuild(())
        return self.observation

    def undo(self) -> Observation:
        if not self._undo:
            raise NothingToUndo("nothing to undo")
        previous = self._undo.pop()
        self._redo.append(self.steps)
        self._count_undone(self.steps, previous)
        self.observation = self._rebuild(previous)
        return self.observation

    def redo(self) -> Observation:
        if not self._redo:
            raise NothingToUndo("nothing to redo")
        target = self._redo.pop()
        self._remember(self.steps)
        self._count_undone(self.steps, target)
        if target[: len(self.steps)] == self.steps and len(target) == len(self.steps) + 1:
            self.observation = self._step(target[-1])
            self.steps = target
        else:
            self.observation = self._rebuild(target)
        return self.observation

    def _count_undone(self, before: tuple[Step, ...], after: tuple[Step, ...]) -> None:
        """Keep :attr:`undone_steps` to the steps a person took back and did not bring back."""
        shared = len(_common_prefix(before, after))
        self.undone_steps.extend(before[shared:])
        for step in after[shared:]:
            if step in self.undone_steps:
                del self.undone_steps[len(self.undone_steps) - 1 - self.undone_steps[::-1].index(step)]

    def _remember(self, steps: tuple[Step, ...]) -> None:
        self._undo.append(steps)
        del self._undo[:-MAX_VERSIONS]

    def _rebuild(self, steps: tuple[Step, ...]) -> Observation:
        sample = self.sample if self.has_ground_truth else dataclasses.replace(self.sample, mask=None)
        observation = self.env.reset(
            sample,
            session=self.session,
            options={"policy": self.policy_name, "seed": self.seed},
        )
        self.observation = observation
        for step in steps:
            observation = self._step(step)
        self.steps = steps
        self._policy_synced_turns = None
        return observation

    def _step(self, step: Step) -> Observation:
        env, seconds, actor = self.env, step.policy_seconds, step.actor
        if step.action is not None:
            observation = env.step(
                step.action, text=step.text, reasoning=step.reasoning, policy_seconds=seconds, actor=actor
            )
        elif step.tool_calls:
            observation = env.step(list(step.tool_calls), text=step.text, policy_seconds=seconds, actor=actor)
        else:
            observation = env.step(step.text, policy_seconds=seconds, actor=actor)
        if step.meta:
            turn = self.record.turns[-1]
            self.record.meta.setdefault("policy_meta", {})[str(turn.turn)] = step.meta
        self.observation = observation
        return observation

    def _closed_message(self) -> str:
        return f"the episode has ended ({self.record.stop_reason}); undo to continue, or save it"

    # -- summary for the record ------------------------------------------------------------------------
    def annotated_record(self, extra: dict | None = None) -> TrajectoryRecord:
        """A copy of the record with who-did-what in ``meta["annotation"]``."""
        record = self.record.model_copy(deep=True)
        person = sum(1 for a in self.actors if a == PERSON)
        agent = sum(1 for a in self.actors if a == AGENT)
        record.meta["annotation"] = {
            "person_turns": person,
            "agent_turns": agent,
            "corrected": person > 0 and agent > 0,
            "undone_agent_turns": sum(1 for s in self.undone_steps if s.actor == AGENT),
            "undone_person_turns": sum(1 for s in self.undone_steps if s.actor == PERSON),
            **(extra or {}),
        }
        return record


def _check_inside(x: float, y: float, h: int, w: int, what: str) -> None:
    if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= w - 1 and 0 <= y <= h - 1):
        raise InvalidPersonAction(
            f"{what} ({x:g}, {y:g}) is outside the image: expected x in [0, {w - 1}] and y in [0, {h - 1}]"
        )


def _common_prefix(a: tuple[Step, ...], b: tuple[Step, ...]) -> tuple[Step, ...]:
    n = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        n += 1
    return a[:n]
