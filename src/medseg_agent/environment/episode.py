"""The multi-turn segmentation environment: the heart of the toolkit.

An episode holds one image, one target, optionally the ground truth, and one tool session (the image
is encoded once, at reset). ``step`` takes a policy's reply, parses it with the episode's protocol,
updates the prompt state with SAM-family semantics and returns the next observation. Malformed
replies become error observations; they never crash the episode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from medseg_agent.environment.record import TrajectoryRecord, TurnRecord
from medseg_agent.environment.render import render_overlay, resize_view, tinted
from medseg_agent.io.masks import encode_rle
from medseg_agent.metrics import dice, iou, segmentation_metrics
from medseg_agent.protocols import ActionProtocol, get_protocol
from medseg_agent.tools.base import SegmentationTool, ToolSession
from medseg_agent.vocabulary.actions import Action, AddBox, AddPoint, CoordinateSpace, Stop, ToolCall, action_to_dict
from medseg_agent.vocabulary.coordinates import CoordinateFrame, view_size_for
from medseg_agent.vocabulary.errors import ActionError, ErrorKind
from medseg_agent.vocabulary.images import as_rgb_uint8
from medseg_agent.vocabulary.prompts import PromptState


@dataclass
class EpisodeConfig:
    """Options of an episode. Defaults follow the reference system (5 turns, 512 view, 0–999 grid)."""

    max_turns: int = 5  # interaction turns: tool-running actions (boxes and points)
    protocol: str = "medsam"
    coordinate_space: CoordinateSpace | None = None  # None: the protocol's own
    view_longest_side: int | None = 512
    max_consecutive_errors: int = 2  # invalid replies tolerated in a row before the episode ends
    first_stop_retries: int = 1  # a stop before any mask exists is refused this many times
    nsd_tolerance: float = 2.0
    keep_masks: bool = True  # store every turn's mask in the record (RLE)


@dataclass
class Observation:
    image: np.ndarray  # the view the policy sees, RGB uint8
    text: str
    mask: np.ndarray  # current full-resolution mask
    turn: int  # number of replies so far
    error: ActionError | None = None
    done: bool = False


class SegmentationEnv:
    def __init__(self, tool: SegmentationTool, config: EpisodeConfig | None = None) -> None:
        self.tool = tool
        self.config = config or EpisodeConfig()
        self.protocol: ActionProtocol = get_protocol(self.config.protocol)
        self.space = self.config.coordinate_space or self.protocol.default_space
        self._session: ToolSession | None = None
        self.record: TrajectoryRecord | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def reset(
        self,
        image: np.ndarray,
        target: str,
        gt_mask: np.ndarray | None = None,
        *,
        sample_id: str = "",
        dataset: str = "",
        modality: str = "",
        spacing: tuple[float, float] | None = None,
        image_path: str | None = None,
        policy_name: str = "",
        session: ToolSession | None = None,
    ) -> Observation:
        """Start an episode; encodes the image (once) unless a ready ``session`` is given."""
        self._start = time.perf_counter()
        self.image = as_rgb_uint8(image)
        h, w = self.image.shape[:2]
        if gt_mask is not None:
            gt_mask = np.asarray(gt_mask, dtype=bool)
            if gt_mask.shape != (h, w):
                raise ValueError(f"ground-truth mask shape {gt_mask.shape} does not match image {(h, w)}")
        self.gt = gt_mask
        self.spacing = spacing
        self.target = target
        self.view_size = view_size_for((h, w), self.config.view_longest_side)
        self.frame = CoordinateFrame(self.space, (h, w), self.view_size)
        self.base_view = resize_view(self.image, self.view_size)
        self.tinted_view = tinted(self.base_view)
        tool_start = time.perf_counter()
        self._session = session or self.tool.set_image(self.image)
        encode_seconds = time.perf_counter() - tool_start
        self.state = PromptState()
        self.mask = np.zeros((h, w), dtype=bool)
        self.done = False
        self.interactions = 0
        self.consecutive_errors = 0
        self.first_stops_refused = 0
        self.record = TrajectoryRecord(
            sample_id=sample_id,
            dataset=dataset,
            modality=modality,
            target=target,
            image_path=image_path,
            image_size=(h, w),
            spacing=spacing,
            protocol=self.protocol.name,
            coordinate_space=str(self.space),
            view_size=self.view_size,
            tool=self.tool.name,
            policy=policy_name,
            max_turns=self.config.max_turns,
            gt_mask_rle=encode_rle(gt_mask) if gt_mask is not None else None,
            meta={"encode_seconds": encode_seconds},
        )
        return Observation(self.base_view.copy(), self.protocol.first_user_text(target), self.mask, 0)

    def step(
        self,
        text: str | None = None,
        *,
        tool_calls: list[ToolCall] | None = None,
        action: Action | None = None,
        reasoning: str | None = None,
        policy_seconds: float = 0.0,
    ) -> Observation:
        """Apply one policy reply: raw text / tool calls (parsed) or an already-built ``action``.

        Actions are in the episode's model coordinates (see :attr:`frame`).
        """
        if self.record is None or self._session is None:
            raise RuntimeError("call reset() before step()")
        if self.done:
            raise RuntimeError("the episode is over; call reset() to start another")
        start = time.perf_counter()
        if action is None:
            parsed = self.protocol.parse(text, self.frame, tool_calls)
            action, error, reasoning = parsed.action, parsed.error, parsed.reasoning
        else:
            error = None
            if text is None:
                text = self.protocol.format_action(action, reasoning)
        turn = TurnRecord(turn=len(self.record.turns) + 1, raw_text=text, reasoning=reasoning)
        turn.policy_seconds = policy_seconds
        if action is not None:
            turn.action = action_to_dict(action)
            refuse_stop = self.interactions == 0 and self.first_stops_refused < self.config.first_stop_retries
            if isinstance(action, Stop) and refuse_stop:
                self.first_stops_refused += 1
                error = ActionError(ErrorKind.REJECTED, "nothing is segmented yet; create a mask before stopping")
        tool_seconds = 0.0
        if error is not None:
            observation_text = self._on_error(turn, error)
        elif isinstance(action, Stop):
            self.consecutive_errors = 0
            self._finish("stop_action")
            observation_text = "The episode is finished."
        else:
            self.consecutive_errors = 0
            tool_seconds = self._apply(action, turn)
            observation_text = self._describe()
            if self.interactions >= self.config.max_turns:
                self._finish("turn_limit")
        turn.tool_seconds = tool_seconds
        self.record.turns.append(turn)
        view = render_overlay(
            self.base_view,
            self.mask,
            self.image.shape[:2],
            self.state.box,
            self.state.points,
            self.state.labels,
            self.tinted_view,
        )
        text_out = observation_text if error is not None else self.protocol.followup_user_text(observation_text)
        turn.observation_text = text_out
        turn.env_seconds = time.perf_counter() - start - tool_seconds
        if self.done:
            self.record.wall_seconds = time.perf_counter() - self._start
        return Observation(view, text_out, self.mask, len(self.record.turns), error, self.done)

    # -- internals ------------------------------------------------------------------------
    def _apply(self, action: AddBox | AddPoint, turn: TurnRecord) -> float:
        state = self.state = self.state.after(action, self.frame)
        if isinstance(action, AddBox):
            turn.action_pixels = {"name": "add_bbox", "arguments": {"bbox_2d": list(state.box)}}
        else:
            turn.action_pixels = {
                "name": "add_point",
                "arguments": {"point_2d": list(state.points[-1]), "point_type": action.point_type},
            }
        tool_start = time.perf_counter()
        prediction = self._session.predict(state.to_prompt())
        tool_seconds = time.perf_counter() - tool_start
        state.logits = prediction.logits
        self.mask = prediction.mask
        self.interactions += 1
        turn.tool_score = float(prediction.score)
        if self.config.keep_masks:
            turn.mask_rle = encode_rle(self.mask)
        if self.gt is not None:
            turn.iou, turn.dice = iou(self.mask, self.gt), dice(self.mask, self.gt)
        return tool_seconds

    def _on_error(self, turn: TurnRecord, error: ActionError) -> str:
        turn.error = error.to_dict()
        self.record.num_errors += 1
        self.consecutive_errors += 1
        if self.consecutive_errors > self.config.max_consecutive_errors:
            self._finish("too_many_errors")
            return f"{self.protocol.error_text(error)} Too many invalid replies; the episode ends."
        return f"{self.protocol.error_text(error)} Please try again."

    def _describe(self) -> str:
        fraction = np.count_nonzero(self.mask) / self.mask.size
        remaining = self.config.max_turns - self.interactions
        return f"The mask now covers {fraction:.1%} of the image; {remaining} action(s) left."

    def _finish(self, reason: str) -> None:
        self.done = True
        record = self.record
        record.stop_reason = reason
        record.num_interactions = self.interactions
        record.final_mask_rle = encode_rle(self.mask)
        if self.gt is not None:
            record.final_metrics = segmentation_metrics(
                self.mask, self.gt, spacing=self.spacing, nsd_tolerance=self.config.nsd_tolerance
            )
