"""A Qwen-VL chat template with tool calling, written for the tiny test models.

It renders the same token layout as the Qwen3-VL instruct checkpoints (``<|im_start|>role`` blocks,
``<|vision_start|><|image_pad|><|vision_end|>`` image slots, a ``# Tools`` system section with the
schemas inside ``<tools></tools>``, ``<tool_call>`` JSON in assistant turns, tool replies as
``<tool_response>`` inside a user block). Assistant output sits inside ``{% generation %}`` markers so
trainers can ask for an assistant-token mask. Stock Qwen2.5-VL templates drop ``tools``; this one
does not, whatever the architecture.
"""

from __future__ import annotations

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
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\\n<tool_response>\\n' -}}{{- render_content(message.content) -}}{{- '\\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""

QWEN_VL_TOOL_TEMPLATE = (_MEDIA + _SYSTEM + _TURNS).strip()
