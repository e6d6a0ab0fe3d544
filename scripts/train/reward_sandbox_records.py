"""Write trajectory records of known, different quality, to judge reward presets on.

Runs several simulated policies on the demo dataset (or any dataset ``open_dataset`` reads) with a
real segmentation tool and saves one record per (policy, sample) under ``OUT/<policy>/``. Then:

    medseg-agent reward compare --records OUT

Policies (all see the ground truth; their quality differs by construction):

- ``clicker-stop0.9``: RITM corrective clicks, stops at IoU 0.9 (good, efficient);
- ``clicker-stop0.5``: the same, stops at IoU 0.5 (premature stop);
- ``clicker-nostop``: never stops, runs into the turn limit (long, often no gain at the end);
- ``box-stop``: a jittered ground-truth box, then stop (one action);
- ``box-clicker``: the box, then corrective clicks up to IoU 0.9 (the expert's recipe);
- ``noisy-clicker``: 40 % of clicks land on a random pixel with a random sign (bad process);
- ``box-clicker-padded``: ``box-clicker`` with a click on an already-correct pixel after every
  corrective click (same masks, wasted turns: tests the turn and redundancy terms);
- ``expert``: the project's simulated expert.

Resumes: existing records are kept. Usage:

    python scripts/train/reward_sandbox_records.py --out runs/reward_sandbox [--data DIR] [--tool classic]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medseg_agent.data import open_dataset
from medseg_agent.environment.episode import EpisodeConfig, Observation, SegmentationEnv
from medseg_agent.environment.record import save_record
from medseg_agent.experts.strategy import bounding_box, jittered_box
from medseg_agent.policies.base import EpisodeContext, Policy, PolicyReply
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.clicks import interior_distance
from medseg_agent.policies.registry import build_policy
from medseg_agent.policies.runner import run_episode
from medseg_agent.runs.parallel import progress_bar
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.tools.registry import build_tool
from medseg_agent.vocabulary.actions import AddBox, AddPoint, Stop
from medseg_agent.vocabulary.sample import Sample


class BoxThenClicks(Policy):
    """A jittered ground-truth box, then up to ``clicks`` corrective clicks (RITM rule) until
    ``stop_iou``; with ``noise`` a click goes to a random pixel with a random sign instead."""

    uses_ground_truth = True

    def __init__(
        self, name: str, box: bool, clicks: int, stop_iou: float | None, noise: float = 0.0, padding: bool = False
    ) -> None:
        self.name, self.box, self.clicks, self.noise, self.padding = name, box, clicks, noise, padding
        self.clicker = ClickerPolicy(stop_iou=stop_iou)

    def reset(self, context: EpisodeContext, observation: Observation) -> None:
        self.context = context
        self.rng = np.random.default_rng(context.seed)
        self.clicker.reset(context, observation)
        self.actions = 0

    def act(self, observation: Observation) -> PolicyReply:
        ctx = self.context
        self.actions += 1
        if self.box and self.actions == 1:
            x1, y1, x2, y2 = jittered_box(bounding_box(ctx.gt_mask), ctx.gt_mask.shape, self.rng, 0.1)
            a = ctx.frame.from_pixels(x1, y1)
            b = ctx.frame.from_pixels(x2, y2)
            return PolicyReply(action=AddBox(a[0], a[1], max(b[0], a[0] + 1), max(b[1], a[1] + 1)))
        if self.actions > self.clicks + self.box:
            return PolicyReply(action=Stop())
        if self.padding and self.actions % 2 == 1:  # a click on a pixel the mask already gets right
            inside = np.logical_and(observation.mask, ctx.gt_mask)
            if inside.any():
                y, x = np.unravel_index(int(np.argmax(interior_distance(inside))), inside.shape)
                return PolicyReply(action=AddPoint(*ctx.frame.from_pixels(float(x), float(y)), True))
        if self.noise and self.rng.random() < self.noise:
            h, w = ctx.gt_mask.shape
            x, y = ctx.frame.from_pixels(float(self.rng.integers(w)), float(self.rng.integers(h)))
            return PolicyReply(action=AddPoint(x, y, bool(self.rng.random() < 0.5)))
        reply = self.clicker.act(observation)
        if isinstance(reply.action, Stop) and self.actions == 1:  # never stop before any mask
            return PolicyReply(action=AddPoint(*ctx.frame.from_pixels(*np.argwhere(ctx.gt_mask)[0][::-1]), True))
        return reply


def _clicker(name: str, stop_iou: float | None) -> Policy:
    policy = ClickerPolicy(stop_iou=stop_iou)
    policy.name = name
    return policy


def policies(tool: SegmentationTool) -> dict[str, tuple[Callable[[], Policy], int]]:
    """name -> (factory, max_turns)."""
    out: dict[str, tuple[Callable[[], Policy], int]] = {
        "clicker-stop0.9": (lambda: _clicker("clicker-stop0.9", 0.9), 5),
        "clicker-stop0.5": (lambda: _clicker("clicker-stop0.5", 0.5), 5),
        "clicker-nostop": (lambda: _clicker("clicker-nostop", None), 8),
        "box-stop": (lambda: BoxThenClicks("box-stop", True, 0, None), 5),
        "box-clicker": (lambda: BoxThenClicks("box-clicker", True, 4, 0.9), 5),
        "noisy-clicker": (lambda: BoxThenClicks("noisy-clicker", False, 5, 0.9, noise=0.4), 5),
        "box-clicker-padded": (lambda: BoxThenClicks("box-clicker-padded", True, 7, 0.9, padding=True), 8),
    }
    out["expert"] = (lambda: build_policy("expert"), 5)  # it looks ahead on the episode's own tool session
    return out


def samples(data: str | None) -> list[Sample]:
    if data is None:
        from medseg_agent.data.demo import build_demo_dataset, default_demo_dir

        data = str(build_demo_dataset(default_demo_dir()))
    dataset = open_dataset(data)
    return list(dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the records (one subfolder per policy)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the demo dataset, built if missing)")
    parser.add_argument("--tool", default="classic", help="segmentation tool: classic, sam, sam2, http://...")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N samples")
    args = parser.parse_args()
    tool = build_tool(args.tool)
    items = samples(args.data)[: args.limit]
    plan = policies(tool)
    with progress_bar() as progress:
        task = progress.add_task("episodes", total=len(items) * len(plan))
        for name, (factory, max_turns) in plan.items():
            env = SegmentationEnv(tool, EpisodeConfig(max_turns=max_turns))
            for i, sample in enumerate(items):
                path = args.out / name / f"{sample.sample_id}.json"
                if not path.exists():
                    record = run_episode(env, factory(), sample, seed=i)
                    record.policy = name
                    save_record(record, path)
                progress.advance(task)
    print(f"records in {args.out}; next: medseg-agent reward compare --records {args.out}")


if __name__ == "__main__":
    main()
