"""RL rows for verl's ``RLHFDataset``: one row per segmentation task, written to parquet.

A row holds the first turn of the conversation (system prompt without the textual tool listing, as
the chat template lists the tools from the tool YAML; user turn ``<image>`` + the target), the view
the model sees (PNG bytes), ``agent_name`` selecting :class:`MedSegAgentLoop`, the ground truth for
the reward, and in ``extra_info.tools_kwargs.medseg_episode`` what the tools need to start the
episode: the full-resolution image (inline PNG or a file path readable on every rollout node), the
ground-truth RLE and the sample's metadata.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from medseg_agent.environment.render import resize_view
from medseg_agent.io.masks import encode_rle, write_image_png
from medseg_agent.policies.chat import without_tool_listing
from medseg_agent.protocols import get_protocol
from medseg_agent.training.verl.episodes import AGENT_NAME, EPISODE_KWARGS_KEY
from medseg_agent.training.verl.reward_fn import DATA_SOURCE, ground_truth_payload
from medseg_agent.vocabulary.actions import CoordinateSpace
from medseg_agent.vocabulary.coordinates import view_size_for
from medseg_agent.vocabulary.images import as_rgb_uint8
from medseg_agent.vocabulary.sample import Sample

IMAGE_MODES = ("inline", "files")


def png_bytes(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(as_rgb_uint8(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode image as PNG")
    return buffer.tobytes()


def rl_row(
    sample: Sample,
    index: int,
    *,
    split: str = "train",
    view_longest_side: int | None = 512,
    image_mode: str = "inline",
    image_dir: Path | None = None,
) -> dict[str, Any]:
    """One ``RLHFDataset`` row for ``sample`` (medsam protocol, 0-999 coordinates)."""
    if image_mode not in IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {', '.join(IMAGE_MODES)}, got {image_mode!r}")
    protocol = get_protocol("medsam")
    image = as_rgb_uint8(sample.image)
    h, w = image.shape[:2]
    if sample.mask.shape != (h, w):
        raise ValueError(f"sample {sample.sample_id}: mask shape {sample.mask.shape} does not match image {(h, w)}")
    view = resize_view(image, view_size_for((h, w), view_longest_side))
    gt_rle = encode_rle(sample.mask)
    create: dict[str, Any] = {
        "target": sample.target,
        "gt_mask_rle": gt_rle,
        "image_path": "",
        "image_png_b64": "",
        "sample_id": sample.sample_id,
        "dataset": sample.dataset,
        "modality": sample.modality,
        "spacing": [float(v) for v in sample.spacing] if sample.spacing else [],
    }
    if image_mode == "inline":
        create["image_png_b64"] = base64.b64encode(png_bytes(image)).decode("ascii")
    else:
        if image_dir is None:
            raise ValueError("image_mode='files' needs image_dir (a folder every rollout node can read)")
        path = Path(image_dir).resolve() / f"{index:08d}.png"
        write_image_png(path, image)
        create["image_path"] = str(path)
    return {
        "data_source": DATA_SOURCE,
        "agent_name": AGENT_NAME,
        "ability": "interactive_segmentation",
        "prompt": [
            {"role": "system", "content": without_tool_listing(protocol.system_prompt(CoordinateSpace.NORM1000))},
            {"role": "user", "content": "<image>" + protocol.first_user_text(sample.target)},
        ],
        "images": [{"bytes": png_bytes(view)}],
        "reward_model": {"style": "rule", "ground_truth": ground_truth_payload(gt_rle, sample.target)},
        "extra_info": {
            "index": index,
            "split": split,
            "sample_id": sample.sample_id,
            "dataset": sample.dataset,
            "tools_kwargs": {EPISODE_KWARGS_KEY: {"create_kwargs": create}},
        },
    }


def iter_rl_rows(samples: Iterable[Sample], **options: Any) -> Iterator[dict[str, Any]]:
    for index, sample in enumerate(samples):
        yield rl_row(sample, index, **options)


def write_rl_parquet(rows: Iterable[dict[str, Any]], path: str | Path, chunk_size: int = 256) -> int:
    """Write rows in chunks to ``path`` atomically (a temporary file renamed at the end); returns the count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = None
    count = 0
    chunk: list[dict[str, Any]] = []
    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= chunk_size:
                writer = _write_chunk(pa, pq, chunk, tmp, writer)
                count += len(chunk)
                chunk = []
        if chunk or writer is None:
            writer = _write_chunk(pa, pq, chunk, tmp, writer)
            count += len(chunk)
    finally:
        if writer is not None:
            writer.close()
    if count == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"no RL rows to write to {path}")
    os.replace(tmp, path)
    return count


def _write_chunk(pa: Any, pq: Any, chunk: list[dict[str, Any]], tmp: Path, writer: Any) -> Any:
    if not chunk:
        return writer
    table = pa.Table.from_pylist(chunk, schema=writer.schema if writer is not None else None)
    if writer is None:
        writer = pq.ParquetWriter(str(tmp), table.schema)
    writer.write_table(table)
    return writer
