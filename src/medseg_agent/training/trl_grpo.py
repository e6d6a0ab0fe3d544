"""Stage 2 on one machine: multi-turn GRPO with TRL's ``GRPOTrainer`` and an ``environment_factory``.

TRL (>= 1.1, experimental) runs the rollouts itself: one :class:`SegmentationEnvironment` per
rollout, whose public methods ``add_bbox``, ``add_point`` and ``stop_action`` are the tools (their
schemas come from the protocol's schemas, the one place they live), each returning the overlay image
and the protocol's follow-up text. ``get_reward`` scores the finished episode's record with the
reward library. Use verl (:mod:`medseg_agent.training.verl`) for multi-GPU / multi-node runs and
fast rollout engines; this path is for a single box and for debugging rewards end to end.

Rows: ``prompt`` (system prompt + the first user text), ``images`` (the view), ``medseg_episode``
(JSON: what the environment needs to start, as in the verl rows). The system prompt leaves out the
protocol's textual tool listing when the chat template lists the tools (Qwen3-VL), and keeps it for a
template that does not (the demo model's protocol layout, :mod:`medseg_agent.models.chat_template`).

Everything public on :class:`SegmentationEnvironment` that is a plain method becomes a tool for TRL,
so the episode's record is a property, not a method.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import TrajectoryRecord
from medseg_agent.io.text import read_text_file
from medseg_agent.models.checkpoint import checkpoint_reference, load_vision_language_checkpoint
from medseg_agent.protocols import get_protocol, tool_schemas
from medseg_agent.rewards import RewardSpec, resolve_reward, score_record
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.training.schedule import check_schedule
from medseg_agent.training.verl.episodes import EpisodeSpec, finished_text
from medseg_agent.vocabulary.actions import ADD_BBOX, ADD_POINT, STOP_ACTION, CoordinateSpace, ToolCall
from medseg_agent.vocabulary.sample import Sample
from medseg_agent.vocabulary.stop import StopReason


def _google_docstring(name: str) -> str:
    """A Google-style docstring built from the protocol's schema (TRL derives the tool schema from it)."""
    schema = next(s["function"] for s in tool_schemas(CoordinateSpace.NORM1000) if s["function"]["name"] == name)
    properties = schema["parameters"]["properties"]
    lines = [schema["description"]]
    if properties:
        lines += ["", "Args:"] + [f"    {arg}: {spec['description']}" for arg, spec in properties.items()]
    return "\n".join(lines)


class SegmentationEnvironment:
    """One GRPO rollout's episode. TRL calls ``reset(**row)``, then the tool methods, then ``get_reward``."""

    def __init__(self, tool: SegmentationTool, config: EpisodeConfig, reward: RewardSpec) -> None:
        self.tool, self.config, self.reward = tool, config, reward
        self.env: SegmentationEnv | None = None

    def reset(self, **row: Any) -> None:
        spec = EpisodeSpec.from_kwargs(json.loads(row["medseg_episode"]))
        self.env = SegmentationEnv(self.tool, self.config)
        self.env.reset(spec.to_sample(), options={"policy": "trl-grpo"})
        return None

    def _step(self, name: str, arguments: dict[str, Any]) -> list[dict[str, Any]] | str:
        from PIL import Image

        if self.env is None:
            raise RuntimeError("reset() must be called before the tools")
        if self.env.done:
            return "The episode is over and the mask is final; do not call more tools."
        observation = self.env.step([ToolCall(name, arguments)])
        text = finished_text(self.env.record) if self.env.done else observation.text
        if observation.error is not None or name == STOP_ACTION:
            return text
        overlay = Image.fromarray(observation.image)
        return [{"type": "image", "image": overlay}, {"type": "text", "text": text}]

    def add_bbox(self, bbox_2d: list[int]) -> list[dict[str, Any]] | str:
        return self._step(ADD_BBOX, {"bbox_2d": bbox_2d})

    def add_point(self, point_2d: list[int], point_type: Literal["positive", "negative"]) -> list[dict[str, Any]] | str:
        return self._step(ADD_POINT, {"point_2d": point_2d, "point_type": point_type})

    def stop_action(self) -> list[dict[str, Any]] | str:
        return self._step(STOP_ACTION, {})

    @property
    def episode_record(self) -> TrajectoryRecord:
        """The episode's record, closed if the model stopped without ``stop_action``. (A property:
        TRL turns every public method into a tool.)"""
        if self.env is None or self.env.record is None:
            raise RuntimeError("no episode: reset() was not called")
        return self.env.close(StopReason.POLICY_ENDED)

    def get_reward(self) -> float:
        return score_record(self.episode_record, self.reward).total


def final_dice(environments: list[SegmentationEnvironment], **_: Any) -> list[float]:
    """Dice of each rollout's final mask: logged by TRL as ``rewards/final_dice/mean`` (weight 0)."""
    return [float(env.episode_record.final_metrics.get("dice") or 0.0) for env in environments]


def valid_action_rate(environments: list[SegmentationEnvironment], **_: Any) -> list[float]:
    """Share of a rollout's replies that the environment accepted (weight 0, logged)."""
    rates = []
    for env in environments:
        record = env.episode_record
        replies = record.num_replies
        rates.append((len(record.turns) - record.num_errors) / replies if replies else 0.0)
    return rates


SegmentationEnvironment.add_bbox.__doc__ = _google_docstring(ADD_BBOX)
SegmentationEnvironment.add_point.__doc__ = _google_docstring(ADD_POINT)
SegmentationEnvironment.stop_action.__doc__ = _google_docstring(STOP_ACTION)


def grpo_rows(
    samples: Iterable[Sample], view_longest_side: int | None = 512, *, tool_listing: bool = False
) -> list[dict[str, Any]]:
    """TRL rows for ``samples``, from the same builder as the verl rows (one source of prompts).

    ``tool_listing``: keep the protocol's textual tool listing in the system prompt (for chat templates
    that do not render ``tools=``, whose models learnt the tools from that text).
    """
    from PIL import Image

    from medseg_agent.training.verl.dataset import rl_row

    protocol = get_protocol("medsam")
    rows = []
    for index, sample in enumerate(samples):
        row = rl_row(sample, index, view_longest_side=view_longest_side)
        system, user = row["prompt"]
        if tool_listing:
            system = {"role": "system", "content": protocol.system_prompt(CoordinateSpace.NORM1000)}
        view = Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB")
        create = row["extra_info"]["tools_kwargs"]["medseg_episode"]["create_kwargs"]
        rows.append(
            {
                "prompt": [system, {"role": "user", "content": user["content"].removeprefix("<image>")}],
                "images": [view],
                "medseg_episode": json.dumps(create),
            }
        )
    return rows


@dataclass
class GRPOOptions:
    model: str
    output_dir: str
    tool: str = "classic"
    tool_device: str = "cpu"
    reward: str = "medseg"
    reward_overrides: list[str] = field(default_factory=list)
    max_turns: int = 5
    view_longest_side: int | None = 512  # the overlays' size; the rows' first view should match
    num_generations: int = 4
    max_completion_length: int = 1024
    learning_rate: float = 1e-6
    batch_size: int = 4  # prompts x generations per device step, a multiple of num_generations
    grad_accum: int = 1
    max_steps: int = -1
    epochs: float = 1.0
    beta: float = 0.0  # no KL, as both reference systems
    temperature: float = 1.0
    chat_template: str | None = "qwen3_vl"  # "qwen3_vl": TRL's Qwen3-VL template; a path; None: keep
    bf16: bool | None = None  # None: on when CUDA supports it
    use_cpu: bool = False
    gradient_checkpointing: bool = True
    logging_steps: int = 1
    save_steps: int = 100
    save_total_limit: int | None = None
    seed: int = 0
    report_to: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_schedule(self.learning_rate, self.epochs, self.max_steps)


@dataclass
class GRPOResult:
    output_dir: Path
    steps: int
    rewards: list[float]
    #: every log line TRL wrote (step, reward, rewards/final_dice/mean, ...), in order
    logs: list[dict[str, float]] = field(default_factory=list)


def _chat_template(name: str) -> str:
    if name == "qwen3_vl":
        from trl.chat_template_utils import qwen3_vl_chat_template

        return qwen3_vl_chat_template
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"chat template {name!r} is neither 'qwen3_vl' nor a file")
    return read_text_file(path, "chat template")


def ensure_tool_call_parser(processor: Any) -> None:
    """Give the tokenizer a parser for Hermes ``<tool_call>{json}</tool_call>`` replies.

    TRL knows the parsers of the templates it ships; for any other template (a checkpoint's own, the
    demo model's) the Qwen3 one is used: the medsam protocol writes exactly that layout.
    """
    from trl.chat_template_utils import add_response_schema, qwen3_schema

    tokenizer = processor.tokenizer
    if getattr(tokenizer, "response_schema", None) is not None or getattr(tokenizer, "response_template", None):
        return
    try:
        add_response_schema(processor)
    except ValueError:  # TRL does not know this template
        tokenizer.response_schema = qwen3_schema


#: A Qwen-VL config's image and video placeholder tokens and the marks around them.
VISION_TOKEN_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def vision_token_ids(config: Any) -> list[int]:
    """The ids of a Qwen-VL model's vision placeholder tokens, suppressed when GRPO samples.

    Sampled into a completion, such a token has no image behind it: TRL's loss forward marks a
    ``<|video_pad|>`` as video and the model's position indexing fails ("'NoneType' object is not an
    iterator"), an ``<|image_pad|>`` claims an image that is not there. A small policy sampled at
    temperature 1 does write them: the demo's 60-step GRPO run of seed 1 ended that way.
    """
    found = (getattr(config, name, None) for name in VISION_TOKEN_FIELDS)
    return sorted({int(token) for token in found if token is not None})


def generation_settings(extra: dict[str, Any], config: Any) -> dict[str, Any]:
    """``extra`` (GRPOConfig fields) with the vision tokens added to ``generation_kwargs``'
    ``suppress_tokens`` (transformers generation; vLLM's sampling has no such field)."""
    if extra.get("use_vllm"):
        return extra
    generation = dict(extra.get("generation_kwargs") or {})
    generation["suppress_tokens"] = sorted({*generation.get("suppress_tokens", []), *vision_token_ids(config)})
    return {**extra, "generation_kwargs": generation}


def run_grpo(options: GRPOOptions, dataset: Any, callbacks: list[Any] | None = None) -> GRPOResult:
    """Train with TRL's GRPOTrainer on ``dataset`` (rows of :func:`grpo_rows`); save to ``output_dir/final``.

    ``callbacks``: more ``transformers.TrainerCallback`` objects (progress bars, evaluations).
    """
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from medseg_agent.tools.registry import build_tool

    # what takes seconds to check comes before the model, which can take minutes to load
    checkpoint_reference(options.model, "train grpo")
    reward = resolve_reward(options.reward, options.reward_overrides or None)
    template = _chat_template(options.chat_template) if options.chat_template else None
    tool = build_tool(options.tool, device=options.tool_device)
    episode_config = EpisodeConfig(
        max_turns=options.max_turns,
        protocol=get_protocol("medsam").name,
        view_longest_side=options.view_longest_side,
    )
    processor, model = load_vision_language_checkpoint(
        options.model, "train grpo", processor_options={"padding_side": "left"}
    )
    if template is not None:
        processor.chat_template = template
        processor.tokenizer.chat_template = template
    ensure_tool_call_parser(processor)

    rewards: list[float] = []
    logs: list[dict[str, float]] = []

    class RewardLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - transformers' signature
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))
                log_lines.append({"step": state.global_step, **{k: float(v) for k, v in logs.items()}})

    log_lines = logs
    bf16 = (
        options.bf16 if options.bf16 is not None else bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    )

    config = GRPOConfig(
        output_dir=options.output_dir,
        learning_rate=options.learning_rate,
        num_generations=options.num_generations,
        max_completion_length=options.max_completion_length,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        max_steps=options.max_steps,
        num_train_epochs=options.epochs,
        beta=options.beta,
        temperature=options.temperature,
        max_tool_calling_iterations=options.max_turns + 2,
        use_cpu=options.use_cpu,
        bf16=bf16,
        gradient_checkpointing=options.gradient_checkpointing,
        logging_steps=options.logging_steps,
        save_steps=options.save_steps,
        save_total_limit=options.save_total_limit,
        seed=options.seed,
        report_to=options.report_to,
        reward_weights=[0.0, 0.0],  # final_dice, valid_action_rate: logged only; TRL adds get_reward (1)
        **generation_settings(options.extra, model.config),
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[final_dice, valid_action_rate],
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        environment_factory=lambda: SegmentationEnvironment(tool, episode_config, reward),
        callbacks=[RewardLog(), *(callbacks or [])],
    )
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(options.output_dir)
    trainer.train(resume_from_checkpoint=get_last_checkpoint(str(out)) if out.is_dir() else None)
    final = out / "final"
    trainer.model.save_pretrained(final)
    processor.save_pretrained(final)
    from medseg_agent.io.atomic import atomic_write_json

    atomic_write_json(final / "medseg_grpo.json", {"options": asdict(options), "rewards": rewards, "logs": logs})
    return GRPOResult(final, trainer.state.global_step, rewards, logs)
