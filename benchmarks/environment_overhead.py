"""Environment overhead per step, encodes per episode, and classic-tool latency per action.

    .venv/bin/python benchmarks/environment_overhead.py [--episodes 20] [--json out.json]

Overhead is everything ``SegmentationEnv.step`` does besides the tool's own prediction: parsing the
model text, updating the prompt state, IoU/Dice, RLE of the mask for the record, and rendering the
512 overlay (the final step also computes NSD and HD95). It is measured at 1024x1024 with the
model replies given as text, exactly as an MLLM's would be. Tool latency is measured on the real demo
images resized to 512x512 and 1024x1024, with a box then corrective clicks.
"""

from __future__ import annotations

import argparse
import json
import statistics

import cv2
import numpy as np

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.policies.clicks import next_click
from medseg_agent.tools.registry import build_tool
from medseg_agent.vocabulary.actions import AddBox, AddPoint, Stop
from medseg_agent.vocabulary.sample import Sample


def demo_samples(limit: int) -> list[Sample]:
    from medseg_agent.data.demo import build_demo_dataset, default_demo_dir
    from medseg_agent.data.readers import open_dataset

    return open_dataset(build_demo_dataset(default_demo_dir())).load()[:limit]


def resized(sample: Sample, size: int) -> Sample:
    image = cv2.resize(sample.image, (size, size), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(sample.mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    return Sample(image, mask, sample.target, sample.modality, sample.dataset, sample.sample_id)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def run_episode_as_text(env: SegmentationEnv, sample: Sample, actions: int) -> list[float]:
    """Box then clicker clicks, written as model text and parsed by the environment."""
    env.reset(sample)
    protocol, frame = env.protocol, env.frame
    x1, y1, x2, y2 = box_of(sample.mask)
    reply = protocol.format_action(AddBox(*frame.from_pixels(x1, y1), *frame.from_pixels(x2, y2)), "box")
    observation = env.step(reply)
    clicked: list[tuple[float, float]] = []
    for _ in range(actions - 1):
        click = next_click(observation.mask, sample.mask, clicked)
        if click is None:
            break
        clicked.append((click.x, click.y))
        action = AddPoint(*frame.from_pixels(click.x, click.y), click.positive)
        observation = env.step(protocol.format_action(action, "refine"))
    if not observation.done:
        env.step(protocol.format_action(Stop()))
    return [turn.env_seconds for turn in env.record.turns]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--actions", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    samples = demo_samples(args.episodes)
    tool = build_tool("classic")
    results: dict[str, float] = {}

    env = SegmentationEnv(tool, EpisodeConfig(max_turns=args.actions))
    overheads: list[float] = []
    encodes = []
    for sample in samples:
        before = tool.stats()["encode_count"]
        overheads += run_episode_as_text(env, resized(sample, 1024), args.actions)
        encodes.append(tool.stats()["encode_count"] - before)
    overheads_ms = sorted(1000 * s for s in overheads)
    results["env_overhead_ms_mean@1024"] = statistics.fmean(overheads_ms)
    results["env_overhead_ms_p50@1024"] = overheads_ms[len(overheads_ms) // 2]
    results["env_overhead_ms_p95@1024"] = overheads_ms[int(0.95 * (len(overheads_ms) - 1))]
    results["encodes_per_episode"] = statistics.fmean(encodes)
    results["steps_measured"] = len(overheads_ms)

    for size in (512, 1024):
        latencies = []
        for sample in samples:
            small = resized(sample, size)
            session = tool.set_image(small.image)
            env = SegmentationEnv(tool, EpisodeConfig(max_turns=args.actions))
            env.reset(small, session=session)
            x1, y1, x2, y2 = box_of(small.mask)
            env.step(AddBox(*env.frame.from_pixels(x1, y1), *env.frame.from_pixels(x2, y2)))
            latencies.append(env.record.turns[-1].tool_seconds)
            click = next_click(env.mask, small.mask)
            if click is not None:
                env.step(AddPoint(*env.frame.from_pixels(click.x, click.y), click.positive))
                latencies.append(env.record.turns[-1].tool_seconds)
        latencies.sort()
        results[f"classic_tool_s_mean@{size}"] = statistics.fmean(latencies)
        results[f"classic_tool_s_p95@{size}"] = latencies[int(0.95 * (len(latencies) - 1))]

    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.4g}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
