"""A served vision-language model as a policy, through any OpenAI-compatible chat endpoint.

Works with vLLM, SGLang, LMDeploy, TGI and cloud APIs via the official ``openai`` SDK: images go as
base64 PNG data URLs, the conversation carries the earlier overlays (``max_history_images`` bounds
them), and actions come either as ``<tool_call>`` text parsed by the protocol or, with
``native_tools``, as structured ``tool_calls`` (``tools=`` function calling; vLLM needs
``--enable-auto-tool-choice --tool-call-parser hermes``). Transport failures are retried by the SDK
with exponential back-off; what is still failing afterwards raises :class:`PolicyError` with the
server and the cause named.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from medseg_agent.policies.base import PolicyReply
from medseg_agent.policies.chat import ChatPolicy, PolicyError, reply_from
from medseg_agent.protocols.conversation import Conversation, to_openai
from medseg_agent.vocabulary.actions import ToolCall

DEFAULT_BASE_URL = "http://localhost:8000/v1"


class OpenAIPolicy(ChatPolicy):
    """A model behind ``base_url`` (``/v1`` of vLLM or SGLang, or a cloud API).

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        model: served model name; None picks the only model the server lists.
        api_key: key; None reads ``OPENAI_API_KEY`` (local servers accept any value).
        native_tools: structured function calling instead of ``<tool_call>`` text.
        max_history_images: images kept per request (first view included); None keeps all.
        timeout: seconds to wait for one reply before retrying.
        max_retries: retries after connection errors, timeouts, 429 and 5xx (exponential back-off).
        temperature: 0 is greedy; above 0 samples with a per-episode, per-turn seed.
        max_tokens: longest reply.
        extra_body: server-specific request fields, e.g. ``{"top_k": 20}`` for vLLM.
        check_model: list the server's models at construction, so a wrong name fails at once.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        model: str | None = None,
        api_key: str | None = None,
        *,
        native_tools: bool = False,
        max_history_images: int | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        extra_body: dict[str, Any] | None = None,
        check_model: bool = True,
    ) -> None:
        super().__init__(max_history_images=max_history_images, native_tools=native_tools)
        import openai

        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self._openai = openai
        self.base_url = base_url.rstrip("/")
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_retries = max_retries
        self.extra_body = dict(extra_body or {})
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=timeout,
            max_retries=max_retries,
        )
        self.model = model
        if check_model or model is None:
            self.model = self._resolve_model(model)

    # -- server checks ------------------------------------------------------------------------
    def _resolve_model(self, model: str | None) -> str:
        try:
            served = self._served_models()
        except self._openai.APIStatusError as exc:
            if model is None or exc.status_code not in (404, 405):
                raise self._explain(exc, "listing models") from None
            return model  # an API without a model list: a wrong name fails at the first request
        except self._openai.OpenAIError as exc:
            raise self._explain(exc, "listing models") from None
        if model is None:
            if len(served) != 1:
                raise PolicyError(
                    f"{self.base_url} serves {len(served)} models ({', '.join(served) or 'none'}); "
                    "choose one with --model"
                )
            return served[0]
        if served and model not in served:
            raise PolicyError(f"model {model!r} is not served at {self.base_url}; it serves: {', '.join(served)}")
        return model

    def _served_models(self) -> list[str]:
        try:
            data = self.client.models.list().data
        except (AttributeError, TypeError, ValueError):  # the SDK met a body that is not JSON (a web page)
            raise self._unexpected("a model list", "a body that is not JSON", None) from None
        if data is None:  # a server that lists nothing: a named model is tried at the first request
            return []
        if not isinstance(data, list) or not all(isinstance(getattr(m, "id", None), str) for m in data):
            raise self._unexpected("a model list", "no list of models with text ids", data)
        return [m.id for m in data]

    # -- one reply ------------------------------------------------------------------------------
    def generate(self, conversation: Conversation) -> PolicyReply:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai(conversation),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.temperature > 0:
            request["seed"] = self.turn_seed
        tools = self.tools()
        if tools:
            request["tools"] = tools
        if self.extra_body:
            request["extra_body"] = self.extra_body
        try:
            completion = self.client.chat.completions.create(**request)
        except self._openai.OpenAIError as exc:
            raise self._explain(exc, "asking for the next action") from None
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list):
            raise self._unexpected("a chat completion", "no list of 'choices'", completion)
        if not choices:
            return reply_from("", finish_reason="no_choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if not hasattr(message, "content"):
            raise self._unexpected("a chat completion", "its first choice has no message", completion)
        content = _text_of(message.content)
        if content is None:
            kind = type(message.content).__name__
            raise self._unexpected("a chat completion", f"its message content is of type {kind}", completion)
        tool_calls = getattr(message, "tool_calls", None)
        calls = [
            ToolCall(name=c.function.name, arguments=c.function.arguments or {})
            for c in (tool_calls if isinstance(tool_calls, list) else [])
            if hasattr(getattr(c, "function", None), "name")
        ]
        reasoning = _reasoning_of(message)
        if reasoning and "<think>" not in content:
            content = f"<think>\n{reasoning}\n</think>\n{content}"
        usage = getattr(completion, "usage", None)
        finish_reason = getattr(choice, "finish_reason", None)
        return reply_from(
            content,
            calls,
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
            prompt_tokens=_token_count(usage, "prompt_tokens"),
            completion_tokens=_token_count(usage, "completion_tokens"),
        )

    def _unexpected(self, expected: str, why: str, body: Any) -> PolicyError:
        """An answer of the wrong shape (a web page at a wrong --base-url, a server bug) stops with what
        came back, instead of an AttributeError deep inside the SDK or the episode."""
        shown = "" if body is None else f": {(body if isinstance(body, str) else _json_of(body))[:200]!r}"
        return PolicyError(
            f"the model server at {self.base_url} answered something that is not {expected} ({why}){shown}; "
            "does --base-url point at the API root, ending in /v1?"
        )

    def _explain(self, exc: Exception, doing: str) -> PolicyError:
        """A PolicyError saying which server, what failed and what to try."""
        o = self._openai
        where = f"the model server at {self.base_url}"
        if isinstance(exc, o.APITimeoutError):
            return PolicyError(
                f"{where} gave no reply within {self.timeout:g} s ({self.max_retries} retries) while {doing}; "
                "raise --timeout or check the server's load"
            )
        if isinstance(exc, o.APIConnectionError):
            return PolicyError(
                f"cannot reach {where} while {doing} ({exc}); is it running? e.g. "
                "`vllm serve Qwen/Qwen3-VL-8B-Instruct --port 8000`, then --base-url http://localhost:8000/v1"
            )
        if isinstance(exc, o.AuthenticationError | o.PermissionDeniedError):
            return PolicyError(f"{where} refused the API key while {doing}: set --api-key or OPENAI_API_KEY")
        if isinstance(exc, o.NotFoundError):
            return PolicyError(
                f"{where} answered 404 while {doing}: model {self.model!r} or the path is unknown "
                f"({_status_detail(exc)}); check --model and that --base-url ends in /v1"
            )
        if isinstance(exc, o.BadRequestError):
            return PolicyError(
                f"{where} rejected the request while {doing}: {_status_detail(exc)} "
                "(too many images or tokens? lower --max-history-images or --max-tokens)"
            )
        if isinstance(exc, o.APIStatusError):
            return PolicyError(
                f"{where} failed while {doing} after {self.max_retries} retries: "
                f"HTTP {exc.status_code} {_status_detail(exc)}"
            )
        return PolicyError(f"{where} failed while {doing}: {exc}")


def _status_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        detail = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        if detail:
            return str(detail)[:300]
    return str(getattr(exc, "message", exc))[:300]


def _text_of(content: Any) -> str | None:
    """A message's text: a string, nothing, or a list of content parts (some servers answer so);
    None when it is none of these."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        return "".join(part["text"] for part in content if isinstance(part.get("text"), str))
    return None


def _json_of(body: Any) -> str:
    """The body as the server sent it, as near as the SDK's object allows."""
    if isinstance(body, BaseModel):
        try:
            return body.model_dump_json(exclude_unset=True, warnings=False)
        except ValueError:  # PydanticSerializationError: a value the SDK stored as it came
            pass
    return repr(body)


def _token_count(usage: Any, field: str) -> int | None:
    value = getattr(usage, field, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _reasoning_of(message: Any) -> str | None:
    """Reasoning a server split off the content (vLLM/SGLang reasoning parsers)."""
    extra = getattr(message, "model_extra", None) or {}
    value = extra.get("reasoning_content") or extra.get("reasoning")
    return value if isinstance(value, str) and value.strip() else None
