"""What the app offers one click away: the samples of a dataset folder (the demo by default) and
volumes to browse slice by slice."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medseg_agent.data.readers import open_dataset
from medseg_agent.vocabulary.sample import Sample

DEMO_VOLUME_TARGET = "brain"


@dataclass(frozen=True)
class LibraryEntry:
    entry_id: str
    kind: Literal["image", "volume"]
    name: str
    target: str
    modality: str
    dataset: str


@dataclass(frozen=True)
class LibraryVolume:
    """A volume file (NIfTI) or DICOM folder with the target people usually draw on it."""

    path: Path
    name: str
    target: str = ""
    modality: str | None = None


class Library:
    """Samples (with their reference masks, kept for metrics only) and volumes, by entry id."""

    def __init__(self, samples: list[Sample] | None = None, volumes: list[LibraryVolume] | None = None) -> None:
        self._samples: dict[str, Sample] = {}
        self._volumes: dict[str, LibraryVolume] = {}
        self._entries: list[LibraryEntry] = []
        for volume in volumes or []:
            entry_id = _entry_id("volume", str(volume.path))
            self._volumes[entry_id] = volume
            self._entries.append(
                LibraryEntry(entry_id, "volume", volume.name, volume.target, volume.modality or "", "volume")
            )
        for sample in samples or []:
            entry_id = _entry_id("image", f"{sample.dataset}/{sample.sample_id}")
            self._samples[entry_id] = sample
            self._entries.append(
                LibraryEntry(entry_id, "image", sample.sample_id, sample.target, sample.modality, sample.dataset)
            )

    @classmethod
    def from_paths(
        cls, data: Path | None = None, volumes: list[LibraryVolume] | None = None, limit: int | None = 500
    ) -> tuple[Library, str | None]:
        """Open ``data`` with the dataset readers (at most ``limit`` samples); returns the library
        and a warning when the folder could not be read (the app then starts without it)."""
        samples: list[Sample] = []
        warning = None
        if data is not None:
            try:
                for sample in open_dataset(data):
                    samples.append(sample)
                    if limit is not None and len(samples) >= limit:
                        warning = f"the library shows the first {limit} samples of {data}"
                        break
            except (OSError, ValueError) as exc:
                warning = f"could not open {data} as a dataset: {exc}"
        return cls(samples, volumes), warning

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[LibraryEntry]:
        return list(self._entries)

    def sample(self, entry_id: str) -> Sample | None:
        return self._samples.get(entry_id)

    def volume(self, entry_id: str) -> LibraryVolume | None:
        return self._volumes.get(entry_id)


def _entry_id(kind: str, key: str) -> str:
    return f"{kind[0]}{hashlib.sha1(key.encode()).hexdigest()[:15]}"


def demo_sources(progress: Callable[[str], None]) -> tuple[Path | None, list[LibraryVolume], str | None]:
    """What the app offers when no dataset is named: the demo dataset (built on first use) and its
    brain MRI volume, or nothing and a warning that says why (the app still opens: people can
    upload their own images)."""
    from medseg_agent.data.demo import DemoBuildError, build_demo_dataset, fetch_mricron_templates

    try:
        root = build_demo_dataset(progress=progress)
        templates = fetch_mricron_templates()
    except (DemoBuildError, OSError) as exc:
        return None, [], f"no demo data ({exc}); open your own images from the page"
    volume = LibraryVolume(templates / "ch2.nii.gz", "Colin27 T1 brain MRI (NIfTI volume)", DEMO_VOLUME_TARGET, "MRI")
    return root, [volume], None
