"""Everything an evaluation writes after its episodes: tables, plots and the overlay gallery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.environment.record import TrajectoryRecord, record_from_dict
from medseg_agent.evaluation.gallery import write_gallery
from medseg_agent.evaluation.plots import plot_dice_by_modality, plot_iou_per_action
from medseg_agent.evaluation.summary import SampleResult, results_from_rows, write_summary
from medseg_agent.io.images import load_image
from medseg_agent.runs.store import ResultStore
from medseg_agent.vocabulary.sample import Sample


def write_report(
    store: ResultStore,
    out_dir: str | Path,
    *,
    max_actions: int,
    samples: dict[str, Sample] | None = None,
    title: str = "Evaluation",
    meta: dict[str, Any] | None = None,
    plots: bool = True,
    gallery_per_row: int = 4,
) -> tuple[list[SampleResult], dict[str, Path]]:
    """Summaries of every record in ``store`` (this run's and earlier ones); returns the results and
    the written paths. Gallery images come from ``samples`` or else the records' ``image_path``."""
    out = Path(out_dir)
    numbered = {row[store.key_field]: (line, row) for line, row in store.numbered_rows()}
    rows = {key: row for key, (_, row) in numbered.items()}
    results = results_from_rows(numbered.values(), store.key_field, str(store.path))
    paths = write_summary(results, out, max_actions=max_actions, title=title, meta=meta)
    if not plots:
        return results, paths
    paths["iou_plot"] = plot_iou_per_action(results, max_actions, out / "plots" / "iou_per_action.png")
    paths["dice_plot"] = plot_dice_by_modality(results, out / "plots" / "dice_by_modality.png")

    def record_of(key: str) -> TrajectoryRecord | None:
        row = rows.get(key)
        return record_from_dict(row["record"], key) if row and "record" in row else None

    def image_of(key: str) -> np.ndarray | None:
        if samples and key in samples:
            return samples[key].image
        record = record_of(key)
        if record is None or not record.image_path or not Path(record.image_path).is_file():
            return None
        try:
            image = load_image(record.image_path, record.modality)
        except (OSError, ValueError):
            return None  # not a plain image file (e.g. a volume): leave the panel empty
        return image if tuple(image.shape[:2]) == tuple(record.image_size) else None

    gallery = write_gallery(results, record_of, image_of, out / "plots" / "gallery.png", gallery_per_row)
    if gallery is not None:
        paths["gallery"] = gallery
    return results, paths
