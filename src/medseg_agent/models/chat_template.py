"""A Qwen-VL chat template with tool calling, written for the small models built from configs.

It renders the same token layout as the Qwen3-VL instruct checkpoints (``<|im_start|>role`` blocks,
``<|vision_start|><|image_pad|><|vision_end|>`` image slots, a ``# Tools`` system section with the
schemas inside ``<tools></tools>``, ``<tool_call>`` JSON in assistant turns, tool replies as
``<tool_response>`` inside a user block). Assistant output sits inside ``{% generation %}`` markers so
trainers can ask for an assistant-token mask. Stock Qwen2.5-VL templates drop ``tools``; this one
does not, whatever the architecture.

:func:`qwen_vl_tool_template` also writes the *protocol layout* that a model trained from scratch
needs (``list_tools=False, tool_replies="user"``): the medsam protocol's system prompt lists the tools
itself, and the ``hf`` policy and the SFT exports show every observation as a user turn (overlay +
text). With it, a tool reply in TRL's GRPO rollouts tokenises exactly like the user turn the model
saw in SFT and sees at inference: the three stages train and test one token layout.
"""

from __future__ import annotations

from typing import Literal

# Image parts: TRL/HF use {"type": "image"}; OpenAI-style parts carry "image_url".
_MEDIA = """
{%- macro render_content(content) -%}
{%- if content is string -%}
{{- content -}}
{%- else -%}
{%- for part in content -%}
{%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}
<|vision_start|><|image_pad|><|vision_end|>
{%- elif part.type == 'video' or 'video' in part -%}
<|vision_start|><|video_pad|><|vision_end|>
{%- elif 'text' in part -%}
{{- part.text -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
"""

_SYSTEM = """
{%- set has_system = messages and messages[0].role == 'system' -%}
{%- set tools = tools if list_tools else none -%}
{%- if tools or has_system -%}
{{- '<|im_start|>system\\n' -}}
{%- if has_system -%}{{- render_content(messages[0].content) -}}{%- endif -%}
{%- if tools -%}
{%- if has_system -%}{{- '\\n\\n' -}}{%- endif -%}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' -}}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' -}}{{- tool | tojson -}}{%- endfor -%}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'
    '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>' -}}
{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- endif -%}
"""

_TURNS = """
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- elif message.role == 'user' -%}
{{- '<|im_start|>user\\n' -}}{{- render_content(message.content) -}}{{- '<|im_end|>\\n' -}}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant\\n' -}}
{%- generation -%}
{%- if message.content -%}{{- render_content(message.content) -}}{%- endif -%}
{%- for call in message.tool_calls or [] -%}
{%- set fn = call.function if call.function else call -%}
{%- if message.content or not loop.first -%}{{- '\\n' -}}{%- endif -%}
{{- '<tool_call>\\n{"name": "' -}}{{- fn.name -}}{{- '", "arguments": ' -}}
{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}
{{- '}\\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>' -}}
{%- endgeneration -%}
{{- '\\n' -}}
{%- elif message.role == 'tool' and tool_replies_as_user -%}
{{- '<|im_start|>user\\n' -}}{{- render_content(message.content) -}}{{- '<|im_end|>\\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\\n<tool_response>\\n' -}}{{- render_content(message.content) -}}{{- '\\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""

ToolReplies = Literal["tool_response", "user"]


def qwen_vl_tool_template(*, list_tools: bool = True, tool_replies: ToolReplies = "tool_response") -> str:
    """The Jinja chat template.

    Args:
        list_tools: render ``tools=`` as a ``# Tools`` section of the system turn (Qwen3-VL). False when
            the system prompt lists the tools itself (the medsam protocol's text mode).
        tool_replies: ``tool_response`` (Qwen3-VL) or ``user``: a tool message renders exactly like a
            user message (the ``hf`` policy's and the SFT exports' layout).
    """
    if tool_replies not in ("tool_response", "user"):
        raise ValueError(f"tool_replies must be 'tool_response' or 'user', got {tool_replies!r}")
    flags = (
        f"{{%- set list_tools = {str(list_tools).lower()} -%}}\n"
        f"{{%- set tool_replies_as_user = {str(tool_replies == 'user').lower()} -%}}"
    )
    return flags + "\n" + (_MEDIA + _SYSTEM + _TURNS).strip()


QWEN_VL_TOOL_TEMPLATE = qwen_vl_tool_template()
