"""Policies by name, shared by the CLI, the evaluator and the trainers. Imports are lazy.

Policies defined above this layer (the simulated expert lives in :mod:`medseg_agent.experts`) or in
other packages register themselves (:mod:`medseg_agent.plugins`): an entry point of the
``medseg_agent.policies`` group names a function that calls :func:`register_policy`, loaded the
first time an unknown name is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from medseg_agent.plugins import PluginError, load_plugins
from medseg_agent.policies.base import Policy

PLUGIN_GROUP = "medseg_agent.policies"

_BUILTIN: dict[str, str] = {
    "box-only": "medseg_agent.policies.box:BoxOnlyPolicy",
    "clicker": "medseg_agent.policies.clicker:ClickerPolicy",
    "openai": "medseg_agent.policies.openai_policy:OpenAIPolicy",
    "hf": "medseg_agent.policies.hf_policy:HFPolicy",
}
_REGISTERED: dict[str, Callable[..., Policy]] = {}


def register_policy(name: str, factory: Callable[..., Policy]) -> None:
    """Make ``factory`` (a Policy class or a function taking its options) available under ``name``."""
    _REGISTERED[name] = factory


def available_policies() -> list[str]:
    _load_plugins()
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def build_policy(name: str, **options: Any) -> Policy:
    if name in _BUILTIN:
        module_name, attribute = _BUILTIN[name].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ValueError(f"policy {name!r} is not available in this installation: {exc}") from None
        return getattr(module, attribute)(**options)
    if name not in _REGISTERED:
        _load_plugins()
    if name not in _REGISTERED:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(available_policies())}")
    return _REGISTERED[name](**options)


def _load_plugins() -> None:
    try:
        load_plugins(PLUGIN_GROUP)
    except PluginError as exc:
        raise ValueError(str(exc)) from exc
