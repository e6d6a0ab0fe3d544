"""Cases for the classic-tool benchmark: the real demo dataset and synthetic organ-like images.

Synthetic modalities (marked * in the tables): noisy CT-like organs next to a similar neighbour,
MRI-like ring tumours in oedema, textured dermoscopy lesions with hairs, low-contrast endoscopy polyps,
touching fluorescence nuclei. Small faint lesions live in :mod:`lesion_cases`.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Case:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool
    modality: str
    name: str
    tags: dict[str, str] = field(default_factory=dict)  # e.g. size and contrast band of a lesion


# -- synthetic data ---------------------------------------------------------------------------
def _blob(h: int, w: int, cy: float, cx: float, r: float, rng: np.random.Generator, wobble=0.25) -> np.ndarray:
    """A smooth random star-shaped region."""
    yy, xx = np.mgrid[:h, :w]
    theta = np.arctan2(yy - cy, xx - cx)
    rad = np.ones_like(theta)
    for k in range(2, 6):
        rad += rng.uniform(0, wobble / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy - cy, xx - cx) <= r * rad


def _texture(h: int, w: int, rng: np.random.Generator, sigma: float, amp: float) -> np.ndarray:
    t = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    return t / (t.std() + 1e-6) * amp


def synth_ct(rng: np.random.Generator, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    h = w = size
    img = np.full((h, w), 15.0, np.float32)
    yy, xx = np.mgrid[:h, :w]
    body = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.47 * w)) ** 2 <= 1
    img[body] = 105
    fat = body & (((yy - h / 2) / (0.38 * h)) ** 2 + ((xx - w / 2) / (0.43 * w)) ** 2 > 1)
    img[fat] = 70
    img += _texture(h, w, rng, 3, 6) * body
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.3, 0.7) * w
    r = rng.uniform(0.07, 0.16) * size
    target = _blob(h, w, cy, cx, r, rng)
    # a neighbour of similar intensity touching the target (where classic methods leak)
    ang = rng.uniform(0, 2 * np.pi)
    ny, nx = cy + 1.6 * r * np.sin(ang), cx + 1.6 * r * np.cos(ang)
    neighbour = _blob(h, w, ny, nx, 0.8 * r, rng) & body & ~target
    img[neighbour] = 105 + rng.uniform(15, 30)
    img[target] = 105 + rng.uniform(25, 45)
    img += _texture(h, w, rng, 1.5, 5) * target
    for _ in range(2):  # bright bones
        by, bx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
        bone = _blob(h, w, by, bx, rng.uniform(0.02, 0.04) * size, rng) & body & ~target
        img[bone] = 220
    img = cv2.GaussianBlur(img, (0, 0), 0.8) + rng.normal(0, rng.uniform(8, 16), (h, w))
    return np.clip(img, 0, 255).astype(np.uint8), target


def synth_mri(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    h = w = size
    yy, xx = np.mgrid[:h, :w]
    brain = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.36 * w)) ** 2 <= 1
    img = np.where(brain, 95.0, 5.0).astype(np.float32)
    img += (_texture(h, w, rng, 2.0, 14) * brain)
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.38, 0.62) * w
    r = rng.uniform(0.06, 0.13) * size
    tumour = _blob(h, w, cy, cx, r, rng, wobble=0.35) & brain
    edema = _blob(h, w, cy, cx, r * rng.uniform(1.5, 2.0), rng, wobble=0.4) & brain & ~tumour
    img[edema] += rng.uniform(20, 35)
    core = _blob(h, w, cy, cx, 0.5 * r, rng) & tumour
    img[tumour] = 165
    img[core] = rng.uniform(70, 110)
    bias = 1 + 0.25 * (xx / w - 0.5) + 0.15 * (yy / h - 0.5)
    img = cv2.GaussianBlur(img * bias, (0, 0), 0.7)
    noise = np.hypot(rng.normal(0, 9, (h, w)), rng.normal(0, 9, (h, w)))
    return np.clip(img + noise - 9, 0, 255).astype(np.uint8), tumour


def synth_dermoscopy(rng: np.random.Generator, size: int = 384) -> tuple[np.ndarray, np.ndarray]:
    h = w = size
    skin = np.array([215, 170, 150], np.float32) + rng.normal(0, 8, 3)
    img = np.ones((h, w, 3), np.float32) * skin
    img += _texture(h, w, rng, 6, 6)[:, :, None]
    cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
    r = rng.uniform(0.15, 0.3) * size
    lesion = _blob(h, w, cy, cx, r, rng, wobble=0.4)
    colour = np.array([130, 80, 55], np.float32) + rng.normal(0, 10, 3)
    soft = cv2.GaussianBlur(lesion.astype(np.float32), (0, 0), 3)[:, :, None]
    var = _texture(h, w, rng, 4, 18)[:, :, None]
    img = img * (1 - soft) + (colour + var) * soft
    for _ in range(rng.integers(2, 6)):  # hairs
        p0 = rng.uniform(0, size, 2).astype(int)
        p1 = rng.uniform(0, size, 2).astype(int)
        cv2.line(img, tuple(map(int, p0)), tuple(map(int, p1)), (40, 30, 25), int(rng.integers(1, 3)))
    vign = 1 - 0.35 * (((np.mgrid[:h, :w] - size / 2) ** 2).sum(0) / (size / 2) ** 2)
    img = img * np.clip(vign, 0.3, 1)[:, :, None] + rng.normal(0, 5, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lesion


def synth_endoscopy(rng: np.random.Generator, size: int = 384) -> tuple[np.ndarray, np.ndarray]:
    h = w = size
    yy, xx = np.mgrid[:h, :w]
    mucosa = np.array([190, 95, 80], np.float32)
    shade = 0.55 + 0.45 * np.exp(-(((yy - h * 0.45) ** 2 + (xx - w * 0.5) ** 2) / (0.5 * size) ** 2))
    img = mucosa * shade[:, :, None] + _texture(h, w, rng, 5, 10)[:, :, None]
    vessels = _texture(h, w, rng, 2, 1) > 1.6
    img[vessels] *= np.array([0.8, 0.6, 0.6], np.float32)
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    r = rng.uniform(0.1, 0.2) * size
    polyp = _blob(h, w, cy, cx, r, rng)
    dome = np.clip(1 - np.hypot(yy - cy, xx - cx) / (1.3 * r), 0, 1)
    colour = np.array([215, 130, 105], np.float32) + rng.normal(0, 8, 3)
    img[polyp] = (colour * (0.75 + 0.35 * dome[:, :, None]))[polyp]
    img += _texture(h, w, rng, 2, 6)[:, :, None] * polyp[:, :, None]
    spec = _texture(h, w, rng, 3, 1) > 2.2  # specular highlights
    img[spec] = 250
    img = cv2.GaussianBlur(img, (0, 0), 1.0) + rng.normal(0, 4, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), polyp


def synth_microscopy(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    h = w = size
    img = np.full((h, w), 12.0, np.float32) + _texture(h, w, rng, 8, 4)
    cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
    r = rng.uniform(0.08, 0.16) * size
    nucleus = _blob(h, w, cy, cx, r, rng, wobble=0.2)
    for _ in range(rng.integers(2, 5)):  # neighbours, some touching
        ang = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(1.7, 2.6) * r
        nb = _blob(h, w, cy + d * np.sin(ang), cx + d * np.cos(ang), r * rng.uniform(0.7, 1.1), rng)
        img[nb & ~nucleus] = rng.uniform(90, 170)
    img[nucleus] = rng.uniform(100, 180)
    img += _texture(h, w, rng, 1.5, 15) * (img > 50)
    img = cv2.GaussianBlur(img, (0, 0), 1.2) + rng.normal(0, 6, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8), nucleus


SYNTH = {
    "CT (synthetic)": synth_ct,
    "MRI (synthetic)": synth_mri,
    "Dermoscopy (synthetic)": synth_dermoscopy,
    "Endoscope (synthetic)": synth_endoscopy,
    "Microscopy (synthetic)": synth_microscopy,
}


def synthetic_cases(n: int, seed: int = 0) -> Iterator[Case]:
    for m, (modality, make) in enumerate(SYNTH.items()):
        rng = np.random.default_rng(seed + 1000 * m)
        for i in range(n):
            img, mask = make(rng)
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            yield Case(img, mask, modality, f"synth-{m}-{i}")


# -- demo data ---------------------------------------------------------------------------------
def demo_cases(root: Path, limit_per_modality: int | None = None) -> Iterator[Case]:
    """Cases of a BiomedParse-layout folder (``test/`` images, ``test_mask/`` masks)."""
    from medseg_agent.data.biomedparse import read_biomedparse

    count: dict[str, int] = defaultdict(int)
    for s in read_biomedparse(root):
        if limit_per_modality is not None and count[s.modality] >= limit_per_modality:
            continue
        count[s.modality] += 1
        yield Case(np.ascontiguousarray(s.image), np.asarray(s.mask, bool), s.modality, s.sample_id)


def default_demo_dir() -> Path:
    from medseg_agent.data.demo import default_demo_dir as demo_dir

    return demo_dir()


def ensure_demo(root: Path) -> Path | None:
    """The demo folder, built first when missing; None (with the reason on stderr) when it cannot be."""
    from medseg_agent.data.demo import DemoBuildError, build_demo_dataset

    if (root / "test_mask").is_dir() and any((root / "test_mask").glob("*.png")):
        return root
    try:
        build_demo_dataset(root)
    except (DemoBuildError, OSError) as exc:  # no apt-get, no registry, ...: say so and go on without it
        print(f"could not build the demo dataset: {exc}", file=sys.stderr)
        return None
    return root if (root / "test_mask").is_dir() else None
