"""Reward specs from YAML files and ``key=value`` overrides (CLI, verl ``reward_kwargs``).

A YAML file may start from a preset and change only what differs::

    preset: medseg            # optional base
    name: medseg_strict_stop
    terms: {format_valid: 0.1}
    groups:
      quality:
        weight: 0.9
        clip: [0, 1]
        terms: {outcome_dice: 0.6, stopping: 0.1, redundant: null}   # null removes a term
    params: {good_iou: 0.85}

Overrides use dotted paths: ``params.good_iou=0.85``, ``terms.format_valid=0.2``,
``groups.quality.terms.overshoot=-0.5``, ``groups.quality.weight=0.8``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from medseg_agent.io.text import TextFileError, read_text_file, yaml_value
from medseg_agent.rewards.presets import PRESETS, RewardSpec, TermGroup, get_preset
from medseg_agent.rewards.terms import TERMS, RewardParams
from medseg_agent.vocabulary.numbers import is_finite_number


class RewardConfigError(ValueError):
    """A reward configuration that cannot be used, naming the file/field and what was expected."""


def spec_to_dict(spec: RewardSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "terms": dict(spec.terms),
        "groups": {
            g: {"weight": group.weight, "clip": list(group.clip), "terms": dict(group.terms)}
            for g, group in spec.groups.items()
        },
        "params": asdict(spec.params),
    }


def _weights(data: Any, where: str) -> dict[str, float]:
    if not isinstance(data, dict):
        raise RewardConfigError(f"{where}: expected a mapping of term name to weight, got {data!r}")
    out = {}
    for name, weight in data.items():
        if name not in TERMS:
            raise RewardConfigError(f"{where}.{name}: unknown term; known terms: {', '.join(sorted(TERMS))}")
        if weight is None:
            continue
        if not is_finite_number(weight):
            raise RewardConfigError(f"{where}.{name}: expected a finite number (the weight), got {weight!r}")
        out[name] = float(weight)
    return out


def _mapping(value: Any, where: str) -> dict[str, Any]:
    """An override section: a mapping, or nothing (``KEY=`` with no value)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RewardConfigError(f"{where}: expected a mapping (set its keys: {where.split(': ')[-1]}.KEY=VALUE), "
                                f"got {value!r}")
    return value


def _merge_weights(base: dict[str, float], update: Any, where: str) -> dict[str, float]:
    merged = dict(base)
    if not isinstance(update, dict):
        raise RewardConfigError(f"{where}: expected a mapping of term name to weight, got {update!r}")
    removed = [k for k, v in update.items() if v is None]
    merged.update(_weights(update, where))
    for k in removed:
        merged.pop(k, None)
    return merged


def spec_from_dict(data: dict[str, Any], source: str = "reward config") -> RewardSpec:
    """Build a spec; with ``preset:`` the fields given here are merged over that preset."""
    if not isinstance(data, dict):
        raise RewardConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    allowed = {"preset", "name", "description", "terms", "groups", "params"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RewardConfigError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    for key in ("name", "description", "preset"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise RewardConfigError(f"{source}: {key}: expected text, got {data[key]!r}")
    base = RewardSpec(name="custom")
    if data.get("preset") is not None:
        try:
            base = get_preset(data["preset"])
        except ValueError as exc:
            raise RewardConfigError(f"{source}: preset: {exc}") from None
    terms = _merge_weights(base.terms, data.get("terms", {}), f"{source}: terms")
    groups = dict(base.groups)
    raw_groups = data.get("groups", {}) or {}
    if not isinstance(raw_groups, dict):
        raise RewardConfigError(f"{source}: groups: expected a mapping of group name to group, got {raw_groups!r}")
    for gname, raw in raw_groups.items():
        where = f"{source}: groups.{gname}"
        if raw is None:
            groups.pop(gname, None)
            continue
        if not isinstance(raw, dict):
            raise RewardConfigError(f"{where}: expected a mapping with weight, terms, clip; got {raw!r}")
        extra = sorted(set(raw) - {"weight", "terms", "clip"})
        if extra:
            raise RewardConfigError(f"{where}: unknown key(s) {extra}; expected weight, terms, clip")
        old = groups.get(gname, TermGroup(weight=1.0, terms={}))
        clip = raw.get("clip", list(old.clip))
        bounds_ok = isinstance(clip, list | tuple) and len(clip) == 2
        if not (bounds_ok and all(c is None or is_finite_number(c) for c in clip)):
            raise RewardConfigError(f"{where}.clip: expected [low, high], finite numbers (null for open), got {clip!r}")
        if None not in clip and clip[0] > clip[1]:
            raise RewardConfigError(f"{where}.clip: low {clip[0]} is above high {clip[1]}")
        weight = raw.get("weight", old.weight)
        if not is_finite_number(weight):
            raise RewardConfigError(f"{where}.weight: expected a finite number, got {weight!r}")
        groups[gname] = TermGroup(
            weight=float(weight),
            terms=_merge_weights(old.terms, raw.get("terms", {}), f"{where}.terms"),
            clip=(None if clip[0] is None else float(clip[0]), None if clip[1] is None else float(clip[1])),
        )
    params = asdict(base.params)
    raw_params = data.get("params", {}) or {}
    if not isinstance(raw_params, dict):
        raise RewardConfigError(f"{source}: params: expected a mapping, got {raw_params!r}")
    params.update(raw_params)
    try:
        parsed_params = RewardParams.from_dict(params, f"{source}: params")
    except ValueError as exc:
        raise RewardConfigError(str(exc)) from None
    spec = RewardSpec(
        name=str(data.get("name") or (base.name if data.get("preset") else "custom")),
        terms=terms,
        groups=groups,
        params=parsed_params,
        description=str(data.get("description") or base.description),
    )
    if not spec.term_names():
        raise RewardConfigError(f"{source}: the reward has no terms")
    return spec


def load_reward_config(path: str | Path) -> RewardSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(read_text_file(path, "reward config"))
    except TextFileError as exc:
        raise RewardConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise RewardConfigError(f"{path} is not valid YAML: {exc}") from None
    return spec_from_dict(data or {}, str(path))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["params.good_iou=0.85", "groups.quality.terms.stopping=0.1"]`` -> a nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RewardConfigError(f"override {item!r}: expected KEY=VALUE, e.g. params.good_iou=0.85")
        try:
            value = yaml_value(raw) if raw.strip() else None
        except ValueError as exc:
            raise RewardConfigError(f"override {item!r}: {exc}") from None
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RewardConfigError(f"override {item!r}: {part} is set twice in different shapes")
        node[parts[-1]] = value
    return out


def resolve_reward(
    spec: str | RewardSpec = "medseg", overrides: list[str] | dict[str, Any] | None = None
) -> RewardSpec:
    """A preset name or a YAML path, plus overrides (a list of ``KEY=VALUE`` or a nested dict)."""
    if isinstance(spec, RewardSpec):
        base = spec
    elif spec in PRESETS:
        base = PRESETS[spec]
    elif str(spec).endswith((".yaml", ".yml")) or Path(str(spec)).is_file():
        base = load_reward_config(spec)
    else:
        raise RewardConfigError(f"reward {spec!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a YAML file")
    if not overrides:
        return base
    update = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides)
    merged = spec_to_dict(base)
    data: dict[str, Any] = {"name": update.pop("name", merged["name"]), "description": merged["description"]}
    data["terms"] = {**merged["terms"], **_mapping(update.pop("terms", {}), "overrides: terms")}
    groups = merged["groups"]
    for gname, graw in _mapping(update.pop("groups", {}), "overrides: groups").items():
        if graw is None:
            groups[gname] = None
            continue
        graw = _mapping(graw, f"overrides: groups.{gname}")
        group = groups.get(gname) or {"weight": 1.0, "clip": [None, None], "terms": {}}
        group = {**group, **{k: v for k, v in graw.items() if k != "terms"}}
        terms = _mapping(graw.get("terms", {}), f"overrides: groups.{gname}.terms")
        group["terms"] = {**group.get("terms", {}), **terms}
        groups[gname] = group
    data["groups"] = groups
    data["params"] = {**merged["params"], **_mapping(update.pop("params", {}), "overrides: params")}
    if update:
        raise RewardConfigError(f"overrides: unknown key(s) {sorted(update)}; use terms., groups., params., name")
    return spec_from_dict(data, "overrides")
