"""Why an episode ended, in Gymnasium's two kinds: terminated (the policy's own decision) or
truncated (a budget ran out, or the caller closed the episode from outside)."""

from __future__ import annotations

from enum import StrEnum


class StopReason(StrEnum):
    STOP_ACTION = "stop_action"  # the policy stopped: terminated
    TURN_LIMIT = "turn_limit"  # max_turns tool actions used
    TOO_MANY_ERRORS = "too_many_errors"  # the consecutive invalid-reply budget ran out
    POLICY_ENDED = "policy_ended"  # closed from outside: the model stopped calling tools (TRL, verl)
    NO_ACTION = "no_action"  # no episode ran: an RL rollout that never called a tool (verl's reward)

    @property
    def terminated(self) -> bool:
        """The policy ended the episode itself; every other reason truncates it."""
        return self is StopReason.STOP_ACTION
