"""Worst-case parsing time of hostile replies, for both protocols, in text and in tool calls.

    .venv/bin/python benchmarks/parser_worst_case.py [--sizes 10000 100000 1048576] [--repeats 5] [--json out.json]

Target (issue 10): any reply of up to 1 MiB is answered (an action or a typed error) within 50 ms of
parsing time. The corpus holds the shapes that once took seconds or raised: one token repeated up to
the size (``<think>``, ``<action>``, ``<tool_call>``, brackets, quotes, commas, digits), whitespace runs
inside a click, a number with as many digits as fit, nesting as deep as fits, duplicate keys, lone
surrogates, the same as the arguments string of a structured tool call, and one reply a byte over
the bound. Each reply is parsed ``--repeats`` times; the table shows the median and the slowest run
per family and size, and the exit status is 1 when any median exceeds the target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

from medseg_agent.protocols import get_protocol
from medseg_agent.protocols.base import MAX_REPLY_CHARS, clean_reply
from medseg_agent.vocabulary.actions import CoordinateSpace, ToolCall
from medseg_agent.vocabulary.coordinates import CoordinateFrame

TARGET_SECONDS = 0.050
FRAMES = {
    "medsam": CoordinateFrame(CoordinateSpace.NORM1000, (512, 512), (512, 512)),
    "ibis": CoordinateFrame(CoordinateSpace.NORM1, (512, 512), (512, 512)),
}


def fill(prefix: str, unit: str, suffix: str, size: int) -> str:
    """``prefix + unit * k + suffix`` of about ``size`` characters."""
    return prefix + unit * max(1, (size - len(prefix) - len(suffix)) // len(unit)) + suffix


def corpus(size: int) -> dict[str, tuple[str, str, list[ToolCall] | None]]:
    """family -> (protocol, text, tool calls)."""
    call = '<tool_call>{"name": "add_point", "arguments": '
    return {
        "medsam: <think> burst": ("medsam", fill("", "<think>", "", size), None),
        "medsam: <tool_call> burst": ("medsam", fill("", "<tool_call>", "", size), None),
        "medsam: closed calls burst": ("medsam", fill("", "<tool_call>{}</tool_call>", "", size), None),
        "medsam: closed thinks burst": ("medsam", fill("", "<think></think>", "", size), None),
        "medsam: stray </think> burst": ("medsam", fill("", "</think>", "", size), None),
        "medsam: 30 thinks, long call": (
            "medsam", fill("<think>a</think>" * 30 + "<tool_call>", " ", "</tool_call>", size), None),
        "medsam: unclosed think + call": ("medsam", fill("<think>", "x", '<tool_call>{"name": "stop_action"}', size),
                                          None),
        "medsam: digits in a call": ("medsam", fill(call + '{"point_2d": [', "9", ', 1]}}</tool_call>', size), None),
        "medsam: nesting in a call": ("medsam", fill(call, "[", "</tool_call>", size), None),
        "medsam: duplicate keys": ("medsam", fill(call + "{", '"point_type": "positive", ', "}}</tool_call>", size),
                                   None),
        "medsam: whitespace in a call": ("medsam", fill("<tool_call>", " ", '{"name": "stop_action"}', size), None),
        "medsam: surrogates": ("medsam", fill("", "\ud800<tool_call>", "", size), None),
        "medsam: tool call arguments": ("medsam", "", [ToolCall("add_point", fill('{"point_2d": ', "[", "", size))]),
        "ibis: <action> burst": ("ibis", fill("", "<action>", "", size), None),
        "ibis: <think> burst": ("ibis", fill("", "<think>", "", size), None),
        "ibis: spaces in a click": ("ibis", fill("<action>Positive Point (", " ", ")</action>", size), None),
        "ibis: spaces after a number": ("ibis", fill("<action>Positive Point (0.5", " ", "x, 0.5)</action>", size),
                                        None),
        "ibis: commas in a click": ("ibis", fill("<action>Positive Point (", ",", ")</action>", size), None),
        "ibis: digits in a click": ("ibis", fill("<action>Positive Point (", "9", ", 0.5)</action>", size), None),
        "ibis: surrogates": ("ibis", fill("", "\udfff<action>", "", size), None),
    }


def timings(parse: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and slowest of ``repeats`` runs (seconds). The median is judged: on a shared machine the
    slowest run measures the neighbours as much as the parser."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        parse()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), max(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, MAX_REPLY_CHARS],
                        help="reply sizes in characters (default: 10 kB, 100 kB and the 1 MiB bound)")
    parser.add_argument("--repeats", type=int, default=5, help="parses per reply; the median is judged")
    parser.add_argument("--json", default=None, help="also write the table as JSON")
    args = parser.parse_args()
    protocols = {name: get_protocol(name) for name in FRAMES}
    rows: list[dict[str, object]] = []
    for size in args.sizes:
        cases = corpus(size)
        cases["medsam: one character over the bound"] = ("medsam", "x" * (MAX_REPLY_CHARS + 1), None)
        for family, (name, text, calls) in cases.items():
            protocol, frame = protocols[name], FRAMES[name]
            result = protocol.parse(text, frame, calls)
            median, slowest = timings(lambda p=protocol, t=text, f=frame, c=calls: p.parse(t, f, c), args.repeats)
            outcome = result.error.kind if result.error else type(result.action).__name__
            rows.append({"family": family, "size": size, "ms": median * 1000, "max_ms": slowest * 1000,
                         "outcome": str(outcome)})
    print("| family | size (chars) | parse, median (ms) | slowest (ms) | outcome |\n|---|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['family']} | {row['size']:,} | {row['ms']:.2f} | {row['max_ms']:.2f} | {row['outcome']} |")
    surrogates = {"alternating": fill("", "\ud800<", "", MAX_REPLY_CHARS), "dense": "\udfff" * MAX_REPLY_CHARS}
    for label, text in surrogates.items():
        median, _ = timings(lambda t=text: clean_reply(t), args.repeats)
        print(f"\nescaping surrogates for the record (env.step, not parsing), 1 MiB {label}: {median * 1000:.2f} ms")
    worst = max(rows, key=lambda r: r["ms"])
    print(f"\nworst median: {worst['ms']:.2f} ms ({worst['family']}, {worst['size']:,} chars); "
          f"target {TARGET_SECONDS * 1000:g} ms")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    return 0 if worst["ms"] <= TARGET_SECONDS * 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
