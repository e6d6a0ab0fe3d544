"""What every export shares: replaying each stored trajectory into its conversation, writing every
image of it as a PNG file next to the data, and a streaming Parquet writer.

Conversations come from :func:`medseg_agent.environment.replay.conversation_from_record`, so the
system prompt, tool schemas and turn texts are the ones inference uses (one source). Image files are
named by content (``images/<sample>/<sha1>.png``): a view shared by several trajectories (the first
view of a sample) is written once, and rerunning an export rewrites nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.environment.record import TrajectoryRecord
from medseg_agent.environment.replay import conversation_from_record
from medseg_agent.experts.generate import IMAGES_DIR, StoredSample, file_stem, load_generation, png_bytes
from medseg_agent.io.atomic import atomic_write_bytes, temporary_sibling
from medseg_agent.io.images import load_image
from medseg_agent.protocols.conversation import Conversation


@dataclass
class ImageFile:
    path: str  # relative to the export folder
    data: bytes  # PNG

    def as_feature(self) -> dict[str, Any]:
        """The ``datasets.Image`` storage form: bytes embedded (the parquet is self-contained) plus
        the path of the same image next to it."""
        return {"bytes": self.data, "path": self.path}


class FormatNotApplicable(ValueError):
    """A format that cannot hold these trajectories (e.g. verl RL rows from ibis trajectories)."""


@dataclass
class ExportItem:
    """One trajectory ready for the writers."""

    trajectory_id: str
    sample: StoredSample
    record: TrajectoryRecord
    conversation: Conversation
    images: list[ImageFile]  # one per image of ``conversation``, in order
    image: np.ndarray  # the full-resolution image (the tool's input), RGB uint8
    index: int  # position of the sample in the export (0-based), for verl's extra_info.index

    def metadata(self) -> dict[str, Any]:
        return {
            "trajectory_id": self.trajectory_id,
            "sample_id": self.sample.sample_id,
            "dataset": self.sample.dataset,
            "modality": self.sample.modality,
            "target": self.sample.target,
            "final_iou": self.record.final_metrics.get("iou"),
            "final_dice": self.record.final_metrics.get("dice"),
            "num_turns": self.record.num_interactions,
        }


def write_image(out: Path, folder: str, data: bytes) -> ImageFile:
    name = f"{IMAGES_DIR}/{folder}/{hashlib.sha1(data).hexdigest()[:16]}.png"
    path = out / name
    if not path.exists():
        atomic_write_bytes(path, data)
    return ImageFile(name, data)


def iter_items(
    folder: str | Path,
    out: str | Path,
    *,
    min_final_iou: float = 0.0,
    max_images: int | None = None,
    split: str | None = None,
) -> Iterator[ExportItem]:
    """Replay every kept trajectory of a generation folder, writing its images under ``out``."""
    out = Path(out)
    index = -1
    for sample in load_generation(folder):
        if split is not None and sample.split != split:
            continue
        kept = [r for r in sample.records if (r.final_metrics.get("iou") or 0.0) >= min_final_iou]
        if not kept:
            continue
        index += 1
        try:
            image = load_image(sample.image_path, sample.modality)
        except OSError as exc:
            raise FileNotFoundError(
                f"{sample.key}: cannot read its image {sample.image_path}: {exc}"
            ) from None
        stem = file_stem(sample.key)
        for number, record in enumerate(kept):
            conversation = conversation_from_record(record, image).trimmed(max_images)
            images = [write_image(out, stem, png_bytes(view)) for view in conversation.images()]
            yield ExportItem(f"{sample.key}#{number}", sample, record, conversation, images, image, index)


class ParquetRows:
    """Append rows to a Parquet file in batches; the file appears atomically at :meth:`close`.

    With ``datasets`` ``features`` the schema carries them (``load_dataset`` then decodes images to
    PIL); without, the schema is inferred from the first batch.
    """

    def __init__(self, path: Path, features: Any = None, batch_size: int = 64) -> None:
        self.path = path
        self.features = features
        self.batch_size = batch_size
        self.rows = 0
        self._batch: list[dict[str, Any]] = []
        self._writer: Any = None
        fd, self._tmp = temporary_sibling(path)
        os.close(fd)

    def add(self, row: dict[str, Any]) -> None:
        self._batch.append(self.features.encode_example(row) if self.features is not None else row)
        if len(self._batch) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._batch:
            return
        schema = self.features.arrow_schema if self.features is not None else None
        if self._writer is not None:
            schema = self._writer.schema
        table = pa.Table.from_pylist(self._batch, schema=schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema)
        self._writer.write_table(table)
        self.rows += len(self._batch)
        self._batch = []

    def close(self) -> tuple[Path, int]:
        self._flush()
        if self._writer is None:
            self.abort()
            raise ValueError(f"no rows to write to {self.path}")
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path, self.rows

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        Path(self._tmp).unlink(missing_ok=True)


class ConversationParquetWriter:
    """Conversations rendered by ``render`` (``to_hf`` or ``to_sharegpt``) with their images, one row
    per trajectory, into ``<name><suffix>``: the HF/TRL and the verl multi-turn SFT exports differ
    only in these two choices."""

    def __init__(
        self, out: Path, name: str, suffix: str, features: Any, render: Callable[[Conversation], tuple[list, list]]
    ) -> None:
        self._rows = ParquetRows(out / f"{name}{suffix}", features)
        self._render = render

    def add(self, item: ExportItem) -> None:
        messages, _ = self._render(item.conversation)
        self._rows.add({"messages": messages, "images": [i.as_feature() for i in item.images], **item.metadata()})

    def close(self) -> tuple[Path, int]:
        return self._rows.close()

    def abort(self) -> None:
        self._rows.abort()
