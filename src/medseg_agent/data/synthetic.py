"""Synthetic scans for a task a small agent can learn from scratch: find the named lesion, segment it.

Each image is a CT-like body section (noisy soft tissue with a smooth bias field) holding several
lesions that differ in four attributes: **size** (large / small), **brightness** (bright / dark
against the tissue), **shape** (round / elongated) and **side** (left / right half of the image).
One lesion is the target. Its look-alikes differ from it in exactly one attribute each, and the
target text names exactly the attributes that tell it apart ("small bright lesion on the left"), so
the text must be read: the brightest blob or the largest blob is usually the wrong answer. Lesions
are textured, have soft edges and may touch each other, so a box alone rarely gives the final mask:
the expert needs corrective clicks on a share of the images (its mean action count is printed by
``medseg-agent data build-synthetic`` and stored in ``synthetic.json``; see docs/training.md).

The result is a normal dataset: ``images/``, ``masks/`` and ``manifest.jsonl`` (read by the manifest
reader, so every command takes it), split into train / val / test **by image**; the same seed and
sizes give the same files byte for byte.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SYNTHETIC_VERSION = "1"
MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "synthetic.json"
DATASET_NAME = "synthetic-lesions"
SPLITS = ("train", "val", "test")

SIZES = ("large", "small")
BRIGHTNESS = ("bright", "dark")
SHAPES = ("round", "elongated")
SIDES = ("left", "right")
ATTRIBUTES = ("size", "brightness", "shape", "side")
_CHOICES = {"size": SIZES, "brightness": BRIGHTNESS, "shape": SHAPES, "side": SIDES}


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes of the splits and of the scenes; everything else is fixed by ``seed``."""

    train: int = 400
    val: int = 40
    test: int = 100
    image_size: int = 256
    seed: int = 0
    #: look-alikes per image (each differs from the target in one attribute); 2 or 3 by default,
    #: 0 for a bare scene (one lesion, the text "lesion": localisation without reading)
    lookalikes: tuple[int, int] = (2, 3)
    #: unrelated extra lesions per image
    extras: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        for name in SPLITS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 images, got {getattr(self, name)}")
        if self.train + self.val + self.test == 0:
            raise ValueError("no images requested: set train, val or test above 0")
        if not 128 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [128, 1024] px, got {self.image_size}")
        low, high = self.lookalikes
        if not 0 <= low <= high <= 3:
            raise ValueError(f"lookalikes must be a range within [0, 3], got {self.lookalikes}")
        if low == 0 and self.extras[1] > 0:
            raise ValueError(f"extras need look-alikes: a scene without any would have two answers to "
                             f"'lesion'; got lookalikes={self.lookalikes}, extras={self.extras}")


@dataclass
class Lesion:
    size: str
    brightness: str
    shape: str
    side: str
    center: tuple[float, float] = (0.0, 0.0)  # (x, y) pixels
    axes: tuple[float, float] = (0.0, 0.0)  # semi-axes (a, b) pixels
    angle: float = 0.0  # degrees

    def attributes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}


def describe(target: Lesion, named: set[str]) -> str:
    """The target text: the named attributes in a fixed, readable order."""
    words = [getattr(target, a) for a in ("size", "brightness", "shape") if a in named]
    text = " ".join([*words, "lesion"])
    return f"{text} on the {target.side}" if "side" in named else text


def _flip(value: str, attribute: str) -> str:
    first, second = _CHOICES[attribute]
    return second if value == first else first


def _axes(lesion: Lesion, scale: float, rng: np.random.Generator) -> tuple[float, float]:
    """Semi-axes in pixels: an equivalent radius by size, stretched for elongated lesions."""
    radius = (rng.uniform(17, 23) if lesion.size == "large" else rng.uniform(8, 11)) * scale
    ratio = rng.uniform(1.0, 1.25) if lesion.shape == "round" else rng.uniform(2.3, 3.0)
    return radius * math.sqrt(ratio), radius / math.sqrt(ratio)


def _fits(candidate: Lesion, placed: list[Lesion], min_gap: float) -> bool:
    ax, ay = candidate.center
    for other in placed:
        bx, by = other.center
        reach = max(candidate.axes) + max(other.axes)
        if math.hypot(ax - bx, ay - by) < reach * 0.85 + min_gap:
            # bounding circles may overlap a little (touching ellipses), but not the ellipses: checked
            # exactly on the label map in _render
            return False
    return True


def _place(lesion: Lesion, placed: list[Lesion], size: int, rng: np.random.Generator) -> bool:
    """Find a centre on the lesion's side inside the body; False when the scene is too crowded."""
    scale = size / 256
    lesion.axes = _axes(lesion, scale, rng)
    lesion.angle = float(rng.uniform(0, 180))
    reach = max(lesion.axes)
    margin = 30 * scale + reach
    for _ in range(200):
        if lesion.side == "left":
            x = rng.uniform(margin, 0.46 * size - reach * 0.3)
        else:
            x = rng.uniform(0.54 * size + reach * 0.3, size - margin)
        y = rng.uniform(margin + 8 * scale, size - margin - 8 * scale)
        lesion.center = (float(x), float(y))
        if _fits(lesion, placed, min_gap=float(rng.uniform(-2, 10)) * scale):
            return True
    return False


def _scene(
    size: int, config: SyntheticConfig, rng: np.random.Generator
) -> tuple[list[Lesion], list[str]] | None:
    target = Lesion(*(str(rng.choice(_CHOICES[a])) for a in ATTRIBUTES))
    n_alike = int(rng.integers(config.lookalikes[0], config.lookalikes[1] + 1))
    differing = [str(a) for a in rng.choice(ATTRIBUTES, size=n_alike, replace=False)]
    lesions = [target]
    for attribute in differing:
        values = target.attributes()
        values[attribute] = _flip(values[attribute], attribute)
        lesions.append(Lesion(**values))
    for _ in range(int(rng.integers(config.extras[0], config.extras[1] + 1))):
        # an extra lesion never equal to the target on every named attribute (it would be a second answer)
        values = {a: str(rng.choice(_CHOICES[a])) for a in ATTRIBUTES}
        if all(values[a] == getattr(target, a) for a in differing):
            values[differing[0]] = _flip(values[differing[0]], differing[0])
        lesions.append(Lesion(**values))
    placed: list[Lesion] = []
    order = sorted(lesions, key=lambda les: les.size != "large")  # large ones first: they need the room
    for lesion in order:
        if not _place(lesion, placed, size, rng):
            return None
        placed.append(lesion)
    return lesions, [a for a in ATTRIBUTES if a in differing]


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _render(lesions: list[Lesion], size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """(gray uint8 image, int label map: 0 background, i+1 lesion i); None if two lesions overlap."""
    scale = size / 256
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # body: a wide ellipse of soft tissue with a smooth bias field; air outside
    cx, cy = size / 2 + rng.uniform(-4, 4) * scale, size / 2 + rng.uniform(-4, 4) * scale
    rx, ry = size * rng.uniform(0.45, 0.48), size * rng.uniform(0.40, 0.46)
    body = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    tissue = 105 + 12 * _smooth_noise((size, size), 18 * scale, rng) + 6 * _smooth_noise((size, size), 3 * scale, rng)
    image = np.where(body, tissue, 12.0).astype(np.float32)
    labels = np.zeros((size, size), np.int32)
    for index, lesion in enumerate(lesions, start=1):
        (x, y), (a, b) = lesion.center, lesion.axes
        theta = math.radians(lesion.angle)
        u = (xx - x) * math.cos(theta) + (yy - y) * math.sin(theta)
        v = -(xx - x) * math.sin(theta) + (yy - y) * math.cos(theta)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        if (labels[inside] != 0).any():
            return None
        labels[inside] = index
        base = rng.uniform(175, 205) if lesion.brightness == "bright" else rng.uniform(38, 58)
        texture = 14 * _smooth_noise((size, size), 2.5 * scale, rng)
        image = np.where(inside, base + texture, image)
    # soft edges (partial volume), then scanner noise
    image = cv2.GaussianBlur(image, (0, 0), 1.2 * scale)
    image = image + rng.normal(0, 7, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), labels


@dataclass
class SyntheticImage:
    image: np.ndarray  # RGB uint8
    mask: np.ndarray  # bool, the target
    target: str
    named: list[str]  # the attributes the text names (those a look-alike differs in)
    labels: np.ndarray  # int label map as rendered: 0 background, i + 1 where lesions[i] is
    lesions: list[Lesion] = field(default_factory=list)
    target_index: int = 0


def generate_image(size: int, config: SyntheticConfig, rng: np.random.Generator) -> SyntheticImage:
    """One scene with its target; retried until every lesion fits without overlap."""
    for _ in range(100):
        scene = _scene(size, config, rng)
        if scene is None:
            continue
        lesions, named = scene
        rendered = _render(lesions, size, rng)
        if rendered is None:
            continue
        gray, labels = rendered
        image = np.repeat(gray[:, :, None], 3, axis=2)
        return SyntheticImage(image, labels == 1, describe(lesions[0], set(named)), named, labels, lesions, 0)
    raise RuntimeError(f"could not place the lesions of a scene in {size}x{size} px after 100 tries")


def _split_seed(seed: int, split: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, SPLITS.index(split)])


def is_complete(out_dir: str | Path, config: SyntheticConfig) -> bool:
    """Whether ``out_dir`` holds a finished build with exactly these settings."""
    root = Path(out_dir)
    try:
        info = json.loads((root / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if info.get("version") != SYNTHETIC_VERSION or info.get("config") != _config_json(config):
        return False
    return (root / MANIFEST_NAME).is_file()


def _config_json(config: SyntheticConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(config)))


def build_synthetic_dataset(
    out_dir: str | Path,
    config: SyntheticConfig | None = None,
    *,
    force: bool = False,
    on_image: Callable[[str], None] | None = None,
) -> Path:
    """Write the dataset to ``out_dir`` (reused when a complete build with the same config is there).

    ``on_image(split)`` is called after each image (progress bars). Files are written to a temporary
    folder and moved into place at the end, so a killed build leaves no half dataset behind.
    """
    import shutil
    import tempfile

    from medseg_agent.io.atomic import atomic_write_json
    from medseg_agent.io.masks import write_image_png, write_mask_png

    config = config or SyntheticConfig()
    root = Path(out_dir)
    if not force and is_complete(root, config):
        return root
    if root.exists() and any(root.iterdir()) and not (root / INFO_NAME).exists():
        raise FileExistsError(f"{root} exists and is not a synthetic dataset build; choose another --out")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        rows = []
        for split in SPLITS:
            rng = np.random.default_rng(_split_seed(config.seed, split))
            for number in range(getattr(config, split)):
                scene = generate_image(config.image_size, config, rng)
                sample_id = f"{split}-{number:05d}"
                write_image_png(tmp / "images" / f"{sample_id}.png", scene.image)
                write_mask_png(tmp / "masks" / f"{sample_id}.png", scene.mask)
                target = scene.lesions[scene.target_index]
                rows.append(
                    {
                        "sample_id": sample_id,
                        "image": f"images/{sample_id}.png",
                        "mask": f"masks/{sample_id}.png",
                        "target": scene.target,
                        "modality": "CT",
                        "dataset": DATASET_NAME,
                        "split": split,
                        "attributes": target.attributes(),
                        "named": scene.named,
                        "lesions": len(scene.lesions),
                        "mask_fraction": round(float(scene.mask.mean()), 4),
                    }
                )
                if on_image is not None:
                    on_image(split)
        (tmp / MANIFEST_NAME).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        atomic_write_json(
            tmp / INFO_NAME,
            {"version": SYNTHETIC_VERSION, "config": _config_json(config), "summary": summarize_rows(rows)},
        )
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Images per split, lesions per image, how many attributes the texts name, mask sizes."""
    named = Counter(len(r["named"]) for r in rows)
    fractions = [r["mask_fraction"] for r in rows]
    return {
        "images": dict(Counter(r["split"] for r in rows)),
        "mean_lesions_per_image": round(float(np.mean([r["lesions"] for r in rows])), 2) if rows else 0.0,
        "attributes_named": {str(k): v for k, v in sorted(named.items())},
        "named_by": dict(sorted(Counter(a for r in rows for a in r["named"]).items())),
        "mask_fraction": {
            "min": min(fractions, default=0.0),
            "median": float(np.median(fractions)) if fractions else 0.0,
            "max": max(fractions, default=0.0),
        },
    }


def synthetic_info(out_dir: str | Path) -> dict[str, Any]:
    """The stored build description (config and summary) of a synthetic dataset folder."""
    path = Path(out_dir) / INFO_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"{path}: not a synthetic dataset build ({exc})") from None
