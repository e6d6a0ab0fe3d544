"""Policies by name, shared by the CLI, the evaluator and the trainers. Imports are lazy."""

from __future__ import annotations

import importlib
from typing import Any

from medseg_agent.policies.base import Policy

_BUILTIN: dict[str, str] = {
    "clicker": "medseg_agent.policies.clicker:ClickerPolicy",
    "expert": "medseg_agent.experts.expert:ExpertPolicy",
    "openai": "medseg_agent.policies.openai_policy:OpenAIPolicy",
    "hf": "medseg_agent.policies.hf_policy:HFPolicy",
}


def available_policies() -> list[str]:
    return sorted(_BUILTIN)


def build_policy(name: str, **options: Any) -> Policy:
    if name not in _BUILTIN:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(available_policies())}")
    module_name, attribute = _BUILTIN[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"policy {name!r} is not available in this installation: {exc}") from None
    return getattr(module, attribute)(**options)
