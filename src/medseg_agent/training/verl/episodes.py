"""Per-trajectory episodes for verl rollouts: one :class:`SegmentationEnv` per trajectory.

verl's ``ToolAgentLoop`` calls ``create -> execute -> release`` on a tool for EVERY tool call, and the
three actions are three tool objects, so the episode (image session, prompts, previous logits, mask
history) cannot live in a tool instance. It lives here, keyed by the trajectory's ``request_id``, and
is shared by the tools of one worker process. The episode is the project's own environment, so a
rollout step is exactly an inference step and the finished episode is a normal trajectory record
that the reward library scores.

Episodes are closed by :class:`~medseg_agent.training.verl.agent_loop.MedSegAgentLoop` when the
trajectory ends; with the stock loop they close on ``stop_action`` / the turn limit, and an LRU bound
drops the oldest open ones.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.data.common import parse_spacing
from medseg_agent.environment.episode import EpisodeConfig, Observation, SegmentationEnv
from medseg_agent.environment.record import TrajectoryRecord
from medseg_agent.io.images import EncodedImage, ImageLoadError, load_image
from medseg_agent.io.masks import RleError, decode_rle
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.actions import ToolCall
from medseg_agent.vocabulary.sample import Sample
from medseg_agent.vocabulary.stop import StopReason

#: agent_name of RL rows; the agent-loop YAML maps it to MedSegAgentLoop.
AGENT_NAME = "medseg_agent"
#: tools_kwargs key holding the episode specification (one copy per row, read by every tool).
EPISODE_KWARGS_KEY = "medseg_episode"
#: extra_fields keys written for the reward and the agent loop.
RECORD_FIELD = "medseg_record"
EPISODE_ID_FIELD = "medseg_episode_id"


class EpisodeSpecError(ValueError):
    """An RL row whose episode specification cannot be used, naming the field and what was expected."""


@dataclass(frozen=True)
class EpisodeSpec:
    """What a tool needs to start the episode of one RL row (``extra_info.tools_kwargs.medseg_episode``).

    The image is a file readable on every rollout node (``image_path``) or inline PNG bytes
    (``image_png_b64``); the ground truth is a COCO RLE. The prompt image in the row is the resized
    view; the tool always works on this full-resolution image.
    """

    target: str
    gt_mask_rle: dict[str, Any]
    image_path: str | None = None
    image_png_b64: str | None = None
    sample_id: str = ""
    dataset: str = ""
    modality: str = ""
    spacing: tuple[float, float] | None = None

    @classmethod
    def from_kwargs(cls, data: Any) -> EpisodeSpec:
        """The spec of one row, every field checked: rows may come from another tool's parquet, and a bad
        one must name its field here rather than fail as a traceback deep in a rollout worker."""
        where = f"tools_kwargs.{EPISODE_KWARGS_KEY}.create_kwargs"
        if not isinstance(data, dict):
            raise EpisodeSpecError(f"{where} must be a mapping, got {type(data).__name__}")
        for key in ("target", "gt_mask_rle"):
            if not data.get(key):
                raise EpisodeSpecError(f"{where}.{key} is missing")
        if not (data.get("image_path") or data.get("image_png_b64")):
            raise EpisodeSpecError(f"{where} needs image_path or image_png_b64")
        texts = {key: data.get(key) or "" for key in ("target", "image_path", "image_png_b64", "sample_id",
                                                          "dataset", "modality")}
        for key, value in texts.items():
            if not isinstance(value, str):
                raise EpisodeSpecError(f"{where}.{key} must be text, got {type(value).__name__} {value!r:.80}")
        if not isinstance(data["gt_mask_rle"], dict):
            raise EpisodeSpecError(
                f"{where}.gt_mask_rle must be a COCO RLE mapping {{'size', 'counts'}}, "
                f"got {type(data['gt_mask_rle']).__name__}"
            )
        try:
            spacing = parse_spacing(data.get("spacing") or None)  # parquet stores an unknown spacing as []
        except ValueError as exc:
            raise EpisodeSpecError(f"{where}.spacing: {exc} (expected two sizes in mm, > 0)") from None
        return cls(
            target=texts["target"],
            gt_mask_rle=dict(data["gt_mask_rle"]),
            image_path=texts["image_path"] or None,
            image_png_b64=texts["image_png_b64"] or None,
            sample_id=texts["sample_id"],
            dataset=texts["dataset"],
            modality=texts["modality"],
            spacing=spacing,
        )

    def load_image(self) -> np.ndarray:
        if self.image_path:
            path = Path(self.image_path)
            if not path.is_file():
                raise EpisodeSpecError(f"image_path {path} does not exist on this rollout node")
            return load_image(path, self.modality)
        try:
            encoded = base64.b64decode(self.image_png_b64 or "", validate=True)
        except binascii.Error as exc:
            raise EpisodeSpecError(f"image_png_b64 is not base64: {exc}") from None
        try:
            return load_image(EncodedImage(encoded, "image_png_b64"), self.modality)
        except ImageLoadError as exc:
            raise EpisodeSpecError(f"image_png_b64 is not a decodable image: {exc.problem}") from None

    def to_sample(self) -> Sample:
        """The episode's sample: the full-resolution image and its ground truth (sizes checked)."""
        image = self.load_image()
        try:
            gt = decode_rle(self.gt_mask_rle)
        except RleError as exc:
            raise EpisodeSpecError(f"gt_mask_rle is not a mask: {exc}") from None
        if gt.shape != image.shape[:2]:
            raise EpisodeSpecError(f"gt_mask_rle size {gt.shape} does not match the image {image.shape[:2]}")
        return Sample(
            image=image,
            mask=gt,
            target=self.target,
            modality=self.modality,
            dataset=self.dataset,
            sample_id=self.sample_id,
            spacing=self.spacing,
            image_path=self.image_path,
        )


def episode_spec_from_tools_kwargs(tools_kwargs: dict[str, Any]) -> EpisodeSpec:
    entry = (tools_kwargs or {}).get(EPISODE_KWARGS_KEY)
    if not entry:
        raise EpisodeSpecError(
            f"the RL row has no extra_info.tools_kwargs.{EPISODE_KWARGS_KEY}; build rows with "
            "`medseg-agent train rl-data` (medseg_agent.training.verl.dataset)"
        )
    return EpisodeSpec.from_kwargs(entry.get("create_kwargs", entry))


@dataclass
class Episode:
    env: SegmentationEnv
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def record(self) -> TrajectoryRecord:
        assert self.env.record is not None
        return self.env.record

    def step(self, name: str, arguments: dict[str, Any], text: str | None = None) -> Observation:
        """Apply one tool call (validated by the protocol, like any policy reply)."""
        with self.lock:
            return self.env.step([ToolCall(name, arguments)], text=text)

    def close(self, reason: StopReason) -> TrajectoryRecord:
        """End the episode if the policy did not (the model stopped calling tools, ran out of tokens)."""
        with self.lock:
            return self.env.close(reason)


class EpisodeStore:
    """Open episodes of one process, keyed by trajectory, with an LRU bound."""

    def __init__(self, max_open: int = 4096) -> None:
        self.max_open = max_open
        self._episodes: OrderedDict[str, Episode] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._episodes)

    def get(self, key: str) -> Episode | None:
        with self._lock:
            return self._episodes.get(key)

    def start(self, key: str, tool: SegmentationTool, config: EpisodeConfig, spec: EpisodeSpec) -> Episode:
        """Start (or return) the episode ``key``: reads the image and encodes it once."""
        with self._lock:
            if key in self._episodes:
                return self._episodes[key]
        sample = spec.to_sample()
        env = SegmentationEnv(tool, config)
        env.reset(sample, options={"policy": "verl"})
        episode = Episode(env)
        with self._lock:
            episode = self._episodes.setdefault(key, episode)
            self._episodes.move_to_end(key)
            while len(self._episodes) > self.max_open:
                self._episodes.popitem(last=False)
        return episode

    def pop(self, key: str) -> Episode | None:
        with self._lock:
            return self._episodes.pop(key, None)


#: The store shared by the tools and the agent loop of one process.
STORE = EpisodeStore()


FINISHED_TEXT = {
    StopReason.STOP_ACTION: "The episode is finished; the mask is final.",
    StopReason.TURN_LIMIT: "No actions are left; the episode is finished and the mask is final.",
    StopReason.TOO_MANY_ERRORS: "Too many invalid replies; the episode is finished.",
}


def finished_text(record: TrajectoryRecord) -> str:
    """What the model reads after the step that ended the episode. The environment's follow-up text
    invites another action, which a policy at inference never sees but an RL rollout would."""
    return FINISHED_TEXT.get(record.stop_reason, "The episode is finished.")


def record_fields(record: TrajectoryRecord) -> dict[str, Any]:
    """Plain values for ``agent_data.extra_fields``: the record as JSON, for the reward, plus scalars."""
    trace = record.iou_trace()
    return {
        RECORD_FIELD: record.model_dump_json(),
        "medseg_iou": float(trace[-1]) if trace else 0.0,
        "medseg_tool_turns": len(record.action_turns()),
    }


def record_from_fields(fields: dict[str, Any]) -> TrajectoryRecord | None:
    raw = fields.get(RECORD_FIELD)
    if not raw:
        return None
    return TrajectoryRecord.model_validate(json.loads(raw) if isinstance(raw, str) else raw)
