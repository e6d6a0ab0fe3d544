"""One image, one target, one episode, every artefact written to a folder: what ``segment`` does.

A person trying a policy or a tool on their own image wants to see each turn, so every view the
policy saw is kept as an overlay beside the final mask and the trajectory record (which replays the
episode exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medseg_agent.environment.episode import EpisodeConfig, Observation, SegmentationEnv
from medseg_agent.environment.record import TrajectoryRecord, save_record
from medseg_agent.io.images import load_image, load_mask
from medseg_agent.io.masks import write_image_png, write_mask_png
from medseg_agent.policies.base import Policy
from medseg_agent.policies.runner import run_episode
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.sample import Sample

MASK_FILE = "mask.png"
RECORD_FILE = "trajectory.json"


@dataclass
class SegmentResult:
    record: TrajectoryRecord
    mask_path: Path
    record_path: Path
    overlays: list[Path]


def load_case(image: Path, target: str, gt: Path | None = None) -> Sample:
    """The image (and ground truth) as a sample; ImageLoadError names an unreadable file, ValueError an
    empty target text or a ground truth that cannot score anything (another size, no foreground)."""
    if not target.strip():
        raise ValueError("the target text is empty: name what to segment, e.g. -t 'left kidney in abdomen CT'")
    pixels = load_image(image)
    gt_mask = load_mask(gt) if gt else None
    if gt_mask is not None and gt_mask.shape != pixels.shape[:2]:
        raise ValueError(f"--gt {gt} has shape {gt_mask.shape}, but {image} is {pixels.shape[:2]}")
    if gt_mask is not None and not gt_mask.any():
        raise ValueError(f"--gt {gt} has no foreground pixel (every value is 0); the target must be non-zero")
    return Sample(pixels, gt_mask, target, "", "", image.stem, image_path=str(image))


def segment_image(
    sample: Sample, out: Path, *, tool: SegmentationTool, policy: Policy, episode: EpisodeConfig, seed: int = 0,
) -> SegmentResult:
    """Run one episode of ``policy`` driving ``tool`` on ``sample``; write OUT/overlay_NN.png (the view
    after each step), OUT/mask.png and OUT/trajectory.json. PolicyError and ToolError propagate."""
    if policy.uses_ground_truth and sample.mask is None:
        raise ValueError(f"policy {policy.name!r} needs the ground truth: pass --gt MASK")
    env = SegmentationEnv(tool, episode)
    out.mkdir(parents=True, exist_ok=True)
    overlays: list[Path] = []

    def write_overlay(observation: Observation) -> None:
        overlays.append(out / f"overlay_{len(overlays):02d}.png")
        write_image_png(overlays[-1], observation.image)

    record = run_episode(env, policy, sample, seed=seed, on_step=write_overlay)
    write_mask_png(out / MASK_FILE, env.mask)
    save_record(record, out / RECORD_FILE)
    return SegmentResult(record, out / MASK_FILE, out / RECORD_FILE, overlays)
