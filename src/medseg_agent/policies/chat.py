"""What every chat-model policy shares: the conversation, its history limit and error turns.

A model policy (served through an OpenAI-compatible API or loaded locally) only has to turn a
:class:`Conversation` into one assistant reply. This base class keeps the conversation exactly as
the SFT exports build it (system prompt, first user turn with the image, then one assistant reply
and one user turn per step; after an invalid reply the user turn carries the error text and no
image), trims it to a bounded number of images, and records the reply for the next turn.

Invalid replies are not retried here: the environment turns each into an error observation the
model reads and answers again, ends the episode after ``EpisodeConfig.max_consecutive_errors``
invalid replies in a row (``stop_reason="too_many_errors"``, the mask as it was, empty if nothing
valid ever ran) and refuses a stop before any mask ``first_stop_retries`` times. Failures of the
model *server* (unreachable, wrong model name, errors after the transport retries) raise
:class:`PolicyError` instead: they say nothing about the model, so they must not be scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from medseg_agent.environment.episode import Observation
from medseg_agent.policies.base import EpisodeContext, Policy, PolicyReply
from medseg_agent.protocols import tool_schemas
from medseg_agent.protocols.base import ParseFailure, load_json, quote
from medseg_agent.protocols.conversation import Conversation
from medseg_agent.vocabulary.actions import ToolCall

#: Where the MedSAM protocol's system prompt starts its textual copy of the tool schemas.
TOOL_LISTING_MARKER = "\n\n# Tools\n"


class PolicyError(RuntimeError):
    """The model behind a policy could not be queried (server down, unknown model, bad key, ...)."""


class ChatPolicy(Policy):
    """Base of the ``openai`` and ``hf`` policies.

    Args:
        max_history_images: at most this many images (the first view included) are sent per request;
            older turns are dropped, the system prompt and first user turn always stay. None: all.
        native_tools: ask for structured function calls (``tools=``) instead of ``<tool_call>`` text.
            The chat template (or server) then lists the tools, so the system prompt's own copy is
            removed to avoid listing them twice.
    """

    uses_ground_truth = False

    def __init__(self, *, max_history_images: int | None = None, native_tools: bool = False) -> None:
        if max_history_images is not None and max_history_images < 1:
            raise ValueError(f"max_history_images must be at least 1 (the first view), got {max_history_images}")
        self.max_history_images = max_history_images
        self.native_tools = native_tools
        self.conversation: Conversation | None = None
        self.context: EpisodeContext | None = None
        self.replies = 0

    # -- the Policy interface -------------------------------------------------------------------
    def reset(self, context: EpisodeContext, observation: Observation) -> None:
        conversation = Conversation.start(context.protocol, context.target, observation.image, context.frame.space)
        self.resume(context, conversation)

    def resume(self, context: EpisodeContext, conversation: Conversation) -> None:
        """Continue an episode whose earlier replies came from elsewhere (a person correcting the
        agent in the annotation app, a stored record): ``conversation`` holds them as assistant turns
        and ends with the last one, and the next :meth:`act` adds the observation after it."""
        self.context = context
        self.conversation = Conversation(list(conversation.messages))
        if self.native_tools:
            system = self.conversation.messages[0]
            self.conversation.messages[0] = dataclasses.replace(system, text=without_tool_listing(system.text))
        self.replies = sum(1 for message in self.conversation.messages if message.role == "assistant")

    def act(self, observation: Observation) -> PolicyReply:
        if self.conversation is None or self.context is None:
            raise RuntimeError(f"{type(self).__name__}.act() called before reset()")
        if self.replies:
            # The rule shared with the exports: no image after an error reply (the view is unchanged).
            self.conversation.add_user(observation.text, None if observation.error else observation.image)
        reply = self.generate(self.conversation.trimmed(self.max_history_images))
        self.replies += 1
        self.conversation.add_assistant(reply.text or "")
        return reply

    # -- for subclasses -------------------------------------------------------------------------
    @abstractmethod
    def generate(self, conversation: Conversation) -> PolicyReply:
        """One assistant reply to ``conversation`` (already trimmed). Raise PolicyError if the
        model cannot be queried; never raise on what the model wrote."""

    def tools(self) -> list[dict[str, Any]] | None:
        """Function schemas offered in native mode: the protocol's actions, in the episode's space."""
        if not self.native_tools or self.context is None:
            return None
        supported = self.context.protocol.supported_tools
        schemas = tool_schemas(self.context.frame.space)
        return [s for s in schemas if s["function"]["name"] in supported]

    @property
    def turn_seed(self) -> int:
        """A seed that differs per episode and per reply, for reproducible sampling."""
        return (self.context.seed if self.context else 0) * 1000 + self.replies


def without_tool_listing(system_prompt: str) -> str:
    """The system prompt without its textual tool section (kept when it has none)."""
    head, marker, _ = system_prompt.partition(TOOL_LISTING_MARKER)
    return head if marker else system_prompt


def tool_call_text(calls: Sequence[ToolCall]) -> str:
    """Native tool calls written as Hermes ``<tool_call>`` blocks: what the conversation history and
    the trajectory record keep, identical to the text-mode form a Qwen chat template renders."""
    blocks = []
    for call in calls:
        arguments = call.arguments
        if isinstance(arguments, str):
            with contextlib.suppress(ParseFailure):  # a malformed string is kept as written
                arguments = load_json(arguments, "arguments") if arguments.strip() else {}
        if isinstance(arguments, str):
            args_json = arguments
        else:
            try:
                args_json = json.dumps(arguments)
            except (ValueError, RecursionError):  # a 5,000-digit integer, a 1,000-deep list: quoted, bounded
                args_json = quote(arguments)
        blocks.append(f'<tool_call>\n{{"name": {json.dumps(call.name)}, "arguments": {args_json}}}\n</tool_call>')
    return "\n".join(blocks)


def reply_from(content: str | None, calls: Sequence[ToolCall] = (), **meta: Any) -> PolicyReply:
    """A reply carrying both the model's text and its native calls (the calls win when parsing)."""
    text = content or ""
    if calls:
        rendered = tool_call_text(calls)
        text = f"{text}\n{rendered}" if text.strip() else rendered
    return PolicyReply(text=text, tool_calls=list(calls) or None, meta=dict(meta))
