"""Choose the classic tool's algorithm by measurement.

Every candidate configuration of :class:`medseg_agent.tools.classic.ClassicTool` is run with a
simulated clicker on the same cases:

* ``box`` protocol: a box from the ground-truth bounding box, then up to ``--clicks`` corrective
  clicks. Each click goes to the interior-most point (maximum of the distance transform) of the
  larger error region: positive on a false negative, negative on a false positive. Every turn sends
  the box, all clicks so far and the previous turn's ``logits`` as ``mask_input``.
* ``clicks`` protocol (no box): a first positive click at the ground truth's interior-most point,
  then the same corrective clicks.

It reports the mean IoU after the box (or first click) and after each click, per modality, and the
latency of one action (encode excluded; it is paid once per image) on the cases and on synthetic
512x512 and 1024x1024 images.

Data: ``--data demo`` reads the BiomedParse-layout demo folder (``test/`` images, ``test_mask/``
masks named ``<image_stem>_<modality>_<site>_<target>.png``) at ``--demo-dir``, building it first
with ``medseg_agent.data.demo.build_demo_dataset`` when that module exists and the folder does not;
``--data synthetic`` generates noisy grayscale organs (CT-like), MRI-like tumours, RGB dermoscopy-
and endoscopy-like lesions and fluorescence nuclei; ``--data both`` runs the two.

    python benchmarks/classic_tool_choice.py --data both --out runs/classic_choice.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medseg_agent.tools.classic import ClassicTool
from medseg_agent.vocabulary.prompts import Prompt

# name -> ClassicTool options. Pure candidates use one algorithm for every turn; hybrids initialise
# from the box with one and refine (turns with a previous mask) with another.
CANDIDATES: dict[str, dict] = {
    "grabcut": {"method": "grabcut"},
    "random_walker": {"method": "random_walker"},
    "watershed": {"method": "watershed"},
    "grabcut>random_walker": {"method": "grabcut", "refine_method": "random_walker",
                              "click_method": "random_walker", "box_fallback": "watershed"},
    "grabcut>watershed, rw clicks": {"method": "grabcut", "refine_method": "watershed",
                                     "click_method": "random_walker", "box_fallback": "watershed"},
    "default": {},  # auto: GrabCut (watershed fallback) from a box, watershed from clicks and to refine
}


@dataclass
class Case:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool
    modality: str
    name: str


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
    try:
        from medseg_agent.data.biomedparse import read_biomedparse
    except ImportError:  # the reader is not there: parse the names here
        yield from _demo_cases_plain(root, limit_per_modality)
        return
    count: dict[str, int] = defaultdict(int)
    for s in read_biomedparse(root):
        if limit_per_modality is not None and count[s.modality] >= limit_per_modality:
            continue
        count[s.modality] += 1
        yield Case(np.ascontiguousarray(s.image), np.asarray(s.mask, bool), s.modality, s.sample_id)


def _demo_cases_plain(root: Path, limit_per_modality: int | None) -> Iterator[Case]:
    images = {p.stem: p for p in sorted((root / "test").glob("*.png"))}
    count: dict[str, int] = defaultdict(int)
    for mpath in sorted((root / "test_mask").glob("*.png")):
        stem = max((s for s in images if mpath.stem.startswith(s + "_")), key=len, default=None)
        if stem is None:
            continue
        tokens = stem.split("_")
        modality = tokens[-2].split("-")[0] if len(tokens) >= 3 else "unknown"
        if limit_per_modality is not None and count[modality] >= limit_per_modality:
            continue
        image = cv2.imread(str(images[stem]), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None or mask.shape != image.shape[:2] or not (mask > 0).any():
            continue
        count[modality] += 1
        yield Case(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), mask > 0, modality, mpath.stem)


def _default_demo_dir() -> Path:
    try:
        from medseg_agent.data.demo import default_demo_dir
    except ImportError:
        return Path.home() / ".cache" / "medseg-agent" / "demo"
    return default_demo_dir()


def ensure_demo(root: Path) -> Path | None:
    if (root / "test_mask").is_dir() and any((root / "test_mask").glob("*.png")):
        return root
    try:
        from medseg_agent.data.demo import DemoBuildError, build_demo_dataset
    except ImportError:
        return None
    try:
        build_demo_dataset(root)
    except (DemoBuildError, OSError) as exc:  # no network, no apt-get, ...: say so and go on without it
        print(f"could not build the demo dataset: {exc}", file=sys.stderr)
        return None
    return root if (root / "test_mask").is_dir() else None


# -- protocol ----------------------------------------------------------------------------------
def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def interior_point(region: np.ndarray) -> tuple[tuple[int, int], float]:
    """(x, y) of the maximum of the distance transform (image border counts as boundary)."""
    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return (int(x), int(y)), float(dist[y, x])


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[tuple[int, int], int] | None:
    fn, fp = gt & ~pred, pred & ~gt
    if not fn.any() and not fp.any():
        return None
    (pn, dn), (pp, dp) = interior_point(fn), interior_point(fp)
    return (pn, 1) if dn >= dp else (pp, 0)


def gt_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def run_episode(
    tool: ClassicTool, case: Case, protocol: str, n_clicks: int
) -> tuple[list[float], list[float], list[float]]:
    """IoU after each turn, and the wall-clock and CPU (process) seconds of each action."""
    emb = tool.encode(case.image)
    points: list[tuple[int, int]] = []
    labels: list[int] = []
    box = gt_box(case.mask) if protocol == "box" else None
    if protocol == "clicks":
        points.append(interior_point(case.mask)[0])
        labels.append(1)
    ious, times, cpus = [], [], []
    logits = None
    pred = None
    for turn in range(n_clicks + 1):
        if turn > 0:
            click = next_click(pred, case.mask)
            if click is None:  # perfect already: the score stays
                ious.append(ious[-1])
                continue
            points.append(click[0])
            labels.append(click[1])
        prompt = Prompt(box=box, points=np.array(points, np.float32).reshape(-1, 2),
                        labels=np.array(labels, np.int64), mask_input=logits)
        t, c = time.perf_counter(), time.process_time()
        out = tool.decode(emb, prompt)
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        pred, logits = out.mask, out.logits
        ious.append(iou(pred, case.mask))
    return ious, times, cpus


def latency(tool: ClassicTool, size: int, n: int = 4, seed: int = 7) -> dict[str, float]:
    """Encode and per-action seconds (wall clock and CPU) on synthetic CT-like and RGB images of
    ``size`` x ``size``, both protocols, 4 clicks each."""
    rng = np.random.default_rng(seed)
    acts, cpus, encs = [], [], []
    for i in range(n):
        img, mask = (synth_ct if i % 2 == 0 else synth_dermoscopy)(rng, size)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        case = Case(img, mask, "latency", f"lat{i}")
        t = time.perf_counter()
        tool.encode(img)
        encs.append(time.perf_counter() - t)
        for protocol in ("box", "clicks"):
            _, wall, cpu = run_episode(tool, case, protocol, 4)
            acts.extend(wall)
            cpus.extend(cpu)
    return {
        "encode_s": round(statistics.mean(encs), 4),
        "mean_s": round(statistics.mean(acts), 4),
        "max_s": round(max(acts), 4),
        "cpu_mean_s": round(statistics.mean(cpus), 4),
        "cpu_max_s": round(max(cpus), 4),
    }


def evaluate(
    name: str, options: dict, cases: list[Case], n_clicks: int, sizes: list[int], protocols=("box", "clicks")
) -> dict:
    tool = ClassicTool(**options)
    per: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for case in cases:
        for protocol in protocols:
            ious, times, _ = run_episode(tool, case, protocol, n_clicks)
            per[case.modality][protocol].append(ious)
            per[case.modality]["time"].extend(times)
    result = {"name": name, "options": options, "modalities": {}}
    for modality, d in per.items():
        result["modalities"][modality] = {
            "n": max(len(d["box"]), len(d["clicks"])),
            "box": np.mean(d["box"], axis=0).round(4).tolist() if d["box"] else [0.0] * (n_clicks + 1),
            "clicks": np.mean(d["clicks"], axis=0).round(4).tolist() if d["clicks"] else [0.0] * (n_clicks + 1),
            "action_s": round(float(np.mean(d["time"])), 4),
        }
    result["latency"] = {}
    for s in sizes:
        result["latency"][str(s)] = latency(tool, s)
    return result


def table(results: list[dict], n_clicks: int) -> str:
    lines = []
    if results and results[0]["modalities"]:
        heads = ["box"] + [f"+{i}" for i in range(1, n_clicks + 1)]
        lines += [
            "| candidate | modality | n | box protocol mIoU: " + " / ".join(heads)
            + " | clicks protocol mIoU: 1 / ... / " + str(n_clicks + 1) + " | s/action |",
            "|---|---|---|---|---|---|",
        ]
        for r in results:
            for modality, m in sorted(r["modalities"].items()):
                lines.append(
                    f"| {r['name']} | {modality} | {m['n']} | "
                    + " / ".join(f"{v:.3f}" for v in m["box"])
                    + " | " + " / ".join(f"{v:.3f}" for v in m["clicks"])
                    + f" | {m['action_s']:.3f} |"
                )
            box_all = np.mean([m["box"] for m in r["modalities"].values()], axis=0)
            clk_all = np.mean([m["clicks"] for m in r["modalities"].values()], axis=0)
            lines.append(
                f"| {r['name']} | **mean of modalities** | | "
                + " / ".join(f"{v:.3f}" for v in box_all) + " | " + " / ".join(f"{v:.3f}" for v in clk_all) + " | |"
            )
        lines.append("")
    if results and results[0]["latency"]:
        sizes = list(results[0]["latency"])
        lines.append(
            "| candidate | "
            + " | ".join(f"{s}px: encode s; action wall mean / max s; action CPU mean / max s" for s in sizes)
            + " |"
        )
        lines.append("|---|" + "---|" * len(sizes))
        for r in results:
            lines.append(
                f"| {r['name']} | "
                + " | ".join(
                    f"{v['encode_s']:.3f}; {v['mean_s']:.3f} / {v['max_s']:.3f}; "
                    f"{v['cpu_mean_s']:.3f} / {v['cpu_max_s']:.3f}"
                    for v in r["latency"].values()
                )
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("demo", "synthetic", "both"), default="both")
    ap.add_argument("--demo-dir", type=Path, default=_default_demo_dir())
    ap.add_argument("--per-modality", type=int, default=12, help="synthetic cases per modality")
    ap.add_argument("--demo-limit", type=int, default=None, help="at most this many demo cases per modality")
    ap.add_argument("--clicks", type=int, default=4)
    ap.add_argument("--sizes", type=int, nargs="*", default=[512, 1024])
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES),
                    help="names from CANDIDATES, or LABEL=JSON options for an ad-hoc candidate")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra options applied to every candidate (e.g. box_fallback=null)")
    ap.add_argument("--protocols", nargs="*", default=["box", "clicks"], choices=("box", "clicks"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    extra = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        extra[k] = json.loads(v) if v[:1] in "0123456789-[{tfn" and v not in ("none",) else v
    cases: list[Case] = []
    if args.data in ("demo", "both") and args.protocols:
        root = ensure_demo(args.demo_dir)
        if root is None:
            print(f"demo data not available at {args.demo_dir}", file=sys.stderr)
            if args.data == "demo":
                return 1
        else:
            cases.extend(demo_cases(root, args.demo_limit))
    if args.data in ("synthetic", "both") and args.protocols:
        cases.extend(synthetic_cases(args.per_modality))
    print(f"{len(cases)} cases: " + ", ".join(
        f"{m} {sum(c.modality == m for c in cases)}" for m in sorted({c.modality for c in cases})))
    results = []
    for name in args.candidates:
        if "=" in name:
            name, spec = name.split("=", 1)
            options = {**json.loads(spec), **extra}
        else:
            options = {**CANDIDATES[name], **extra}
        t = time.perf_counter()
        results.append(evaluate(name, options, cases, args.clicks, args.sizes, tuple(args.protocols)))
        print(f"{name}: done in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    print(table(results, args.clicks))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
