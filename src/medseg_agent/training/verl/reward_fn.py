"""verl's custom reward entry point, scoring the rollout's trajectory record with our reward library.

Configure it with::

    reward.custom_reward_function.path=pkg://medseg_agent.training.verl.reward_fn
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.reward=medsam_agent      # preset or YAML path
    +reward.custom_reward_function.reward_kwargs.overrides='[params.good_iou=0.85]'

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info)``; in multi-turn runs
``extra_info`` holds what the tools wrote (the record as JSON under ``medseg_record``). A rollout
that never called a tool has no record: it is scored as an empty episode against the row's ground
truth, so every sample returns the same keys (verl stacks them into arrays).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from medseg_agent.environment.record import TrajectoryRecord
from medseg_agent.rewards import RewardSpec, resolve_reward, score_record
from medseg_agent.training.verl.episodes import record_from_fields
from medseg_agent.vocabulary.stop import StopReason

DATA_SOURCE = "medseg_agent"


@functools.lru_cache(maxsize=32)
def _spec(reward: str, overrides_json: str) -> RewardSpec:
    overrides = json.loads(overrides_json)
    return resolve_reward(reward, overrides or None)


def ground_truth_payload(gt_mask_rle: dict[str, Any], target: str) -> str:
    """The ``reward_model.ground_truth`` string of an RL row."""
    return json.dumps({"gt_mask_rle": gt_mask_rle, "target": target})


def empty_record(ground_truth: str | dict[str, Any]) -> TrajectoryRecord:
    """The record of a rollout that never acted: no turns, empty mask, the row's ground truth."""
    data = json.loads(ground_truth) if isinstance(ground_truth, str) else dict(ground_truth)
    if "gt_mask_rle" not in data:
        raise ValueError("reward_model.ground_truth must be the JSON written by ground_truth_payload (gt_mask_rle)")
    size = tuple(int(v) for v in data["gt_mask_rle"]["size"])
    return TrajectoryRecord(
        target=str(data.get("target", "")),
        image_size=size,
        view_size=size,
        gt_mask_rle=data["gt_mask_rle"],
        stop_reason=StopReason.NO_ACTION,
        policy="verl",
    )


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str | dict[str, Any],
    extra_info: dict[str, Any] | None = None,
    reward: str = "medseg",
    overrides: list[str] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """``{"score": total, <every term>, "group/<name>": ...}`` for one rollout."""
    spec = _spec(str(reward), json.dumps(list(overrides or [])))
    record = record_from_fields(extra_info or {})
    if record is None:
        record = empty_record(ground_truth)
    elif record.gt_mask_rle is None:
        record.gt_mask_rle = empty_record(ground_truth).gt_mask_rle
    return score_record(record, spec).flat()
