"""The trajectory record: everything that happened in one episode, enough to reproduce every mask.

Records are the currency between the environment, the expert generator, the SFT/RL exports, the
evaluator and the reward library. Masks are stored as COCO RLE (exact) or as PNG files next to the
record; :func:`load_record` validates the file and names what is wrong.

Actions, errors and the stop reason are typed (:mod:`medseg_agent.vocabulary`); JSON exists only at
the file boundary. Schema history: version 1 kept actions as dicts rounded to 4 decimals and an empty
``stop_reason`` for open episodes; version 2 (this one) stores coordinates with every digit, a
per-turn ``actor`` and ``stop_reason: null`` for open episodes. Version-1 files load unchanged: their
JSON has the same shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)

from medseg_agent.io.atomic import atomic_write_json
from medseg_agent.io.masks import checked_rle, decode_rle, read_mask_png, write_mask_png
from medseg_agent.io.text import TextFileError, read_text_file
from medseg_agent.io.validation import first_problem
from medseg_agent.vocabulary.actions import Action, AddBox, AddPoint, Stop, action_from_dict, action_to_dict
from medseg_agent.vocabulary.errors import ActionError, ErrorKind
from medseg_agent.vocabulary.stop import StopReason

SCHEMA_VERSION = 2
Actor = Literal["agent", "person"]


def _read_action(value: Any) -> Action:
    return value if isinstance(value, AddBox | AddPoint | Stop) else action_from_dict(value)


def _read_tool_action(value: Any) -> AddBox | AddPoint:
    action = _read_action(value)
    if isinstance(action, Stop):
        raise ValueError("action_pixels holds a tool action (add_bbox or add_point), got stop_action")
    return action


def _read_error(value: Any) -> ActionError:
    if isinstance(value, ActionError):
        return value
    if not isinstance(value, dict) or not {"kind", "message"} <= set(value):
        raise ValueError(f'an error is a mapping {{"kind": ..., "message": ...}}, got {value!r}')
    return ActionError(ErrorKind(value["kind"]), str(value["message"]))


def _exact_action_json(action: Action) -> dict[str, Any]:
    return action_to_dict(action, exact=True)


RecordedAction = Annotated[Action, PlainValidator(_read_action), PlainSerializer(_exact_action_json)]
RecordedToolAction = Annotated[
    AddBox | AddPoint, PlainValidator(_read_tool_action), PlainSerializer(_exact_action_json)
]
RecordedError = Annotated[ActionError, PlainValidator(_read_error), PlainSerializer(ActionError.to_dict)]
#: Version-1 records wrote "" for an episode that had not ended.
RecordedStopReason = Annotated[StopReason | None, BeforeValidator(lambda value: value or None)]


def _read_rle(value: dict[str, Any]) -> dict[str, Any]:
    checked_rle(value)  # raises naming what is wrong; the record keeps the JSON form
    return value


#: A mask as COCO RLE, checked when the record is read so that a damaged one names its file and field.
RecordedRle = Annotated[dict[str, Any], AfterValidator(_read_rle)]
#: An overlap score (IoU, Dice): rewards are computed from it, so a value outside [0, 1] or not finite in
#: a record (edited by hand, written by another tool) is refused when read rather than trained on.
Overlap = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Side = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]


class TurnRecord(BaseModel):
    turn: Side  # 1-based index of the policy reply
    raw_text: str | None = None
    reasoning: str | None = None
    actor: Actor = "agent"  # who acted: the policy, or a person correcting it (the browser app)
    action: RecordedAction | None = None  # model coordinates; JSON {"name", "arguments"}
    action_pixels: RecordedToolAction | None = None  # the same tool action in full-resolution pixels
    error: RecordedError | None = None  # JSON {"kind", "message"}
    observation_text: str | None = None  # the user text the policy got back after this turn
    mask_rle: RecordedRle | None = None  # mask after this turn (None: unchanged / error)
    mask_png: str | None = None  # alternative to mask_rle, relative to the record file
    iou: Overlap | None = None
    dice: Overlap | None = None
    tool_score: float | None = None
    tool_seconds: Seconds = 0.0
    policy_seconds: Seconds = 0.0
    env_seconds: Seconds = 0.0

    @property
    def ran_tool(self) -> bool:
        """A box or a point the environment accepted (and so a mask after it)."""
        return isinstance(self.action, AddBox | AddPoint) and self.error is None


class TrajectoryRecord(BaseModel):
    schema_version: int = SCHEMA_VERSION
    sample_id: str = ""
    dataset: str = ""
    modality: str = ""
    target: str = ""
    image_path: str | None = None
    image_size: tuple[Side, Side]
    spacing: tuple[float, float] | None = None
    protocol: str = "medsam"
    coordinate_space: str = "norm1000"
    view_size: tuple[Side, Side]
    tool: str = ""
    policy: str = ""
    max_turns: Count = 5
    turns: list[TurnRecord] = Field(default_factory=list)
    final_mask_rle: RecordedRle | None = None
    final_mask_png: str | None = None
    gt_mask_rle: RecordedRle | None = None
    final_metrics: dict[str, float | None] = Field(default_factory=dict)
    stop_reason: RecordedStopReason = None  # None while the episode is open
    num_interactions: Count = 0
    num_errors: Count = 0
    wall_seconds: Seconds = 0.0
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _masks_fit_the_image(self) -> TrajectoryRecord:
        """Every mask is a mask of this image: [H, W] equal to ``image_size``."""
        stored = [(f"turns.{i}.mask_rle", turn.mask_rle) for i, turn in enumerate(self.turns)]
        stored += [("final_mask_rle", self.final_mask_rle), ("gt_mask_rle", self.gt_mask_rle)]
        for field, rle in stored:
            if rle is not None and list(rle["size"]) != list(self.image_size):
                raise ValueError(f"{field} has size {list(rle['size'])}, the image_size is {list(self.image_size)}")
        return self

    # -- derived views used by rewards and evaluation -------------------------------------
    def action_turns(self) -> list[TurnRecord]:
        """Turns whose action ran the tool (box or point), in order."""
        return [t for t in self.turns if t.ran_tool]

    def iou_trace(self) -> list[float]:
        return [t.iou for t in self.action_turns() if t.iou is not None]

    @property
    def stopped(self) -> bool:
        return self.stop_reason is StopReason.STOP_ACTION

    @property
    def num_replies(self) -> int:
        """The policy's replies, the one that ended a rollout without calling a tool included.

        A training engine (TRL, verl) closes the episode from outside when a reply calls no tool
        (:attr:`StopReason.POLICY_ENDED`), so that reply has no turn here; in evaluation the same reply
        is parsed and is an invalid one. Counting it keeps a policy that drops ``stop_action`` from
        looking as valid in training as one that stops properly.
        """
        return len(self.turns) + (self.stop_reason is StopReason.POLICY_ENDED)


class RecordError(ValueError):
    """A record file that cannot be used, with the file and the field named."""


def _mask_from(rle: dict[str, Any] | None, png: str | None, base: Path | None, what: str) -> np.ndarray | None:
    if rle is not None:
        return decode_rle(rle)
    if png is not None:
        if base is None:
            raise RecordError(f"{what} is stored as PNG {png!r}; pass the record's folder to read it")
        return read_mask_png(base / png)
    return None


def turn_masks(record: TrajectoryRecord, base: Path | None = None) -> list[np.ndarray]:
    """The mask after every tool-running turn, reproduced exactly."""
    masks = []
    for turn in record.action_turns():
        mask = _mask_from(turn.mask_rle, turn.mask_png, base, f"turn {turn.turn} mask")
        if mask is None:
            raise RecordError(f"turn {turn.turn} ran the tool but stores no mask")
        masks.append(mask)
    return masks


def final_mask(record: TrajectoryRecord, base: Path | None = None) -> np.ndarray:
    mask = _mask_from(record.final_mask_rle, record.final_mask_png, base, "final mask")
    if mask is None:
        return np.zeros(tuple(record.image_size), dtype=bool)
    return mask


def gt_mask(record: TrajectoryRecord) -> np.ndarray | None:
    return decode_rle(record.gt_mask_rle) if record.gt_mask_rle is not None else None


def save_record(record: TrajectoryRecord, path: str | Path, masks_as_png: bool = False) -> Path:
    """Write atomically. With ``masks_as_png`` the masks go to ``<stem>_masks/`` beside the file."""
    path = Path(path)
    data = record.model_copy(deep=True)
    if masks_as_png:
        folder = path.parent / f"{path.stem}_masks"
        for turn in data.turns:
            if turn.mask_rle is not None:
                name = f"{folder.name}/turn_{turn.turn:02d}.png"
                write_mask_png(path.parent / name, decode_rle(turn.mask_rle))
                turn.mask_rle, turn.mask_png = None, name
        if data.final_mask_rle is not None:
            name = f"{folder.name}/final.png"
            write_mask_png(path.parent / name, decode_rle(data.final_mask_rle))
            data.final_mask_rle, data.final_mask_png = None, name
    atomic_write_json(path, data.model_dump(mode="json"))
    return path


def record_from_dict(data: dict[str, Any], source: str = "<record>") -> TrajectoryRecord:
    try:
        record = TrajectoryRecord.model_validate(data)
    except ValidationError as exc:
        raise RecordError(f"{source}: {first_problem(exc)}") from None
    if record.schema_version > SCHEMA_VERSION:
        raise RecordError(
            f"{source}: schema_version {record.schema_version} is newer than this medseg-agent "
            f"understands ({SCHEMA_VERSION}); upgrade medseg-agent"
        )
    record.schema_version = SCHEMA_VERSION  # older versions read into today's model; saving writes today's
    return record


def load_record(path: str | Path) -> TrajectoryRecord:
    path = Path(path)
    try:
        data = json.loads(read_text_file(path, "record file"))
    except TextFileError as exc:
        raise RecordError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path} is not valid JSON: {exc}") from None
    return record_from_dict(data, str(path))
