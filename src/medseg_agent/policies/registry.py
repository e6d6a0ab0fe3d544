"""Policies by name, shared by the CLI, the evaluator and the trainers. Imports are lazy.

Policies defined above this layer (the simulated expert lives in :mod:`medseg_agent.experts`) or in
other packages register themselves (:mod:`medseg_agent.plugins`): an entry point of the
``medseg_agent.policies`` group names a function that calls :func:`register_policy`, loaded the
first time an unknown name is asked for.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

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
        factory = getattr(module, attribute)
        return factory(**checked_options(name, factory, options))
    if name not in _REGISTERED:
        _load_plugins()
    if name not in _REGISTERED:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(available_policies())}")
    factory = _REGISTERED[name]
    return factory(**checked_options(name, factory, options))


def checked_options(name: str, factory: Callable[..., Policy], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the factory's signature and type hints (``--policy-option`` values
    come from a command line): an unknown name or a value of the wrong type is a ``ValueError`` naming
    the option (callers add the policy's name), not a ``TypeError`` in the middle of an episode. Text
    that reads as the hinted type is converted (``"0.8"`` for a float)."""
    try:
        parameters = inspect.signature(factory).parameters
        hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    except (TypeError, ValueError, NameError):  # a factory that cannot be introspected checks its own options
        return options
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        named = [k for k, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = sorted(set(options) - set(named))
        if unknown:
            raise ValueError(f"no option {', '.join(unknown)} (the options are: {', '.join(named) or 'none'})")
    checked, problems = {}, []
    for key, value in options.items():
        adapter = TypeAdapter(hints.get(key, Any), config=ConfigDict(arbitrary_types_allowed=True))
        try:
            checked[key] = adapter.validate_python(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(map(str, (key, *error["loc"])))
            problems.append(f"option {where}: {error['msg']} (got {error['input']!r})")
    if problems:
        raise ValueError("; ".join(problems))
    return checked


def _load_plugins() -> None:
    try:
        load_plugins(PLUGIN_GROUP)
    except PluginError as exc:
        raise ValueError(str(exc)) from exc
