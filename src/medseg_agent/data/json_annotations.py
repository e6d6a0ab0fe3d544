"""RefCOCO/COCO-like JSON (BiomedParse ``test.json``, MedSAM-Agent evaluation files).

::

    {"images": [{"id": 0, "file_name": "x_CT_abdomen.png", ...}],
     "annotations": [{"id": 3, "image_id": 0, "mask_file": "x_CT_abdomen_liver.png",
                      "split": "test", "sentences": [{"sent": "liver in abdomen CT"}], ...}]}

Tolerated variations: the image referenced by ``image_id`` -> ``images[].file_name`` or directly on
the annotation (``image_file`` / ``file_name`` / ``image`` / ``image_path``); the mask as
``mask_file`` / ``mask`` / ``mask_path``; the text from ``sentences[0].sent`` (or ``raw``, or a plain
string), else ``target`` / ``text`` / ``prompt`` / ``sentence``; a bare list of annotations.
Paths are resolved against ``root`` (default: the JSON file's folder), trying ``root/<p>``,
``root/<split>/<p>`` (``root/<split>_mask/<p>`` for masks), ``root/images|masks/<p>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg_agent.io.text import TextFileError, read_text_file

from .biomedparse import modality_site_from_image_stem
from .common import build_sample, canonical_modality, is_known_modality, parse_spacing, strip_image_ext
from .dataset import Dataset, Item
from .sample import SkippedSample

_IMAGE_KEYS = ("image_file", "image_path", "image", "file_name", "img_path")
_MASK_KEYS = ("mask_file", "mask_path", "mask", "seg_file", "label_file")
_TEXT_KEYS = ("target", "text", "prompt", "sentence", "caption", "ref")


def is_annotation_json(data: Any) -> bool:
    if isinstance(data, dict):
        return isinstance(data.get("annotations"), list)
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(a, dict) for a in data[:5])
        and any(k in data[0] for k in _MASK_KEYS)
    )


def _first(d: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = d.get(k)
        if v not in (None, ""):
            return v
    return None


def _sentence(ann: dict) -> str | None:
    sents = ann.get("sentences")
    if isinstance(sents, list) and sents:
        s0 = sents[0]
        if isinstance(s0, str):
            return s0.strip() or None
        if isinstance(s0, dict):
            text = s0.get("sent") or s0.get("raw") or s0.get("text")
            if text:
                return str(text).strip()
    text = _first(ann, _TEXT_KEYS)
    return str(text).strip() if text is not None else None


def _id(value: Any) -> int | str | None:
    """An image id an annotation can refer to: a whole number (``3.0`` is 3, as some exporters write
    it) or a string; anything else refers to no image."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None


def _not_text(ann: dict, img: dict, image_rel: Any, mask_rel: Any) -> str | None:
    """What in an annotation should be text (a path, a modality) and is not, or None."""
    fields = {"image file": image_rel, "mask file": mask_rel,
              "modality": ann.get("modality") or img.get("modality"), "site": ann.get("site") or img.get("site")}
    for field, value in fields.items():
        if value is not None and not isinstance(value, str):
            return f"{field} must be text, got {type(value).__name__} {str(value)[:60]}"
    return None


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a name the file system cannot hold (too long, a NUL) does not."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _resolve(root: Path, rel: str, split: str | None, kind: str, extra_dir: Path | None) -> Path:
    p = Path(rel)
    if p.is_absolute():
        return p
    candidates: list[Path] = []
    if extra_dir is not None:
        candidates += [extra_dir / p, extra_dir / p.name]
    candidates.append(root / p)
    if split:
        candidates.append(root / (f"{split}_mask" if kind == "mask" else split) / p)
    candidates += [root / ("masks" if kind == "mask" else "images") / p]
    if kind == "mask":
        candidates += [root / "labels" / p]
    for c in candidates:
        if _exists(c):
            return c
    if extra_dir is not None:
        return extra_dir / p
    return root / (f"{split}_mask" if kind == "mask" else split) / p if split else root / p


def _produce(
    data: Any,
    json_path: Path,
    root: Path,
    name: str,
    image_dir: Path | None,
    mask_dir: Path | None,
    default_split: str,
) -> Iterator[Item]:
    images_by_id: dict[Any, dict] = {}
    if isinstance(data, dict):
        for im in data.get("images") or []:
            if isinstance(im, dict) and (key := _id(im.get("id"))) is not None:
                images_by_id[key] = im
        anns = data.get("annotations") or []
    else:
        anns = data
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            yield SkippedSample(f"{json_path.name}#{i}", str(json_path), "annotation is not an object")
            continue
        img = images_by_id.get(_id(ann.get("image_id")), {})
        mask_rel = _first(ann, _MASK_KEYS)
        image_rel = _first(ann, _IMAGE_KEYS) or _first(img, _IMAGE_KEYS)
        wrong = _not_text(ann, img, image_rel, mask_rel)
        if wrong is not None:
            yield SkippedSample(f"{json_path.name}#{i}", str(json_path), f"annotation #{i}: {wrong}")
            continue
        sid = str(
            ann.get("sample_id")
            or (strip_image_ext(Path(str(mask_rel)).name) if mask_rel else None)
            or ann.get("id", ann.get("ann_id", f"{json_path.stem}#{i}"))
        )
        split = str(ann.get("split") or img.get("split") or default_split)
        if mask_rel is None:
            yield SkippedSample(sid, str(json_path), f"annotation #{i} has no mask file field")
            continue
        mask_path = _resolve(root, str(mask_rel), split, "mask", mask_dir)
        if image_rel is None:
            yield SkippedSample(
                sid, str(mask_path), f"annotation #{i} names no image (image_id {ann.get('image_id')!r})"
            )
            continue
        image_path = _resolve(root, str(image_rel), split, "image", image_dir)
        text = _sentence(ann)
        mod_token = ann.get("modality") or img.get("modality")
        site = ann.get("site") or img.get("site")
        if not mod_token:
            mod_token, s2 = modality_site_from_image_stem(strip_image_ext(Path(str(image_rel)).name))
            site = site or s2
        if not mod_token and text:
            last = text.split()[-1]
            mod_token = last if is_known_modality(last) else None
        if not text:
            yield SkippedSample(sid, str(mask_path), f"annotation #{i} has no sentence/target text")
            continue
        modality, sequence = canonical_modality(mod_token)
        meta: dict[str, Any] = {"annotation_id": ann.get("id"), "image_id": ann.get("image_id")}
        if site:
            meta["site"] = site
        if sequence:
            meta["sequence"] = sequence
        if "category_id" in ann:
            meta["category_id"] = ann["category_id"]
        try:
            spacing = parse_spacing(ann.get("spacing") or img.get("spacing"))
        except ValueError as exc:
            yield SkippedSample(sid, str(mask_path), str(exc))
            continue
        yield build_sample(
            sample_id=sid,
            image_path=image_path,
            mask_path=mask_path,
            target=text,
            modality=modality,
            dataset=str(ann.get("dataset") or img.get("dataset") or name),
            split=split,
            spacing=spacing,
            meta=meta,
        )


def read_json_annotations(
    path: str | Path,
    *,
    split: str | None = None,
    root: str | Path | None = None,
    image_dir: str | Path | None = None,
    mask_dir: str | Path | None = None,
    name: str | None = None,
    default_split: str = "test",
) -> Dataset:
    """Open an annotation JSON file. Raises ``ValueError`` when the file is not such a JSON at all
    (per-annotation problems become skipped samples)."""
    json_path = Path(path)
    try:
        data = json.loads(read_text_file(json_path, "annotation JSON"))
    except TextFileError:  # already names the file and its role
        raise
    except ValueError as exc:
        raise ValueError(f"cannot read annotation JSON {json_path}: {exc}") from exc
    if not is_annotation_json(data):
        raise ValueError(f"{json_path} has no 'annotations' list (not a COCO/RefCOCO-style file)")
    if isinstance(data, dict) and not isinstance(data.get("images") or [], list):
        raise ValueError(f"{json_path}: 'images' must be a list of image objects, got {type(data['images']).__name__}")
    base = Path(root) if root is not None else json_path.parent
    if name is None:
        info = data.get("info") if isinstance(data, dict) else None
        name = info.get("dataset") if isinstance(info, dict) else None
        generic = json_path.stem in ("train", "test", "val", "valid", "dataset", "annotations")
        name = name or (json_path.resolve().parent.name if generic else json_path.stem)
    n = len(data["annotations"] if isinstance(data, dict) else data)
    return Dataset(
        name,
        lambda: _produce(
            data,
            json_path,
            base,
            name,
            Path(image_dir) if image_dir else None,
            Path(mask_dir) if mask_dir else None,
            default_split,
        ),
        source=str(json_path),
        format="json",
        split=split,
        length_hint=n,
    )
