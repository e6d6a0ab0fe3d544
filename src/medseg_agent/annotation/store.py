"""Where saved annotation sessions go: a trajectory folder that ``trajectories export`` reads as is.

The layout is the one ``trajectories generate`` writes (``trajectories.jsonl`` with one row per
saved session and ``images/`` with the image each record was made on), plus ``masks/`` with the
saved masks: a PNG for a 2-D image, a NIfTI label volume on the source grid for a slice of a volume.
A row is appended (atomically, fsync'ed) only after its files are written, so a crash never leaves
a row that points at nothing; several annotators can save into one folder through one server.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from medseg_agent.environment.record import TrajectoryRecord
from medseg_agent.experts.generate import IMAGES_DIR, STORE_NAME, file_stem, png_bytes
from medseg_agent.io.atomic import atomic_write_bytes
from medseg_agent.runs.store import ResultStore
from medseg_agent.vocabulary.sample import Sample

MASKS_DIR = "masks"


@dataclass(frozen=True)
class SavedSession:
    key: str
    image: Path  # absolute paths of what was written
    mask: Path
    store: Path

    def relative(self, root: Path) -> dict[str, str]:
        return {"image": str(self.image.relative_to(root)), "mask": str(self.mask.relative_to(root)),
                "store": str(self.store.relative_to(root))}


class AnnotationStore:
    """Saved sessions under ``root`` (created on first save)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._results: ResultStore | None = None

    @property
    def path(self) -> Path:
        return self.root / STORE_NAME

    def save(
        self,
        key: str,
        sample: Sample,
        record: TrajectoryRecord,
        mask: np.ndarray,
        *,
        mask_volume: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> SavedSession:
        """Write the image, the mask (``mask_volume``: a NIfTI image to save instead of a PNG) and
        one row holding ``record``. A key saved before gets a ``#2``, ``#3``... suffix."""
        with self._lock:
            results = self._store()
            key = _unique(key, results)
            stem = file_stem(key)
            image_path = self.root / IMAGES_DIR / f"{stem}.png"
            atomic_write_bytes(image_path, png_bytes(sample.image))
            if mask_volume is not None:
                mask_path = self.root / MASKS_DIR / f"{stem}.nii.gz"
                atomic_write_bytes(mask_path, gzip.compress(mask_volume.to_bytes(), compresslevel=6))
            else:
                mask_path = self.root / MASKS_DIR / f"{stem}.png"
                atomic_write_bytes(mask_path, _mask_png(mask))
            row = {
                "sample_id": sample.sample_id,
                "dataset": sample.dataset,
                "modality": sample.modality,
                "target": sample.target,
                "split": sample.split,
                "image": f"{IMAGES_DIR}/{image_path.name}",
                "mask": f"{MASKS_DIR}/{mask_path.name}",
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(extra or {}),
                "trajectories": [record.model_dump(mode="json")],
            }
            results.append(key, row)
            return SavedSession(key, image_path, mask_path, self.path)

    def _store(self) -> ResultStore:
        if self._results is None:
            self._results = ResultStore(self.path)
        return self._results


def _unique(key: str, results: ResultStore) -> str:
    if key not in results:
        return key
    n = 2
    while f"{key}#{n}" in results:
        n += 1
    return f"{key}#{n}"


def _mask_png(mask: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    if not ok:
        raise ValueError("could not encode the mask as PNG")
    return buffer.tobytes()
