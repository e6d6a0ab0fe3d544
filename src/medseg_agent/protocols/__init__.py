"""Action protocols by name: how a policy writes actions and which prompts it gets."""

from __future__ import annotations

from medseg_agent.protocols.base import ActionProtocol, ParseResult
from medseg_agent.protocols.ibis import IbisProtocol
from medseg_agent.protocols.medsam import MedSamProtocol, tool_schemas

PROTOCOLS: dict[str, type[ActionProtocol]] = {"medsam": MedSamProtocol, "ibis": IbisProtocol}


def get_protocol(name: str) -> ActionProtocol:
    try:
        return PROTOCOLS[name]()
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}") from None


__all__ = [
    "PROTOCOLS",
    "ActionProtocol",
    "IbisProtocol",
    "MedSamProtocol",
    "ParseResult",
    "get_protocol",
    "tool_schemas",
]
