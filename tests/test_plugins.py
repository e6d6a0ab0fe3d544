"""Plug-ins: tools and policies that live above the registries (or in other packages) register
themselves through entry points, so no lower layer imports a higher one."""

from __future__ import annotations

import sys
import tomllib
import types
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

from medseg_agent import plugins
from medseg_agent.policies import registry as policy_registry
from medseg_agent.tools import registry as tool_registry
from medseg_agent.vocabulary.errors import ToolError

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@pytest.fixture
def fresh_registries(monkeypatch):
    """Empty registries and a fake plug-in module, so each test starts from nothing."""
    for registry in (tool_registry, policy_registry):
        monkeypatch.setattr(registry, "_REGISTERED", {})
    monkeypatch.setattr(plugins, "_LOADED", set())
    module = types.ModuleType("medseg_test_plugin")
    calls: list[dict] = []

    def tool_factory(**kwargs):
        calls.append(kwargs)
        return tool_registry.build_tool("classic")

    def register():
        tool_registry.register_tool("fake", tool_factory)
        tool_registry.register_tool("fake://", tool_factory)
        policy_registry.register_policy("mine", lambda **options: policy_registry.build_policy("clicker", **options))

    module.register = register
    monkeypatch.setitem(sys.modules, "medseg_test_plugin", module)

    def with_plugins(names: dict[str, str]):
        def fake_entry_points(group: str):
            return [EntryPoint(name, value, group) for name, value in names.items()]

        monkeypatch.setattr(plugins, "entry_points", fake_entry_points)

    return with_plugins, calls


def test_entry_points_register_tools_and_url_schemes(fresh_registries):
    with_plugins, calls = fresh_registries
    with_plugins({"demo": "medseg_test_plugin:register"})
    assert tool_registry.build_tool("fake", device="cuda:1").name == "classic"
    assert calls[-1] == {"checkpoint": None, "device": "cuda:1"}
    tool_registry.build_tool("fake://host:1/x", checkpoint="w.pt", token="t")
    assert calls[-1] == {"checkpoint": "w.pt", "device": "cpu", "token": "t", "url": "fake://host:1/x"}
    assert {"fake", "fake://", "classic"} <= set(tool_registry.available_tools())
    assert policy_registry.build_policy("mine", stop_iou=0.5).stop_iou == 0.5
    assert "mine" in policy_registry.available_policies()


def test_unknown_names_and_broken_plugins_are_named(fresh_registries):
    with_plugins, _ = fresh_registries
    with_plugins({"demo": "medseg_test_plugin:register"})
    with pytest.raises(ToolError, match=r"unknown tool 'nope'; choose one of classic, fake, medsam.* or a URL \(fake://\)"):
        tool_registry.build_tool("nope")
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        policy_registry.build_policy("nope")


def test_a_plugin_that_cannot_be_imported_is_named(fresh_registries):
    with_plugins, _ = fresh_registries
    with_plugins({"broken": "medseg_no_such_module:register"})
    with pytest.raises(ToolError, match=r"tools plug-in 'broken' \(medseg_no_such_module:register\) cannot be"):
        tool_registry.build_tool("other")
    with pytest.raises(ValueError, match=r"policies plug-in 'broken' .* cannot be imported"):
        policy_registry.build_policy("other")


def test_the_installed_entry_points_are_the_projects():
    """Fails when the environment's medseg-agent metadata predates pyproject.toml: `pip install -e .`."""
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]
    for group, entries in declared.items():
        installed = {entry.name: entry.value for entry in entry_points(group=group)}
        assert {name: installed.get(name) for name in entries} == entries, (
            f"entry points of {group!r} are not installed; reinstall medseg-agent (pip install -e .)"
        )


def test_the_http_tool_and_the_expert_come_from_their_plugins():
    from medseg_agent.experts.expert import ExpertPolicy

    assert {"http://", "https://"} <= set(tool_registry.available_tools())
    assert isinstance(policy_registry.build_policy("expert"), ExpertPolicy)
    with pytest.raises(ToolError, match="does not apply to a tool server URL"):
        tool_registry.build_tool("http://127.0.0.1:1", checkpoint="sam.pth")
