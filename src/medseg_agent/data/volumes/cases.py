"""One case (an image volume and its label volume) turned into samples, every failure to open one of
its files reported as a skipped sample naming that file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common import describe_error
from ..dataset import Item
from ..sample import SkippedSample
from .dicom import DICOM_MODALITY_NAMES
from .errors import read_errors
from .files import load_label_volume, load_volume
from .labels import find_label_names_file, read_label_names
from .slicing import volume_samples


@dataclass
class VolumeCase:
    """One image volume and its label volume."""

    case_id: str
    image: Path
    label: Path
    split: str = "test"
    label_names: dict[int, str] | None = None
    modality: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def case_samples(case: VolumeCase, dataset: str, options: dict[str, Any]) -> Iterator[Item]:
    """Samples of one case; an unreadable file becomes a skipped sample, so one bad case never
    stops a dataset."""
    try:
        image_img, image_info = load_volume(case.image, label=False)
    except FileNotFoundError:
        yield SkippedSample(case.case_id, str(case.image), "image volume not found")
        return
    except read_errors() as exc:
        yield SkippedSample(case.case_id, str(case.image), f"unreadable image volume: {describe_error(exc)}")
        return
    try:
        label_img = load_label_volume(case.label, image_img)
    except FileNotFoundError:
        yield SkippedSample(case.case_id, str(case.label), "label volume not found")
        return
    except read_errors() as exc:
        yield SkippedSample(case.case_id, str(case.label), f"unreadable label volume: {describe_error(exc)}")
        return
    modality = options.get("modality") or case.modality
    if modality is None and image_info.get("modality"):
        modality = DICOM_MODALITY_NAMES.get(image_info["modality"], image_info["modality"])
    names = options.get("label_names") or case.label_names
    if names is None and case.label.exists():
        names_file = find_label_names_file(case.label)
        if names_file is not None:
            try:
                names = read_label_names(names_file)
            except (OSError, ValueError) as exc:  # unreadable, bad JSON or a bad mapping
                yield SkippedSample(case.case_id, str(names_file), f"unreadable labels file: {describe_error(exc)}")
    meta = dict(case.meta)
    if image_info.get("series_uid"):
        meta["series_uid"] = image_info["series_uid"]
    yield from volume_samples(
        image_img,
        label_img,
        case_id=case.case_id,
        dataset=dataset,
        modality=modality,
        label_names=names,
        include=options.get("include"),
        axis=options.get("axis", "axial"),
        every_k=options.get("every_k", 1),
        min_area=options.get("min_area", 1),
        window=options.get("window"),
        site=options.get("site"),
        split=case.split,
        channel=options.get("channel", 0),
        image_path=str(case.image),
        label_path=str(case.label),
        meta=meta,
    )
