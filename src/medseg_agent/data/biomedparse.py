"""BiomedParse layout: ``DIR/<split>/`` images and ``DIR/<split>_mask/`` masks.

Images are named ``<id>_<modality>_<site>.png`` and each of their masks
``<id>_<modality>_<site>_<target>.png`` (target words joined by ``+``, e.g. ``left+kidney``); an image
with several masks gives several samples. Images named plainly ``<id>.png`` with masks
``<id>_<modality>_<site>_<target>.png`` are understood too. The sample's target text is
``"<target words> in <site> <modality>"``, e.g. ``"left kidney in abdomen CT"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    build_sample,
    canonical_modality,
    decode_name,
    describe_target,
    is_image_file,
    is_known_modality,
    parse_spacing,
    strip_image_ext,
)
from .dataset import Dataset, Item
from .sample import SkippedSample

MASK_SUFFIX = "_mask"
#: Optional sidecar files (e.g. written by the demo builder): {"samples": [{"mask": "test_mask/x.png",
#: "spacing": [1, 1], "meta": {...}, "source": "..."}]}; they add spacing/meta, nothing else.
SIDECAR_NAMES = ("demo_manifest.json", "manifest.json", "samples.json")


@dataclass(frozen=True)
class ParsedMaskName:
    image_stem: str
    target: str  # words, '+' decoded
    modality_token: str | None
    site: str | None


def split_folders(root: Path) -> dict[str, tuple[Path, Path]]:
    """``{"train": (root/train, root/train_mask), "test": ...}`` for every split with both folders."""
    out: dict[str, tuple[Path, Path]] = {}
    if not root.is_dir():
        return out
    for mask_dir in sorted(root.iterdir()):
        if mask_dir.is_dir() and mask_dir.name.endswith(MASK_SUFFIX):
            split = mask_dir.name[: -len(MASK_SUFFIX)]
            image_dir = root / split
            if split and image_dir.is_dir():
                out[split] = (image_dir, mask_dir)
    return out


def looks_like_biomedparse(root: Path) -> bool:
    return bool(split_folders(Path(root)))


def modality_site_from_image_stem(stem: str) -> tuple[str | None, str | None]:
    """Modality and site from BiomedParse's ``<name>_<modality>_<site>`` image naming, shared by the JSON reader."""
    tokens = stem.split("_")
    if len(tokens) >= 3 and is_known_modality(tokens[-2]):
        return tokens[-2], tokens[-1]
    if len(tokens) >= 2 and is_known_modality(tokens[-1]):
        return tokens[-1], None
    return None, None


def parse_mask_name(mask_stem: str, image_stems: set[str] | dict[str, Path]) -> ParsedMaskName | None:
    """Match a mask file stem to its image (longest ``_``-separated prefix) and parse the rest."""
    tokens = mask_stem.split("_")
    for k in range(len(tokens) - 1, 0, -1):
        prefix = "_".join(tokens[:k])
        if prefix not in image_stems:
            continue
        rest = tokens[k:]
        mod, site = modality_site_from_image_stem(prefix)
        if mod is None and len(rest) >= 3 and is_known_modality(rest[0]):
            # <image_stem>_<modality>_<site>_<target>
            return ParsedMaskName(prefix, decode_name("_".join(rest[2:])), rest[0], decode_name(rest[1]))
        if mod is None and len(rest) == 2 and is_known_modality(rest[0]):
            return ParsedMaskName(prefix, decode_name(rest[1]), rest[0], None)
        target = decode_name(" ".join(rest))
        return ParsedMaskName(prefix, target, mod, decode_name(site) if site else None)
    return None


def _index_images(image_dir: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for p in sorted(image_dir.iterdir()):
        if is_image_file(p):
            images.setdefault(strip_image_ext(p.name), p)
    return images


def _read_sidecar(root: Path) -> dict[str, dict[str, Any]]:
    for fname in SIDECAR_NAMES:
        path = root / fname
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rows = data.get("samples") if isinstance(data, dict) else None
        if isinstance(rows, list):
            return {Path(str(r["mask"])).name: r for r in rows if isinstance(r, dict) and r.get("mask")}
    return {}


def _produce(root: Path, name: str, splits: dict[str, tuple[Path, Path]]) -> Iterator[Item]:
    sidecar = _read_sidecar(root)
    for split, (image_dir, mask_dir) in splits.items():
        images = _index_images(image_dir)
        used: set[str] = set()
        for mask_path in sorted(mask_dir.iterdir()):
            if not is_image_file(mask_path):
                continue
            stem = strip_image_ext(mask_path.name)
            parsed = parse_mask_name(stem, images)
            if parsed is None:
                yield SkippedSample(stem, str(mask_path), f"no image in {image_dir.name}/ matches this mask name")
                continue
            used.add(parsed.image_stem)
            modality, sequence = canonical_modality(parsed.modality_token)
            meta = {"target_name": parsed.target, "site": parsed.site, "image_id": parsed.image_stem}
            if sequence:
                meta["sequence"] = sequence
            if not parsed.target:
                yield SkippedSample(stem, str(mask_path), "mask name has no target part")
                continue
            extra = sidecar.get(mask_path.name, {})
            try:
                spacing = parse_spacing(extra.get("spacing"))
            except (TypeError, ValueError):
                spacing = None
            if isinstance(extra.get("meta"), dict):
                meta.update(extra["meta"])
            if extra.get("source"):
                meta["source"] = extra["source"]
            yield build_sample(
                sample_id=stem,
                image_path=images[parsed.image_stem],
                mask_path=mask_path,
                target=describe_target(parsed.target, parsed.modality_token, parsed.site),
                modality=modality,
                dataset=name,
                split=split,
                spacing=spacing,
                meta=meta,
            )
        for stem, path in images.items():
            if stem not in used:
                yield SkippedSample(stem, str(path), f"image has no mask in {mask_dir.name}/")


def read_biomedparse(path: str | Path, *, split: str | None = None, name: str | None = None) -> Dataset:
    """Open a BiomedParse-layout folder. ``split`` limits reading to ``DIR/<split>`` (+ ``_mask``)."""
    root = Path(path)
    splits = split_folders(root)
    if not splits:
        raise ValueError(f"{root} is not a BiomedParse folder (no <split>/ + <split>_mask/ pair)")
    if split is not None:
        if split not in splits:
            raise ValueError(f"{root} has no split {split!r} (found: {', '.join(splits)})")
        splits = {split: splits[split]}
    n = sum(1 for _, mdir in splits.values() for p in mdir.iterdir() if is_image_file(p))
    dname = name or root.resolve().name
    return Dataset(
        dname,
        lambda: _produce(root, dname, splits),
        source=str(root),
        format="biomedparse",
        split=split,
        length_hint=n,
    )
