"""Lesion-like cases for the classic-tool benchmark: small, often faint targets with a known truth.

Synthetic lesions are inserted into backgrounds we can see and share:

* **MRI**: axial slices of the real Colin27 T1 (Debian ``mricron-data``, via
  :func:`medseg_agent.data.demo.fetch_mricron_templates`), resampled to 256 x 256, with clinical-like
  Rician noise and a bias field added (the template itself is an average of 27 scans: far cleaner than
  a clinical scan). Lesions sit inside the brain.
* **CT**: synthetic 512 x 512 slices: an abdomen window with a textured liver (hypodense lesions) and a
  chest in a lung window (nodules among vessels, some touching the chest wall or a vessel).
* **narrow field of view** (``MRI-FOV``): an MRI lesion cropped so that it fills a good part of the
  image (as a breast lesion in a breast coil), rescaled to 256 x 256.

Every lesion is drawn at 4x resolution and area-averaged: the fraction of each pixel it covers is its
partial volume, and the truth is the pixels covered at least half. Sizes (diameter) 5-40 px; contrast
is set as a contrast-to-noise ratio (CNR: mean difference to the local background over the noise
sigma) in three bands; lesions may be hypo- or hyper-intense, solid or ring-enhancing (a bright rim
around a core close to the background), and may have satellites (small separate parts of the same
target).

Real sources from the shared list complete it: single DSB 2018 nuclei at native resolution (PyPI
``stardist``), small targets with manual masks. Nothing here is tuned on, or drawn from, other real
lesion data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from classic_cases import Case

SIZE_BANDS = {"5-10px": (5.0, 10.0), "10-20px": (10.0, 20.0), "20-40px": (20.0, 40.0)}
CNR_BANDS = {"faint": (1.0, 2.5), "medium": (2.5, 5.0), "strong": (5.0, 12.0)}
SUPERSAMPLE = 4


# -- drawing -------------------------------------------------------------------------------------
def _star(
    shape: tuple[int, int], cy: float, cx: float, r: float, rng: np.random.Generator, wobble: float
) -> np.ndarray:
    """A smooth random star-shaped region (boolean), radius ``r`` on average."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    theta = np.arctan2(yy - cy, xx - cx)
    rad = np.ones_like(theta)
    for k in range(2, 6):
        rad += rng.uniform(0, wobble / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.7, 1.0)
    phi = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(phi) + dy * np.sin(phi)
    v = (-dx * np.sin(phi) + dy * np.cos(phi)) / aspect
    return np.hypot(u, v) <= r * rad * np.sqrt(aspect)


def _coverage(hi_res: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fraction of each pixel a 4x-resolution drawing covers (the partial volume)."""
    return cv2.resize(hi_res.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


@dataclass
class Lesion:
    alpha: np.ndarray  # (H, W) partial volume of the whole lesion, in [0, 1]
    rim: np.ndarray  # (H, W) partial volume of its rim (zero for solid lesions)
    diameter: float
    kind: str


def draw_lesion(
    shape: tuple[int, int], cy: float, cx: float, diameter: float, rng: np.random.Generator, *, ring: bool,
    satellites: int,
) -> Lesion:
    """A lesion (and its satellites) centred at (cy, cx), as partial-volume maps (drawn in a window
    around it at 4x resolution)."""
    s = SUPERSAMPLE
    reach = int(np.ceil(1.6 * diameter)) + 3
    y0, x0 = max(0, int(cy) - reach), max(0, int(cx) - reach)
    y1, x1 = min(shape[0], int(cy) + reach + 1), min(shape[1], int(cx) + reach + 1)
    hs = ((y1 - y0) * s, (x1 - x0) * s)
    r = diameter / 2 * s
    py, px = (cy - y0 + 0.5) * s - 0.5, (cx - x0 + 0.5) * s - 0.5
    main = _star(hs, py, px, r, rng, wobble=rng.uniform(0.1, 0.45))
    whole = main.copy()
    rim = np.zeros(hs, bool)
    if ring:
        width = max(1.2 * s, rng.uniform(0.12, 0.25) * 2 * r)
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * round(width) + 1,) * 2)
        rim = main & ~cv2.erode(main.astype(np.uint8), disc).astype(bool)
    for _ in range(satellites):
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(1.3, 2.2) * r
        rs = rng.uniform(0.25, 0.45) * r
        whole |= _star(hs, py + dist * np.sin(ang), px + dist * np.cos(ang), max(rs, 1.5 * s), rng, wobble=0.2)
    alpha, rim_alpha = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    alpha[y0:y1, x0:x1] = _coverage(whole, (y1 - y0, x1 - x0))
    rim_alpha[y0:y1, x0:x1] = _coverage(rim, (y1 - y0, x1 - x0))
    kind = ("ring" if ring else "solid") + ("+satellites" if satellites else "")
    return Lesion(alpha, rim_alpha, diameter, kind)


def insert(background: np.ndarray, lesion: Lesion, delta: float, rim_delta: float, psf: float) -> np.ndarray:
    """The background with the lesion mixed in by partial volume, then blurred by the scanner's PSF."""
    img = background + lesion.alpha * delta + lesion.rim * (rim_delta - delta)
    return cv2.GaussianBlur(img.astype(np.float32), (0, 0), psf) if psf > 0 else img


def _texture(shape: tuple[int, int], rng: np.random.Generator, sigma: float, amp: float) -> np.ndarray:
    t = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), sigma)
    return t / (t.std() + 1e-6) * amp


def _band(value: float, bands: dict[str, tuple[float, float]]) -> str:
    for name, (lo, hi) in bands.items():
        if lo <= value < hi:
            return name
    return list(bands)[-1] if value >= list(bands.values())[-1][1] else list(bands)[0]


# -- backgrounds ---------------------------------------------------------------------------------
class BrainSlices:
    """Colin27 T1 axial slices (display orientation) with their brain masks, 256 x 256, 0..255."""

    def __init__(self) -> None:
        import nibabel as nib

        from medseg_agent.data.demo import fetch_mricron_templates
        from medseg_agent.data.volumes import canonical, display_slice
        from medseg_agent.io.intensity import percentile_range

        src = fetch_mricron_templates()
        t1 = np.asanyarray(canonical(nib.load(str(src / "ch2.nii.gz"))).dataobj).astype(np.float32)
        bet = np.asanyarray(canonical(nib.load(str(src / "ch2bet.nii.gz"))).dataobj) > 0
        lo, hi = percentile_range(t1)
        self.slices: list[tuple[np.ndarray, np.ndarray]] = []
        for z in range(45, 136, 3):
            img = np.clip((display_slice(t1, z, "axial") - lo) / (hi - lo) * 255.0, 0, 255)
            brain = display_slice(bet, z, "axial")
            self.slices.append((_square(img, 256, cv2.INTER_LINEAR), _square(brain.astype(np.float32), 256,
                                                                              cv2.INTER_LINEAR) > 0.5))

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        """A slice with a bias field (float, 0..255), where lesions may go (deep inside the brain), and
        the sigma of the noise to add once the lesion is in."""
        img, brain = self.slices[int(rng.integers(len(self.slices)))]
        h, w = img.shape
        yy, xx = np.mgrid[:h, :w] / max(h, w)
        a, b = rng.uniform(-0.25, 0.25, 2)
        inner = cv2.erode(brain.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
        return (img * (1 + a * (xx - 0.5) + b * (yy - 0.5))).astype(np.float32), inner, rng.uniform(2.5, 7.0)


def _square(a: np.ndarray, side: int, interp: int) -> np.ndarray:
    h, w = a.shape
    n = max(h, w)
    out = np.zeros((n, n), np.float32)
    out[(n - h) // 2 : (n - h) // 2 + h, (n - w) // 2 : (n - w) // 2 + w] = a
    return cv2.resize(out, (side, side), interpolation=interp)


def abdomen_ct(rng: np.random.Generator, size: int = 512) -> tuple[np.ndarray, np.ndarray, float]:
    """A soft-tissue-window slice (body, fat, a textured liver, spine), where lesions go (the liver), and
    the noise sigma."""
    h = w = size
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), 10.0, np.float32)
    body = ((yy - h * 0.52) / (0.40 * h)) ** 2 + ((xx - w / 2) / (0.46 * w)) ** 2 <= 1
    img[body] = 95
    inner = ((yy - h * 0.52) / (0.36 * h)) ** 2 + ((xx - w / 2) / (0.42 * w)) ** 2 <= 1
    img[body & ~inner] = 60  # subcutaneous fat
    liver = (((yy - h * 0.45) / (0.22 * h)) ** 2 + ((xx - w * 0.33) / (0.2 * w)) ** 2 <= 1) & inner
    liver_level = rng.uniform(125, 150)
    img[liver] = liver_level
    spleen = (((yy - h * 0.45) / (0.1 * h)) ** 2 + ((xx - w * 0.74) / (0.07 * w)) ** 2 <= 1) & inner
    img[spleen] = liver_level - rng.uniform(5, 15)
    spine = ((yy - h * 0.78) / (0.05 * h)) ** 2 + ((xx - w / 2) / (0.045 * w)) ** 2 <= 1
    img[spine] = 235
    for _ in range(int(rng.integers(3, 7))):  # vessels in the liver: small bright (contrast) or dark dots
        vy, vx = np.argwhere(liver)[int(rng.integers(liver.sum()))]
        cv2.circle(img, (int(vx), int(vy)), int(rng.integers(2, 6)), float(liver_level + rng.choice([-25, 30])), -1)
    img += _texture((h, w), rng, 2.5, 4.0) * body
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    where = cv2.erode(liver.astype(np.uint8), np.ones((31, 31), np.uint8)).astype(bool)
    return img, where, rng.uniform(6, 14)


def chest_ct(rng: np.random.Generator, size: int = 512) -> tuple[np.ndarray, np.ndarray, float]:
    """A lung-window slice: dark lungs with vessels, mediastinum, chest wall; nodules go into the lungs
    (anywhere, so some touch the wall or a vessel)."""
    h = w = size
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), 5.0, np.float32)
    body = ((yy - h / 2) / (0.38 * h)) ** 2 + ((xx - w / 2) / (0.46 * w)) ** 2 <= 1
    img[body] = 200
    lungs = np.zeros((h, w), bool)
    for side in (-1, 1):
        cy, cx = h * 0.48, w / 2 + side * w * 0.2
        lungs |= _star((h, w), cy, cx, 0.25 * w, rng, wobble=0.15) & body
    heart = ((yy - h * 0.55) / (0.15 * h)) ** 2 + ((xx - w * 0.52) / (0.12 * w)) ** 2 <= 1
    lungs &= ~heart
    lung_level = rng.uniform(25, 45)
    img[lungs] = lung_level
    for _ in range(int(rng.integers(25, 45))):  # vessels: short bright curved segments of decreasing width
        y, x = np.argwhere(lungs)[int(rng.integers(lungs.sum()))].astype(float)
        ang = rng.uniform(0, 2 * np.pi)
        width = rng.uniform(1.5, 4.5)
        for _ in range(int(rng.integers(4, 12))):
            ny, nx = y + 6 * np.sin(ang), x + 6 * np.cos(ang)
            cv2.line(img, (int(x), int(y)), (int(nx), int(ny)), float(rng.uniform(120, 190)), max(1, round(width)))
            y, x, ang, width = ny, nx, ang + rng.normal(0, 0.3), max(1.0, width * 0.9)
    img[~body] = 5
    img += _texture((h, w), rng, 1.5, 3.0) * lungs
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    where = cv2.erode(lungs.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    return img, where, rng.uniform(4, 10)


# -- cases -----------------------------------------------------------------------------------------
def _place(where: np.ndarray, diameter: float, rng: np.random.Generator) -> tuple[float, float] | None:
    h, w = where.shape
    margin = int(diameter * 1.5) + 4
    ok = where.copy()
    ok[:margin] = ok[-margin:] = False
    ok[:, :margin] = ok[:, -margin:] = False
    spots = np.argwhere(ok)
    if not len(spots):
        return None
    y, x = spots[int(rng.integers(len(spots)))]
    return float(y), float(x)


def _finish(img: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(img + 0.5, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def lesion_case(kind: str, rng: np.random.Generator, size_band: str, cnr_band: str, index: int,
                brain: BrainSlices | None) -> Case | None:
    """One case of ``kind`` (``MRI``, ``CT-liver``, ``CT-lung``, ``MRI-FOV``) in the given bands; None
    when the lesion found no place."""
    lo, hi = SIZE_BANDS["20-40px" if kind == "MRI-FOV" else size_band]
    diameter = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    cnr = float(rng.uniform(*CNR_BANDS[cnr_band]))
    if kind.startswith("MRI"):
        assert brain is not None
        background, where, sigma = brain.sample(rng)
    elif kind == "CT-liver":
        background, where, sigma = abdomen_ct(rng)
    else:
        background, where, sigma = chest_ct(rng)
    at = _place(where, diameter, rng)
    if at is None:
        return None
    ring = kind.startswith("MRI") and rng.random() < 0.5
    satellites = int(rng.random() < 0.25) * int(rng.integers(1, 3))
    lesion = draw_lesion(background.shape, at[0], at[1], diameter, rng, ring=ring, satellites=satellites)
    if kind == "CT-lung":
        sign = 1.0  # nodules are denser than the lung
    elif kind == "CT-liver":
        sign = -1.0 if rng.random() < 0.8 else 1.0  # mostly hypodense metastases and cysts
    else:
        sign = 1.0 if ring or rng.random() < 0.5 else -1.0
    delta = sign * cnr * sigma
    rim_delta = delta
    if ring:  # an enhancing rim around a core close to the background
        rim_delta = abs(delta) * rng.uniform(1.2, 1.8)
        delta = rim_delta * rng.uniform(-0.3, 0.3)
    img = insert(background, lesion, delta, rim_delta, psf=rng.uniform(0.3, 0.8))
    alpha = lesion.alpha
    if kind == "MRI-FOV":  # crop so the lesion fills a good part of the view, as in a breast coil
        ys, xs = np.nonzero(alpha >= 0.5)
        span = max(np.ptp(ys), np.ptp(xs)) + 1
        side = int(np.clip(span / rng.uniform(0.35, 0.6), span + 6, 255))
        y0 = int(np.clip(ys.mean() - side // 2 + rng.integers(-side // 8, side // 8 + 1), 0, 256 - side))
        x0 = int(np.clip(xs.mean() - side // 2 + rng.integers(-side // 8, side // 8 + 1), 0, 256 - side))
        img = cv2.resize(img[y0 : y0 + side, x0 : x0 + side], (256, 256), interpolation=cv2.INTER_CUBIC)
        alpha = cv2.resize(alpha[y0 : y0 + side, x0 : x0 + side], (256, 256), interpolation=cv2.INTER_LINEAR)
        size_band = "FOV"
    mask = alpha >= 0.5
    if mask.sum() < 4:
        return None
    if kind.startswith("MRI"):  # magnitude images: Rician noise
        img = np.hypot(img + rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape))
    else:
        img = img + rng.normal(0, sigma, img.shape)
    tags = {"size": size_band, "contrast": cnr_band, "kind": lesion.kind}
    return Case(_finish(img), mask, f"{kind} lesion*", f"{kind}-{size_band}-{cnr_band}-{index}", tags)


LESION_KINDS = ("MRI", "CT-liver", "CT-lung", "MRI-FOV")


def lesion_cases(per_band: int, seed: int = 0, kinds: tuple[str, ...] = LESION_KINDS) -> Iterator[Case]:
    """``per_band`` cases per (kind, size band, contrast band); the same seed gives the same cases."""
    brain = BrainSlices() if any(k.startswith("MRI") for k in kinds) else None
    for k, kind in enumerate(kinds):
        rng = np.random.default_rng(seed + 7919 * (k + 1))
        for size_band in ("FOV",) if kind == "MRI-FOV" else SIZE_BANDS:
            for cnr_band in CNR_BANDS:
                made = 0
                for attempt in range(per_band * 4):
                    if made == per_band:
                        break
                    case = lesion_case(kind, rng, size_band, cnr_band, attempt, brain)
                    if case is not None:
                        made += 1
                        yield case


def nuclei_cases(limit: int, seed: int = 0) -> Iterator[Case]:
    """Single DSB 2018 nuclei (real manual masks) at native resolution in 128 x 128 crops: small real
    targets, many touching a neighbour."""
    import tifffile

    from medseg_agent.data.demo import fetch_stardist_images

    src = fetch_stardist_images()
    img = tifffile.imread(str(src / "img2d.tif")).astype(np.float32)
    labels = tifffile.imread(str(src / "mask2d.tif"))
    lo, hi = np.percentile(img, (0.5, 99.8))
    img8 = np.clip((img - lo) / (hi - lo) * 255.0, 0, 255)
    ids = [i for i in np.unique(labels) if i]
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    made = 0
    for i in ids:
        if made == limit:
            break
        ys, xs = np.nonzero(labels == i)
        cy, cx = int(ys.mean()), int(xs.mean())
        y0, x0 = int(np.clip(cy - 64, 0, img.shape[0] - 128)), int(np.clip(cx - 64, 0, img.shape[1] - 128))
        mask = labels[y0 : y0 + 128, x0 : x0 + 128] == i
        if mask.sum() < 10 or mask[[0, -1]].any() or mask[:, [0, -1]].any():
            continue
        diameter = 2 * np.sqrt(mask.sum() / np.pi)
        size_band = _band(diameter, SIZE_BANDS)
        made += 1
        yield Case(_finish(img8[y0 : y0 + 128, x0 : x0 + 128]), mask, "Nuclei (real, native)",
                         f"dsb-nucleus{i}", {"size": size_band, "contrast": "real", "kind": "nucleus"})
