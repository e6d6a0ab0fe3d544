"""Training data from expert trajectories, in the formats LLaMA-Factory, TRL and verl load unchanged.

All formats are written in one pass over the trajectories (each conversation is replayed once);
every image is a PNG file under ``<out>/images/`` and, in the Parquet files, embedded as well.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medseg_agent.exports.common import ExportItem, FormatNotApplicable, iter_items

#: A dataset name is a file-name stem: ``../x`` would write outside the export folder, ``""`` hidden files.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _writer(fmt: str, out: Path, name: str) -> Any:
    if fmt == "sharegpt":
        from medseg_agent.exports.sharegpt import ShareGPTWriter

        return ShareGPTWriter(out, name)
    if fmt == "hf":
        from medseg_agent.exports.hf_datasets import HFWriter

        return HFWriter(out, name)
    if fmt == "verl-sft":
        from medseg_agent.exports.verl import VerlSFTWriter

        return VerlSFTWriter(out, name)
    if fmt == "verl-rl":
        from medseg_agent.exports.verl import VerlRLWriter

        return VerlRLWriter(out, name)
    raise ValueError(f"unknown export format {fmt!r}; choose from sharegpt, hf, verl-sft, verl-rl")


def write_exports(
    folder: str | Path,
    out: str | Path,
    formats: Sequence[str],
    *,
    name: str = "medseg_expert",
    min_final_iou: float = 0.0,
    max_images: int | None = None,
    split: str | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> dict[str, tuple[Path, int]]:
    """Export the trajectories of a generation ``folder`` to ``out``; returns {format: (file, rows)}.

    A format that cannot hold the trajectories (:class:`FormatNotApplicable`) raises, or, with
    ``on_skip``, is dropped, its partial file removed, and ``on_skip(format, reason)`` called.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"--name {name!r}: a dataset name starts with a letter or digit and holds only letters, digits and "
            "_ . + - (it names the files in OUT and the entry in dataset_info.json)"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writers = {fmt: _writer(fmt, out, name) for fmt in dict.fromkeys(formats)}
    count = 0
    try:
        for item in iter_items(folder, out, min_final_iou=min_final_iou, max_images=max_images, split=split):
            count += 1
            for fmt, writer in list(writers.items()):
                try:
                    writer.add(item)
                except FormatNotApplicable as exc:
                    if on_skip is None:
                        raise
                    writer.abort()
                    del writers[fmt]
                    on_skip(fmt, str(exc))
        if count == 0:
            raise ValueError(f"no trajectory in {folder} to export (check --min-final-iou and --split)")
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return {fmt: writer.close() for fmt, writer in writers.items()}


__all__ = ["ExportItem", "FormatNotApplicable", "iter_items", "write_exports"]
