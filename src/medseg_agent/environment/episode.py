"""The multi-turn segmentation environment: the heart of the toolkit, shaped like a Gymnasium env.

An episode holds one :class:`Sample` (image, target, optionally the ground truth) and one tool
session (the image is encoded once, at :meth:`SegmentationEnv.reset`). :meth:`~SegmentationEnv.step`
takes a policy's reply (an action, raw text or structured tool calls), parses it with the episode's
protocol, updates the prompt state with SAM-family semantics and returns the next observation, which
says whether the episode is ``terminated`` (the policy stopped) or ``truncated`` (turn or error
budget). Callers that end an episode from outside (TRL's and verl's tool loops) call
:meth:`~SegmentationEnv.close`. Malformed replies become error observations; they never crash the
episode. Rewards stay outside: they are functions of the record (:mod:`medseg_agent.rewards`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg_agent.environment.record import Actor, TrajectoryRecord, TurnRecord
from medseg_agent.environment.render import render_overlay, resize_view, tinted
from medseg_agent.io.masks import encode_rle
from medseg_agent.metrics import dice, iou, segmentation_metrics
from medseg_agent.protocols import ActionProtocol, get_protocol
from medseg_agent.protocols.base import clean_reply
from medseg_agent.tools.base import SegmentationTool, ToolSession
from medseg_agent.vocabulary.actions import Action, AddBox, AddPoint, CoordinateSpace, Stop, ToolCall
from medseg_agent.vocabulary.coordinates import CoordinateFrame, view_size_for
from medseg_agent.vocabulary.errors import ActionError, ErrorKind
from medseg_agent.vocabulary.images import as_rgb_uint8
from medseg_agent.vocabulary.prompts import PromptState
from medseg_agent.vocabulary.sample import Sample
from medseg_agent.vocabulary.stop import StopReason


@dataclass
class EpisodeConfig:
    """Options of an episode. Defaults follow the reference system (5 turns, 512 view, 0–999 grid)."""

    max_turns: int = 5  # interaction turns: tool-running actions (boxes and points)
    protocol: str = "medsam"
    coordinate_space: CoordinateSpace | None = None  # None: the protocol's own
    view_longest_side: int | None = 512
    max_consecutive_errors: int = 2  # the episode ends on this many invalid replies in a row
    first_stop_retries: int = 1  # a stop before any mask exists is refused this many times
    nsd_tolerance: float = 2.0
    keep_masks: bool = True  # store every turn's mask in the record (RLE)


#: What :meth:`SegmentationEnv.step` takes: a ready action, a raw reply text or structured tool calls.
Reply = Action | str | Sequence[ToolCall] | None
#: Keys :meth:`SegmentationEnv.reset` accepts in ``options``.
RESET_OPTIONS = ("policy", "seed")


@dataclass
class Observation:
    image: np.ndarray  # the view the policy sees, RGB uint8
    text: str
    mask: np.ndarray  # current full-resolution mask
    turn: int  # number of replies so far
    error: ActionError | None = None
    terminated: bool = False  # the policy stopped
    truncated: bool = False  # the turn or error budget ran out, or the episode was closed from outside

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class SegmentationEnv:
    """One episode at a time on ``tool``; ``record`` is readable at any time (None before reset).

    Public state after :meth:`reset`: ``image`` (RGB uint8), ``target``, ``frame`` (the policy's
    coordinate frame), ``mask`` (current full-resolution mask), ``state`` (the prompt state).
    """

    def __init__(self, tool: SegmentationTool, config: EpisodeConfig | None = None) -> None:
        self.tool = tool
        self.config = config or EpisodeConfig()
        self.protocol: ActionProtocol = get_protocol(self.config.protocol)
        self.space = self.config.coordinate_space or self.protocol.default_space
        self._session: ToolSession | None = None
        self._record: TrajectoryRecord | None = None

    @property
    def record(self) -> TrajectoryRecord | None:
        return self._record

    @property
    def done(self) -> bool:
        return self._record is not None and self._record.stop_reason is not None

    # -- lifecycle ------------------------------------------------------------------------
    def reset(
        self, sample: Sample, *, session: ToolSession | None = None, options: dict[str, Any] | None = None
    ) -> Observation:
        """Start an episode on ``sample``; encodes the image (once) unless a ready ``session`` is given.

        ``options``: ``policy`` (the name written in the record), ``seed`` (kept in ``record.meta``).
        """
        options = dict(options or {})
        unknown = sorted(set(options) - set(RESET_OPTIONS))
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; expected some of {list(RESET_OPTIONS)}")
        self._start = time.perf_counter()
        self.image = as_rgb_uint8(sample.image)
        h, w = self.image.shape[:2]
        gt_mask = sample.mask
        if gt_mask is not None:
            gt_mask = np.asarray(gt_mask, dtype=bool)
            if gt_mask.shape != (h, w):
                raise ValueError(f"ground-truth mask shape {gt_mask.shape} does not match image {(h, w)}")
        self._gt = gt_mask
        self._spacing = sample.spacing
        self.target = sample.target
        view_size = view_size_for((h, w), self.config.view_longest_side)
        self.frame = CoordinateFrame(self.space, (h, w), view_size)
        self._base_view = resize_view(self.image, view_size)
        self._tinted_view = tinted(self._base_view)
        tool_start = time.perf_counter()
        self._session = session or self.tool.set_image(self.image)
        encode_seconds = time.perf_counter() - tool_start
        self.state = PromptState()
        self.mask = np.zeros((h, w), dtype=bool)
        self._interactions = 0
        self._consecutive_errors = 0
        self._first_stops_refused = 0
        meta: dict[str, Any] = {"encode_seconds": encode_seconds}
        if "seed" in options:
            meta["seed"] = options["seed"]
        self._record = TrajectoryRecord(
            sample_id=sample.sample_id,
            dataset=sample.dataset,
            modality=sample.modality,
            target=sample.target,
            image_path=sample.image_path,
            image_size=(h, w),
            spacing=sample.spacing,
            protocol=self.protocol.name,
            coordinate_space=str(self.space),
            view_size=view_size,
            tool=self.tool.name,
            policy=str(options.get("policy", "")),
            max_turns=self.config.max_turns,
            gt_mask_rle=encode_rle(gt_mask) if gt_mask is not None else None,
            meta=meta,
        )
        return Observation(self._base_view.copy(), self.protocol.first_user_text(sample.target), self.mask, 0)

    def step(
        self,
        reply: Reply,
        *,
        text: str | None = None,
        reasoning: str | None = None,
        policy_seconds: float = 0.0,
        actor: Actor = "agent",
    ) -> Observation:
        """Apply one policy reply and return what the policy sees next.

        ``reply`` is an :data:`~medseg_agent.vocabulary.actions.Action` in the model coordinates of
        :attr:`frame` (``reasoning`` goes with it), a raw reply text, or structured tool calls; text and
        tool calls are parsed by the episode's protocol. ``text`` is what the policy wrote alongside an
        action or tool calls (for an action it defaults to the protocol's rendering of it).
        """
        record = self._record
        if record is None or self._session is None:
            raise RuntimeError("call reset() before step()")
        if record.stop_reason is not None:
            raise RuntimeError("the episode is over; call reset() to start another")
        start = time.perf_counter()
        error: ActionError | None = None
        if isinstance(reply, AddBox | AddPoint | Stop):
            action: Action | None = reply
            if text is None:
                text = self.protocol.format_action(reply, reasoning)
        else:
            if isinstance(reply, str):
                if text is not None:
                    raise ValueError("pass the reply text once: as reply, or as text= beside an action or tool calls")
                text, tool_calls = reply, None
            else:
                tool_calls = list(reply) if reply is not None else None
            if text is not None:
                text = clean_reply(text)  # lone surrogates would make the record unsavable: escaped
            parsed = self.protocol.parse(text, self.frame, tool_calls)
            action, error, reasoning = parsed.action, parsed.error, parsed.reasoning
        turn = TurnRecord(turn=len(record.turns) + 1, raw_text=text, reasoning=reasoning, actor=actor)
        turn.policy_seconds = policy_seconds
        if action is not None:
            turn.action = action
            refuse_stop = self._interactions == 0 and self._first_stops_refused < self.config.first_stop_retries
            if isinstance(action, Stop) and refuse_stop:
                self._first_stops_refused += 1
                error = ActionError(ErrorKind.REJECTED, "nothing is segmented yet; create a mask before stopping")
        tool_seconds = 0.0
        if error is not None:
            observation_text = self._on_error(turn, error)
        elif isinstance(action, Stop):
            self._consecutive_errors = 0
            self._finish(StopReason.STOP_ACTION)
            observation_text = "The episode is finished."
        else:
            self._consecutive_errors = 0
            tool_seconds = self._apply(action, turn)
            observation_text = self._describe()
            if self._interactions >= self.config.max_turns:
                self._finish(StopReason.TURN_LIMIT)
        turn.tool_seconds = tool_seconds
        record.turns.append(turn)
        view = render_overlay(
            self._base_view,
            self.mask,
            self.image.shape[:2],
            self.state.box,
            self.state.points,
            self.state.labels,
            self._tinted_view,
        )
        text_out = observation_text if error is not None else self.protocol.followup_user_text(observation_text)
        turn.observation_text = text_out
        turn.env_seconds = time.perf_counter() - start - tool_seconds
        reason = record.stop_reason
        if reason is not None:
            record.wall_seconds = time.perf_counter() - self._start
        return Observation(
            view,
            text_out,
            self.mask,
            len(record.turns),
            error,
            terminated=reason is not None and reason.terminated,
            truncated=reason is not None and not reason.terminated,
        )

    def close(self, reason: StopReason = StopReason.POLICY_ENDED) -> TrajectoryRecord:
        """End the episode from outside (the policy stopped acting without ``stop_action``): the record
        gets its final mask, metrics and ``reason``. An episode that already ended is left as it was."""
        record = self._record
        if record is None:
            raise RuntimeError("call reset() before close()")
        if record.stop_reason is None:
            self._finish(StopReason(reason))
            record.wall_seconds = time.perf_counter() - self._start
        return record

    # -- internals ------------------------------------------------------------------------
    def _apply(self, action: AddBox | AddPoint, turn: TurnRecord) -> float:
        state = self.state = self.state.after(action, self.frame)
        if isinstance(action, AddBox):
            turn.action_pixels = AddBox(*state.box)
        else:
            turn.action_pixels = AddPoint(*state.points[-1], positive=action.positive)
        tool_start = time.perf_counter()
        prediction = self._session.predict(state.to_prompt())
        tool_seconds = time.perf_counter() - tool_start
        state.logits = prediction.logits
        self.mask = prediction.mask
        self._interactions += 1
        turn.tool_score = float(prediction.score)
        if self.config.keep_masks:
            turn.mask_rle = encode_rle(self.mask)
        if self._gt is not None:
            turn.iou, turn.dice = iou(self.mask, self._gt), dice(self.mask, self._gt)
        return tool_seconds

    def _on_error(self, turn: TurnRecord, error: ActionError) -> str:
        turn.error = error
        self._record.num_errors += 1
        self._consecutive_errors += 1
        if self._consecutive_errors >= self.config.max_consecutive_errors:
            self._finish(StopReason.TOO_MANY_ERRORS)
            return f"{self.protocol.error_text(error)} Too many invalid replies; the episode ends."
        return f"{self.protocol.error_text(error)} Please try again."

    def _describe(self) -> str:
        fraction = np.count_nonzero(self.mask) / self.mask.size
        remaining = self.config.max_turns - self._interactions
        return f"The mask now covers {fraction:.1%} of the image; {remaining} action(s) left."

    def _finish(self, reason: StopReason) -> None:
        record = self._record
        record.stop_reason = reason
        record.num_interactions = self._interactions
        record.final_mask_rle = encode_rle(self.mask)
        if self._gt is not None:
            record.final_metrics = segmentation_metrics(
                self.mask, self._gt, spacing=self._spacing, nsd_tolerance=self.config.nsd_tolerance
            )
