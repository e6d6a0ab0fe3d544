"""What every dataset reader yields: one 2-D image with one target mask and its description."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

_SURROGATES = re.compile("[\ud800-\udfff]")
#: What Python's file-system decoding makes of bytes that are not UTF-8 (surrogateescape).
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")


@dataclass
class Sample:
    """One segmentation task.

    ``image`` is display-ready RGB uint8 (H, W, 3): medical intensities are already windowed.
    ``mask`` is the (H, W) bool ground truth of ``target``, or None when there is none (segmenting a
    new image). ``spacing`` is (row, col) in mm when known, so surface metrics can be reported in mm.
    """

    image: np.ndarray
    mask: np.ndarray | None
    target: str
    modality: str
    dataset: str
    sample_id: str
    spacing: tuple[float, float] | None = None
    split: str = "test"
    image_path: str | None = None
    mask_path: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("target", "modality", "dataset", "sample_id", "split"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, readable_text(getattr(self, name)))
        self.meta = {key: readable_text(value) if isinstance(value, str) else value for key, value in self.meta.items()}


def readable_text(text: str) -> str:
    """``text`` as valid Unicode. Names read from a Linux file system keep bytes that are not UTF-8 as
    lone surrogates (a folder unzipped from a Windows archive: ``f\\udce9mur``), which nothing can
    encode: not a record's key, not a parquet row, not a prompt. Those bytes are read as Windows-1252
    instead (``fémur``); the file paths themselves are kept as they are, so the files still open."""
    if not _SURROGATES.search(text):
        return text
    text = _ESCAPED_BYTES.sub(lambda run: _as_bytes(run.group()).decode("cp1252", "replace"), text)
    return _SURROGATES.sub("\ufffd", text)  # a surrogate that no byte stands for (decoded JSON, say)


def _as_bytes(escaped: str) -> bytes:
    return escaped.encode("utf-8", "surrogateescape")
