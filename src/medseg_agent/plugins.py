"""Plug-ins through entry points: how a registry in a low layer gets a tool or a policy defined in a
higher layer (or in another package) without importing it.

An entry point of a group (``medseg_agent.tools``, ``medseg_agent.policies``) names a function that
registers what it brings (``register_tool``, ``register_policy``); the registry calls
:func:`load_plugins` the first time it meets a name it does not know.
"""

from __future__ import annotations

from importlib.metadata import entry_points


class PluginError(RuntimeError):
    """A plug-in's entry point cannot be imported; the message names the plug-in and the cause."""


_LOADED: set[tuple[str, str]] = set()


def load_plugins(group: str) -> None:
    """Run every entry point of ``group`` once."""
    for entry in entry_points(group=group):
        if (group, entry.name) in _LOADED:
            continue
        try:
            register = entry.load()
        except ImportError as exc:
            raise PluginError(f"the {group} plug-in {entry.name!r} ({entry.value}) cannot be imported: {exc}") from exc
        register()
        _LOADED.add((group, entry.name))
