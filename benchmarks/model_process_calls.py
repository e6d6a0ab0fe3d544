"""What a call to a model in its own process costs (``serve --model-process``), apart from the model.

The zero-cost test double (``zero_cost_tool.py``: the model costs nothing) answers the server's own
call, ``decode_encoded``, in this process and through :class:`medseg_agent.tools.process.ProcessTool`;
the difference is the hand-over: pickling, the pipe, the shared-memory copies, the other process's
turn on a core. Rows carry 256 KiB of previous logits each (``--logits``), as SAM 2's do after the
first turn, and get as much back.

    python benchmarks/model_process_calls.py --rows 1,8,32 --repeats 20 --out runs/benchmarks/model-process-calls.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zero_cost_tool  # noqa: E402  (the benchmarks folder, added above)

from medseg_agent.tools.base import SegmentationTool  # noqa: E402
from medseg_agent.tools.process import ProcessTool  # noqa: E402
from medseg_agent.tools.spec import ToolSpec  # noqa: E402
from medseg_agent.vocabulary.prompts import Prompt  # noqa: E402


def time_calls(tool: SegmentationTool, rows: int, logits: bool, repeats: int, image_size: int) -> dict[str, Any]:
    embedding = tool.encode(np.zeros((image_size, image_size, 3), np.uint8))
    rng = np.random.default_rng(0)
    requests = [(embedding, Prompt(box=np.array([10, 10, 500, 500]),
                                   mask_input=rng.random((1, 256, 256), np.float32) if logits else None))
                for _ in range(rows)]
    tool.decode_encoded(requests)  # first call apart (allocations, the shared block)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        tool.decode_encoded(requests)
    return {"rows": rows, "logits": logits, "wall_ms": (time.perf_counter() - wall) / repeats * 1e3,
            "cpu_ms_this_process": (time.process_time() - cpu) / repeats * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,8,32", help="rows per decode_encoded call, comma-separated")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case (after one untimed)")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the square image (pixels)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    args = parser.parse_args()
    zero_cost_tool.register()
    sides = {"in-process": zero_cost_tool.build_zero_cost_tool(),
             "model process": ProcessTool(ToolSpec(zero_cost_tool.NAME, preload=("zero_cost_tool",)))}
    results = []
    print(f"{'side':<14} {'rows':>4} {'logits':>6} {'wall ms/call':>12} {'CPU ms/call here':>16}")
    for side, tool in sides.items():
        for rows in (int(r) for r in args.rows.split(",")):
            for logits in (False, True):
                result = {"side": side, **time_calls(tool, rows, logits, args.repeats, args.image_size)}
                results.append(result)
                print(f"{side:<14} {rows:>4} {logits!s:>6} {result['wall_ms']:>12.2f} "
                      f"{result['cpu_ms_this_process']:>16.2f}", flush=True)
    sides["model process"].close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1))


if __name__ == "__main__":
    main()
