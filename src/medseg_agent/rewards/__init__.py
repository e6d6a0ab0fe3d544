"""Rewards as a library: pure functions of a trajectory record, returning the total and every term.

>>> from medseg_agent.rewards import score_record
>>> score_record(record, "medsam_agent").total        # doctest: +SKIP

Presets: ``medsam_agent`` and ``ibis_agent`` reproduce the published rewards; ``medseg`` is ours.
Custom rewards come from YAML (:func:`load_reward_config`) or overrides (:func:`resolve_reward`).
"""

from medseg_agent.rewards.config import (
    RewardConfigError,
    load_reward_config,
    parse_overrides,
    resolve_reward,
    spec_from_dict,
    spec_to_dict,
)
from medseg_agent.rewards.facts import EpisodeFacts, StepFacts, episode_facts
from medseg_agent.rewards.presets import (
    PRESETS,
    RewardBreakdown,
    RewardSpec,
    TermGroup,
    available_presets,
    get_preset,
    score_facts,
    score_record,
)
from medseg_agent.rewards.terms import TERMS, RewardParams

__all__ = [
    "PRESETS",
    "TERMS",
    "EpisodeFacts",
    "RewardBreakdown",
    "RewardConfigError",
    "RewardParams",
    "RewardSpec",
    "StepFacts",
    "TermGroup",
    "available_presets",
    "episode_facts",
    "get_preset",
    "load_reward_config",
    "parse_overrides",
    "resolve_reward",
    "score_facts",
    "score_record",
    "spec_from_dict",
    "spec_to_dict",
]
