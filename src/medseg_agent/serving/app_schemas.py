"""Request and response bodies of the annotation app's endpoints (``/v1/app``; part of the OpenAPI
schema). Coordinates are full-resolution pixels ``(x, y)`` of the image, as the page draws them;
the episode converts them to the protocol's coordinates, so records hold what a model would write."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medseg_agent.environment.record import Actor
from medseg_agent.serving.schemas import Coordinate, ImageId, Rle
from medseg_agent.vocabulary.stop import StopReason

Axis = Literal["axial", "coronal", "sagittal"]
Annotator = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9._@+-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# -- what the page starts from ------------------------------------------------------------------------
class AgentDefaults(BaseModel):
    base_url: str | None = None
    model: str | None = None
    checkpoint: str | None = None


class AppInfo(BaseModel):
    tool: str
    version: str
    out_dir: str = Field(description="where saved sessions go (trajectories.jsonl, images/, masks/)")
    annotator: str = Field(description="default annotator name")
    protocols: list[str]
    max_turns: int
    window_presets: list[str] = Field(description="CT window presets for volumes")
    agent: AgentDefaults
    library_size: int
    library_warning: str | None = None


# -- images and volumes ---------------------------------------------------------------------------------
class SliceRef(_Strict):
    volume_id: str
    axis: Axis
    index: int


class ContrastOut(BaseModel):
    mode: Literal["window", "percentile"]
    preset: str | None = None
    width: float | None = None
    level: float | None = None
    percentiles: list[float] | None = None


class OpenedImage(BaseModel):
    """An image ready for an episode: fetch its pixels from ``/v1/app/images/{image_id}.png``."""

    kind: Literal["image"] = "image"
    image_id: str
    height: int
    width: int
    name: str
    target: str = Field("", description="the target suggested by the library (empty for uploads)")
    modality: str = ""
    has_reference: bool = Field(False, description="a reference mask exists: the record will hold metrics")
    slice: SliceRef | None = None
    contrast: ContrastOut | None = None


class OpenedVolume(BaseModel):
    kind: Literal["volume"] = "volume"
    volume_id: str
    name: str
    modality: str
    shape: list[int]
    slices: dict[str, int] = Field(description="number of slices along each axis")
    spacing_mm: list[float]
    contrast: ContrastOut = Field(description="the default mapping: a CT window or MRI percentiles")
    target: str = ""


class SliceRequest(_Strict):
    """One slice of an opened volume, shown with a CT window (``window``: a preset name, or
    ``width`` and ``level`` in HU) or with percentiles of the whole volume (``percentiles``)."""

    axis: Axis = "axial"
    index: int = Field(ge=0)
    window: str | None = Field(None, max_length=40, description="CT window preset, e.g. abdomen, lung, bone")
    width: float | None = Field(None, gt=0)
    level: float | None = None
    percentiles: Annotated[list[float], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[low, high] percentiles of the whole volume, e.g. [0.5, 99.5] for MRI"
    )


# -- episodes -----------------------------------------------------------------------------------------
class AgentSpec(_Strict):
    """Who proposes actions: nobody (manual), a model behind an OpenAI-compatible URL, or a local
    Hugging Face checkpoint on the server."""

    kind: Literal["none", "openai", "hf"] = "none"
    base_url: str | None = Field(None, max_length=500, description="openai: the API root, e.g. http://gpu:8000/v1")
    model: str | None = Field(None, max_length=200, description="openai: served model name (default: the only one)")
    api_key: str | None = Field(None, max_length=500, description="openai: key (default: $OPENAI_API_KEY)")
    checkpoint: str | None = Field(None, max_length=1000, description="hf: checkpoint folder on the server")
    native_tools: bool = False
    max_history_images: int | None = Field(None, ge=1, le=64)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1, le=8192, description="longest reply (default: the policy's)")


class EpisodeCreate(_Strict):
    image_id: ImageId
    target: str = Field(min_length=1, max_length=500, description="what to segment, e.g. 'left kidney in CT'")
    agent: AgentSpec = Field(default_factory=AgentSpec)
    protocol: Literal["medsam", "ibis"] = "medsam"
    max_turns: int | None = Field(None, ge=1, le=64, description="turns before the episode ends (default: server's)")
    annotator: Annotator = ""


class BoxIn(_Strict):
    box: Annotated[list[Coordinate], Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] image pixels")]


class PointIn(_Strict):
    point: Annotated[list[Coordinate], Field(min_length=2, max_length=2, description="[x, y] image pixels")]
    positive: bool = True


class TurnOut(BaseModel):
    turn: int
    actor: Actor
    name: str | None = Field(description="add_bbox, add_point, stop_action, or null for an invalid reply")
    action: dict[str, Any] | None = Field(description="as the protocol writes it (model coordinates)")
    action_pixels: dict[str, Any] | None = Field(description="the same action in image pixels")
    raw_text: str | None
    reasoning: str | None
    error: dict[str, str] | None
    tool_score: float | None
    iou: float | None = None
    dice: float | None = None
    policy_seconds: float
    tool_seconds: float


class PromptOut(BaseModel):
    box: list[float] | None
    points: list[list[float]]
    labels: list[int]


class SavedOut(BaseModel):
    key: str
    image: str
    mask: str
    store: str
    mask_format: Literal["png", "nifti"]


class EpisodeOut(BaseModel):
    episode_id: str
    image_id: str
    height: int
    width: int
    target: str
    protocol: str
    coordinate_space: str
    agent: dict[str, Any]
    annotator: str
    done: bool
    stop_reason: StopReason | None = Field(description="why the episode ended; null while it is open")
    turns: list[TurnOut]
    prompt: PromptOut
    mask: Rle
    mask_area: int
    score: float | None = Field(description="the tool's own score of the current mask (no reference needed)")
    interactions: int
    max_turns: int
    can_undo: bool
    can_redo: bool
    slice: SliceRef | None = None
    saved: list[SavedOut] = Field(default_factory=list)
    server_ms: float = Field(description="time the server spent on this request")
