"""Datasets: readers for BiomedParse folders, annotation JSON, manifests and NIfTI/DICOM volumes,
all yielding :class:`~medseg_agent.vocabulary.sample.Sample`; intensity windowing; the real demo dataset builder."""

from .dataset import Dataset
from .demo import build_demo_dataset, default_demo_dir
from .readers import available_formats, detect_format, open_dataset, register_reader, summarize_skipped
from .sample import SkippedSample

__all__ = [
    "Dataset",
    "SkippedSample",
    "available_formats",
    "build_demo_dataset",
    "default_demo_dir",
    "detect_format",
    "open_dataset",
    "register_reader",
    "summarize_skipped",
]
