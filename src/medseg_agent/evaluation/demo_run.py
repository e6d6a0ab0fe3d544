"""The body of ``medseg-agent demo``: the clicker driving a tool through the full agent environment on
every sample, every turn's view and every record kept, so a first-time user can look at what happened."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import save_record
from medseg_agent.evaluation.tool_eval import ClickCurve
from medseg_agent.io.masks import write_image_png
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.runner import run_episode
from medseg_agent.tools.base import SegmentationTool
from medseg_agent.vocabulary.sample import Sample


def run_clicker_demo(
    samples: Sequence[Sample], tool: SegmentationTool, out: Path, *, clicks: int, stop_iou: float,
    on_sample: Callable[[], None] | None = None,
) -> list[ClickCurve]:
    """One clicker episode per sample (at most ``clicks`` clicks, stopping at ``stop_iou``); writes
    OUT/overlays/<sample>/turn_NN.png and OUT/records/<sample>.json and returns the IoU curves, padded
    with the last IoU to ``clicks`` so that NoC and mIoU@k compare across samples."""
    env = SegmentationEnv(tool, EpisodeConfig(max_turns=clicks))
    curves = []
    for sample in samples:
        views: list = []
        record = run_episode(env, ClickerPolicy(stop_iou=stop_iou), sample,
                             on_step=lambda observation, views=views: views.append(observation.image))
        for index, view in enumerate(views):
            write_image_png(out / "overlays" / sample.sample_id / f"turn_{index:02d}.png", view)
        save_record(record, out / "records" / f"{sample.sample_id}.json")
        trace = record.iou_trace() or [0.0]
        curves.append(ClickCurve(sample.sample_id, sample.dataset, sample.modality, sample.target,
                                 trace + [trace[-1]] * (clicks - len(trace)), len(trace)))
        if on_sample is not None:
            on_sample()
    return curves
