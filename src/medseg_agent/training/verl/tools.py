"""verl tools for the three actions (``add_bbox``, ``add_point``, ``stop_action``), on verl's ``BaseTool``.

Each call runs one step of the trajectory's :class:`SegmentationEnv` (see
:mod:`medseg_agent.training.verl.episodes`) with the configured segmentation tool, in-process
(``tool: classic | sam | medsam | sam2``) or on a ``medseg-agent serve`` tool server
(``tool: http://host:port``, shared embeddings across the rollouts of one image). The reply is the
protocol's follow-up text plus the overlay image (resized for the Qwen-VL vision tower); invalid
arguments become the same error texts inference shows. The step reward is the IoU gain of the step.

Tool YAML entry (``actor_rollout_ref.rollout.multi_turn.tool_config_path``)::

    - class_name: medseg_agent.training.verl.tools.AddBboxTool
      config: {type: native, tool: "http://tool-server:8000", max_turns: 5}
      tool_schema: {...}   # optional: defaults to the protocol's schema
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any
from uuid import uuid4

from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from medseg_agent.environment.episode import EpisodeConfig
from medseg_agent.policies.chat import tool_call_text
from medseg_agent.protocols import tool_schemas
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.training.verl.episodes import (
    EPISODE_ID_FIELD,
    STORE,
    Episode,
    episode_spec_from_tools_kwargs,
    finished_text,
    record_fields,
)
from medseg_agent.vocabulary.actions import ADD_BBOX, ADD_POINT, STOP_ACTION, CoordinateSpace, ToolCall

DEFAULTS: dict[str, Any] = {
    "tool": "classic",
    "checkpoint": None,
    "device": "cpu",
    "tool_options": {},
    "protocol": "medsam",
    "max_turns": 5,
    "view_longest_side": 512,
    "image_patch_size": 16,  # Qwen3-VL; 14 for Qwen2/2.5-VL
    "max_pixels": None,  # cap of the overlay size fed back (None: qwen_vl_utils' default)
    "reward": "medseg",  # preset used by calc_reward
}

_BACKENDS: dict[str, tuple[SegmentationTool, threading.Lock | None]] = {}
_BACKENDS_LOCK = threading.Lock()


def tool_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The tool YAML's ``config`` merged over :data:`DEFAULTS`; unknown keys are an error."""
    extra = sorted(set(config) - set(DEFAULTS) - {"type"})
    if extra:
        raise ValueError(f"verl tool config: unknown key(s) {extra}; expected some of {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **{k: v for k, v in config.items() if k != "type"}}
    if settings["protocol"] != "medsam":
        raise ValueError(
            "verl tool config: protocol must be 'medsam' (verl rollouts use native tool calls; the ibis protocol "
            f"writes actions as text), got {settings['protocol']!r}"
        )
    return settings


def shared_backend(settings: dict[str, Any]) -> tuple[SegmentationTool, threading.Lock | None]:
    """One segmentation tool per process and configuration. In-process tools get a lock (one model,
    calls from many trajectory coroutines run in threads); a tool server batches on its own."""
    from medseg_agent.tools.registry import build_tool

    key = json.dumps([settings["tool"], settings["checkpoint"], settings["device"], settings["tool_options"]])
    with _BACKENDS_LOCK:
        if key not in _BACKENDS:
            spec = str(settings["tool"])
            tool = build_tool(
                spec, checkpoint=settings["checkpoint"], device=settings["device"], **settings["tool_options"]
            )
            remote = spec.startswith(("http://", "https://"))
            _BACKENDS[key] = (tool, None if remote else threading.Lock())
        return _BACKENDS[key]


def default_schema(name: str) -> OpenAIFunctionToolSchema:
    for schema in tool_schemas(CoordinateSpace.NORM1000):
        if schema["function"]["name"] == name:
            return OpenAIFunctionToolSchema.model_validate(schema)
    raise ValueError(f"no action named {name!r}")


def overlay_for_model(view: Any, settings: dict[str, Any]) -> Any:
    """The overlay as a PIL image sized for the vision tower (tool images skip qwen_vl_utils)."""
    from PIL import Image
    from verl.utils.dataset.vision_utils import process_image

    image: dict[str, Any] = {"image": Image.fromarray(view)}
    if settings["max_pixels"]:
        image["max_pixels"] = int(settings["max_pixels"])
    return process_image(image, image_patch_size=int(settings["image_patch_size"]))


class MedSegActionTool(BaseTool):
    """One action of the segmentation environment as a verl tool. Subclasses fix the action name."""

    action_name: str = ""

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None = None) -> None:
        self.settings = tool_settings(config or {})
        super().__init__(config, tool_schema or default_schema(self.action_name))
        if self.action_name and self.name != self.action_name:
            raise ValueError(f"{type(self).__name__} is the {self.action_name} tool, but its schema names {self.name}")
        self.episode_config = EpisodeConfig(
            max_turns=int(self.settings["max_turns"]),
            protocol="medsam",
            view_longest_side=self.settings["view_longest_side"],
        )
        self._instances: dict[str, str | None] = {}  # tool instance -> trajectory (request id)

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        return self.tool_schema

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        instance_id = instance_id or str(uuid4())
        self._instances[instance_id] = None
        return instance_id, ToolResponse()

    async def _episode(self, agent_data: Any) -> Episode:
        key = agent_data.request_id
        episode = STORE.get(key)
        if episode is None:
            spec = episode_spec_from_tools_kwargs(agent_data.tools_kwargs)
            tool, lock = shared_backend(self.settings)

            def start() -> Episode:
                if lock is None:
                    return STORE.start(key, tool, self.episode_config, spec)
                with lock:
                    return STORE.start(key, tool, self.episode_config, spec)

            episode = await asyncio.to_thread(start)
            agent_data.extra_fields[EPISODE_ID_FIELD] = key
        return episode

    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[ToolResponse, float, dict]:
        agent_data = kwargs.get("agent_data")
        if agent_data is None:
            raise ValueError(f"{self.name}: verl passes agent_data to execute(); this tool needs verl's ToolAgentLoop")
        episode = await self._episode(agent_data)
        self._instances[instance_id] = agent_data.request_id
        if episode.env.done:
            return ToolResponse(text="The episode is over and the mask is final; do not call more tools."), 0.0, {}
        trace = episode.record.iou_trace()
        before = trace[-1] if trace else 0.0
        written = _assistant_text(agent_data, ToolCall(self.name, parameters))
        _, lock = shared_backend(self.settings)

        def step() -> Any:
            if lock is None:
                return episode.step(self.name, parameters, written)
            with lock:
                return episode.step(self.name, parameters, written)

        observation = await asyncio.to_thread(step)
        record = episode.record
        agent_data.extra_fields.update(record_fields(record))
        trace = record.iou_trace()
        gain = (trace[-1] if trace else 0.0) - before
        metrics = {"iou": trace[-1] if trace else 0.0, "error": observation.error is not None}
        reply = finished_text(record) if episode.env.done else observation.text
        response = ToolResponse(text=reply)
        if observation.error is None and self.name != STOP_ACTION:  # errors and stops leave the view unchanged
            response = ToolResponse(text=reply, image=[overlay_for_model(observation.image, self.settings)])
        return response, float(gain), metrics

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        """The configured reward preset on the trajectory so far (verl's loop never calls this)."""
        from medseg_agent.rewards import resolve_reward, score_record

        key = self._instances.get(instance_id)
        episode = STORE.get(key) if key else None
        if episode is None or not episode.record.turns:
            return 0.0
        return score_record(episode.record, resolve_reward(self.settings["reward"])).total

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._instances.pop(instance_id, None)


def _assistant_text(agent_data: Any, call: ToolCall) -> str:
    """What the model wrote this turn, as the record keeps it: its text plus the call in Hermes form."""
    content = ""
    if agent_data.messages and agent_data.messages[-1].get("role") == "assistant":
        raw = agent_data.messages[-1].get("content") or ""
        content = raw if isinstance(raw, str) else " ".join(p.get("text", "") for p in raw if isinstance(p, dict))
    rendered = tool_call_text([call])
    return f"{content.strip()}\n{rendered}" if content.strip() else rendered


class AddBboxTool(MedSegActionTool):
    action_name = ADD_BBOX


class AddPointTool(MedSegActionTool):
    action_name = ADD_POINT


class StopActionTool(MedSegActionTool):
    action_name = STOP_ACTION
