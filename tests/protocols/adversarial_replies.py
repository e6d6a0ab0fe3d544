"""Hypothesis strategies for hostile model replies, for both protocols, as text and as tool calls.

What a sampling loop can emit and what broke the parsers once (issue 10): numbers with hundreds or
thousands of digits, non-ASCII and underscored digits, NaN/Infinity, JSON nested thousands deep,
duplicate keys, unbalanced and repeated tags, long whitespace runs, lone UTF-16 surrogates, and
replies up to the 1 MiB size bound. Long runs are built as ``token * count`` so that hypothesis only
chooses the token and the count: examples stay cheap to generate however large the reply.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from medseg_agent.protocols.base import MAX_REPLY_CHARS
from medseg_agent.vocabulary.actions import ToolCall

#: Far above the 50 ms target (measured by ``benchmarks/parser_worst_case.py``), far below the
#: 20-48 s the old regexes took: a loaded CI machine passes, a super-linear parser does not.
SECONDS_PER_REPLY = 1.0

TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<action>", "</action>", "<answer>", "</answer>"]
NAMES = ["add_bbox", "add_point", "stop_action", "zoom", "", "add_\ud800point"]

surrogates = st.characters(categories=["Cs"])
whitespace_runs = st.builds(
    lambda ch, n: ch * n, st.sampled_from([" ", "\t", "\n", "\r\n", "\u3000", "\xa0"]), st.integers(1, 200_000)
)
digit_runs = st.integers(1, 6000).map(lambda n: "9" * n)
non_ascii_digits = st.text(st.characters(categories=["Nd"], exclude_characters="0123456789"), min_size=1, max_size=5)
number_texts = st.one_of(
    st.integers(-10, 1200).map(str),
    st.floats(0, 1).map(lambda v: f"{v:.4f}"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    digit_runs,
    digit_runs.map(lambda d: d + ".5"),
    non_ascii_digits,
    st.sampled_from(["4_5_0", "nan", "inf", "-Infinity", "1e999", "0x1f", "１２", "1.2.3", "", "+", "."]),
)


@st.composite
def nesting(draw: st.DrawFn) -> str:
    opener = draw(st.sampled_from(["[", '{"a": ', '{"point_2d": ']))
    closer = "]" if opener == "[" else "}"
    depth = draw(st.integers(1, 6000))
    closed = draw(st.booleans())
    return opener * depth + ("0" + closer * depth if closed else "")


def _json_number(draw: st.DrawFn) -> str:
    """A coordinate as a JSON literal (maybe invalid JSON) or as a JSON string."""
    text = draw(number_texts)
    return json.dumps(text) if draw(st.booleans()) else text


@st.composite
def call_arguments(draw: st.DrawFn) -> str:
    """The arguments object of a medsam call as JSON text, often broken on purpose."""
    count = draw(st.sampled_from([2, 4, 1, 5]))
    coords = ", ".join(_json_number(draw) for _ in range(count))
    key = "bbox_2d" if count == 4 else "point_2d"
    point_type = json.dumps(draw(st.sampled_from(["positive", "negative", "both"])))
    parts = [f'"{key}": [{coords}]', f'"point_type": {point_type}']
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(parts)))  # a duplicate key
    if draw(st.integers(0, 4)) == 0:
        parts.append(f'"x": {draw(nesting())}')
    return "{" + ", ".join(parts) + "}"


@st.composite
def medsam_call(draw: st.DrawFn) -> str:
    name = json.dumps(draw(st.sampled_from(NAMES)))
    body = f'{{"name": {name}, "arguments": {draw(call_arguments())}}}'
    if draw(st.booleans()):
        body = f'{{"name": {name}, "name": "stop_action", "arguments": {{}}}}'
    return f"<tool_call>{body}" + draw(st.sampled_from(["</tool_call>", "", "</tool_call></tool_call>"]))


@st.composite
def ibis_action(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["Positive", "negative", "POSITIVE", "Box", ""]))
    pad = draw(st.one_of(st.just(""), whitespace_runs))
    if draw(st.integers(0, 5)) == 0:
        body = draw(st.sampled_from(["Terminate", " terminate\n", "Termination"]))
    else:
        body = f"{kind} Point ({pad}{draw(number_texts)}{pad},{pad}{draw(number_texts)}{pad})"
    return f"<action>{body}" + draw(st.sampled_from(["</action>", ""]))


@st.composite
def bursts(draw: st.DrawFn) -> str:
    """One token repeated up to the reply size bound: the shape of a model stuck in a loop."""
    token = draw(st.sampled_from([*TAGS, "<tool_call>{", "[", "{", '"', "\\", ",", "9"]))
    return token * draw(st.integers(1, MAX_REPLY_CHARS // len(token)))


def replies(call: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Whole replies: fragments of calls, tags, runs, surrogates and text in any order."""
    fragment = st.one_of(
        call,
        st.sampled_from(TAGS),
        st.text(max_size=30),
        surrogates,
        whitespace_runs,
        nesting(),
        bursts(),
    )
    return st.lists(fragment, max_size=6).map("".join)


medsam_replies = replies(medsam_call())
ibis_replies = replies(ibis_action())

#: Python values a trainer or client may pass as already-decoded tool-call arguments.
python_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.integers(1, 5000).map(lambda n: 10**n)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | surrogates,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


@st.composite
def deep_python(draw: st.DrawFn) -> list:
    value: list = []
    for _ in range(draw(st.integers(1, 3000))):
        value = [value]
    return value


@st.composite
def tool_calls(draw: st.DrawFn) -> list[ToolCall]:
    calls = []
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(NAMES))
        arguments = draw(
            st.one_of(
                call_arguments(),
                st.dictionaries(
                    st.sampled_from(["bbox_2d", "point_2d", "point_type"]),
                    python_values | deep_python() | st.lists(python_values, min_size=2, max_size=4),
                    max_size=3,
                ),
                deep_python(),
                st.text(max_size=20),
            )
        )
        calls.append(ToolCall(name, arguments))
    return calls
