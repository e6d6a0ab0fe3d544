"""Build a small REAL demo dataset at run time from Debian / PyPI packages (no dataset hosts).

Sources (downloaded once into a cache folder, never into the repository):

- Debian package ``mricron-data``: the Colin27 T1 MRI (``ch2.nii.gz``), its brain-extracted version
  (``ch2bet.nii.gz``) and the AAL atlas drawn on it (``aal.nii.gz`` + ``aal.nii.txt``). Axial slices
  through the hippocampi, basal ganglia and thalami, shown radiologically, with AAL structures and
  the whole-brain mask as targets.
- PyPI wheel ``stardist==0.9.2``: one DSB 2018 fluorescence image with 125 hand-annotated nuclei
  (``stardist/data/images/img2d.tif`` + ``mask2d.tif``), read straight from the wheel (no
  TensorFlow). Crops centred on single nuclei ("the nucleus at the image centre") and crops with
  all nuclei as target.

The result is a BiomedParse folder (``test/`` + ``test_mask/``), readable with
:func:`medseg_agent.data.open_dataset`, plus ``README.txt`` (attribution) and ``demo_manifest.json``
(also a valid manifest for the manifest reader).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .common import encode_name
from .intensity import gray_to_rgb, percentile_range, rescale_to_uint8
from .volumes import display_slice

DEMO_VERSION = "1"
MARKER_NAME = ".medseg-demo.json"
MANIFEST_NAME = "demo_manifest.json"

MRICRON_PACKAGE = "mricron-data"
MRICRON_FILES = ("ch2.nii.gz", "ch2bet.nii.gz", "aal.nii.gz", "aal.nii.txt")
MRICRON_TEMPLATES = "usr/share/mricron/templates"  # inside the package
INSTALLED_TEMPLATES = Path("/") / MRICRON_TEMPLATES  # after `apt-get install mricron-data`
# Fallback when apt-get is unavailable (non-Debian hosts): the same package straight from Debian.
MRICRON_DEB_URL = "https://deb.debian.org/debian/pool/main/m/mricron/mricron-data_1.2.20211006%2Bdfsg-4_all.deb"
MRICRON_DEB_SHA256 = "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f"

STARDIST_REQUIREMENT = "stardist==0.9.2"
STARDIST_MEMBERS = {"img2d.tif": "stardist/data/images/img2d.tif", "mask2d.tif": "stardist/data/images/mask2d.tif"}

# Axial slices (index into the 1 mm RAS grid; MNI z = index - 71) and the AAL labels shown on each.
MRI_SLICES: dict[int, list[int]] = {
    56: [37, 38, -1],  # hippocampi + whole brain
    60: [37, 38],  # hippocampi
    68: [73, 74, -1],  # putamina + whole brain
    76: [77, 78, 73, 74, 71, 72],  # thalami, putamina, caudate nuclei
    80: [77, 78],  # thalami
    92: [71, 72, -1],  # caudate nuclei + whole brain
}
WHOLE_BRAIN = -1
AAL_TARGETS = {
    37: "left hippocampus",
    38: "right hippocampus",
    71: "left caudate nucleus",
    72: "right caudate nucleus",
    73: "left putamen",
    74: "right putamen",
    77: "left thalamus",
    78: "right thalamus",
    WHOLE_BRAIN: "whole brain",
}
MRI_MODALITY_TOKEN = "MRI-T1"
MRI_SITE = "head"

NUCLEUS_CROP = 96  # px of the original 512x512 image, upscaled x2
FIELD_CROP = 128
UPSCALE = 2
N_CENTRAL_NUCLEI = 6
N_FIELDS = 3
MICRO_MODALITY_TOKEN = "Microscopy"
MICRO_SITE = "fluorescence"
CENTRAL_NUCLEUS = "nucleus at the image centre"
ALL_NUCLEI = "all cell nuclei"

README_TEXT = """\
medseg-agent demo dataset (version {version})
============================================

Built by `medseg-agent data build-demo` from real images with real (manual) masks shipped inside
Debian / PyPI packages. Layout: BiomedParse (test/ images, test_mask/ masks named
<image>_<target>.png, image names <id>_<modality>_<site>.png); demo_manifest.json lists every sample.

1. Brain MRI (modality MRI, T1): Colin27 single-subject T1 template ("ch2") with the AAL atlas, from
   the Debian package `mricron-data` (BSD-3-clause packaging). Axial 1 mm slices shown in the
   radiological convention (anterior up, the patient's left on the image's right). Targets: AAL
   hippocampus, putamen, thalamus and caudate (left/right) and the whole brain (ch2bet mask, holes
   filled).
   - Holmes CJ, Hoge R, Collins L, Woods R, Toga AW, Evans AC. Enhancement of MR images using
     registration for signal averaging. J Comput Assist Tomogr. 1998;22(2):324-333.
   - Tzourio-Mazoyer N, Landeau B, Papathanassiou D, et al. Automated anatomical labeling of
     activations in SPM using a macroscopic anatomical parcellation of the MNI MRI single-subject
     brain. NeuroImage. 2002;15(1):273-289.
   - Rorden C, Brett M. Stereotaxic display of brain lesions. Behav Neurol. 2000;12(4):191-200
     (MRIcron).

2. Fluorescence microscopy (modality Microscopy): one image of the 2018 Data Science Bowl nuclei
   data with its manual instance masks, as shipped in the PyPI wheel `stardist==0.9.2`
   (BSD-3-clause). Crops of {nucleus_crop}x{nucleus_crop} px centred on single nuclei (target: the
   nucleus at the image centre) and {field_crop}x{field_crop} px fields (target: all nuclei), both
   upscaled x{upscale} (bilinear image, nearest-neighbour mask).
   - Caicedo JC, Goodman A, Karhohs KW, et al. Nucleus segmentation across imaging experiments: the
     2018 Data Science Bowl. Nature Methods. 2019;16:1247-1253.
   - Schmidt U, Weigert M, Broaddus C, Myers G. Cell detection with star-convex polygons. MICCAI
     2018 (StarDist).

Samples: {n_samples} ({counts}).
"""


class DemoBuildError(RuntimeError):
    """The demo data could not be obtained or written (the message says what to do)."""


Progress = Callable[[str], None]


def _noop(_: str) -> None:
    pass


# ------------------------------------------------------------------------------------ locations


def cache_root() -> Path:
    """``$MEDSEG_AGENT_CACHE`` or ``~/.cache/medseg-agent``."""
    env = os.environ.get("MEDSEG_AGENT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medseg-agent"


def default_demo_dir() -> Path:
    """Where the demo dataset goes by default: ``<cache_root()>/demo``."""
    return cache_root() / "demo"


def downloads_dir() -> Path:
    return cache_root() / "downloads"


# ------------------------------------------------------------------------------------ sources


def _have_all(folder: Path, names: tuple[str, ...] | list[str]) -> bool:
    return all((folder / n).is_file() and (folder / n).stat().st_size > 0 for n in names)


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def _extract_deb_members(deb: Path, members: dict[str, Path]) -> None:
    """Extract ``{path inside the package: destination}`` from a .deb without dpkg (ar + tar)."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise DemoBuildError(f"{deb} is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
        if not name.startswith("data.tar"):
            continue
        try:
            tar_ctx = tarfile.open(fileobj=io.BytesIO(body), mode="r:*")  # noqa: SIM115 (closed below)
        except tarfile.TarError as exc:
            raise DemoBuildError(f"cannot open {name} in {deb.name} ({exc}); install dpkg-deb") from exc
        with tar_ctx as tar:
            wanted = {m.lstrip("./"): dest for m, dest in members.items()}
            for info in tar.getmembers():
                key = info.name.lstrip("./")
                if key in wanted and info.isfile():
                    src = tar.extractfile(info)
                    assert src is not None
                    wanted[key].write_bytes(src.read())
        return
    raise DemoBuildError(f"{deb.name} has no data.tar member")


def _extract_deb(deb: Path, dest: Path, tmp: Path) -> None:
    members = {f"{MRICRON_TEMPLATES}/{n}": dest / n for n in MRICRON_FILES}
    if shutil.which("dpkg-deb"):
        root = tmp / "deb-root"
        res = _run(["dpkg-deb", "-x", str(deb), str(root)], tmp)
        if res.returncode == 0:
            for inner, target in members.items():
                src = root / inner
                if src.is_file():
                    shutil.copyfile(src, target)
            if _have_all(dest, MRICRON_FILES):
                return
    _extract_deb_members(deb, members)


def _apt_download(tmp: Path, log: Progress) -> Path | None:
    """``apt-get download mricron-data`` (after ``apt-get update`` if the first try fails)."""
    if not shutil.which("apt-get"):
        return None
    tmp.chmod(0o777)  # apt's unprivileged _apt user writes here when run as root
    attempts: list[str] = []
    for update_first in (False, True):
        if update_first:
            log("apt-get download failed; running apt-get update")
            upd = _run(["apt-get", "update"], tmp)
            if upd.returncode != 0:
                attempts.append(f"apt-get update: {(upd.stderr or upd.stdout).strip()[-300:]}")
                break
        res = _run(["apt-get", "download", MRICRON_PACKAGE], tmp)
        debs = sorted(tmp.glob(f"{MRICRON_PACKAGE}_*.deb"))
        if res.returncode == 0 and debs:
            return debs[-1]
        attempts.append(f"apt-get download: {(res.stderr or res.stdout).strip()[-300:]}")
    log("; ".join(attempts))
    return None


def _url_download(url: str, dest: Path, sha256: str | None, timeout: int = 120) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
        data = resp.read()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise DemoBuildError(f"checksum mismatch for {url}")
    dest.write_bytes(data)


def fetch_mricron_templates(cache: Path | None = None, progress: Progress | None = None) -> Path:
    """A folder holding ch2.nii.gz, ch2bet.nii.gz, aal.nii.gz and aal.nii.txt.

    Uses an installed ``/usr/share/mricron/templates`` if present, else the cache, else
    ``apt-get download mricron-data`` (+ ``apt-get update`` on failure), else the .deb from
    deb.debian.org; raises :class:`DemoBuildError` naming the package and command otherwise.
    """
    log = progress or _noop
    if _have_all(INSTALLED_TEMPLATES, MRICRON_FILES):
        return INSTALLED_TEMPLATES
    dest = (cache or downloads_dir()) / MRICRON_PACKAGE
    if _have_all(dest, MRICRON_FILES):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medseg-mricron-") as t:
        tmp = Path(t)
        log(f"downloading Debian package {MRICRON_PACKAGE} (16 MB)")
        deb = _apt_download(tmp, log)
        if deb is None:
            deb = tmp / "mricron-data.deb"
            try:
                log(f"apt-get unavailable or failed; fetching {MRICRON_DEB_URL}")
                _url_download(MRICRON_DEB_URL, deb, MRICRON_DEB_SHA256)
            except Exception as exc:
                raise DemoBuildError(
                    f"could not obtain the Debian package '{MRICRON_PACKAGE}' (brain MRI + AAL atlas). "
                    f"Run `apt-get update && apt-get download {MRICRON_PACKAGE}` (or, as root, "
                    f"`apt-get install {MRICRON_PACKAGE}`, which puts the files in /{MRICRON_TEMPLATES}) "
                    f"and try again. Last error: {exc}"
                ) from exc
        log(f"extracting {deb.name}")
        _extract_deb(deb, dest, tmp)
    if not _have_all(dest, MRICRON_FILES):
        raise DemoBuildError(f"package {MRICRON_PACKAGE} did not contain {', '.join(MRICRON_FILES)}")
    return dest


def _pip_download(tmp: Path, log: Progress) -> Path:
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(tmp)]
    tries = [
        [*base, STARDIST_REQUIREMENT],
        # Data files are identical in every wheel: any platform's wheel will do.
        [
            *base,
            "--only-binary=:all:",
            "--platform",
            "manylinux_2_28_x86_64",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            STARDIST_REQUIREMENT,
        ],
    ]
    errors = []
    for cmd in tries:
        res = _run(cmd, tmp)
        found = sorted(tmp.glob("stardist-*.whl")) + sorted(tmp.glob("stardist-*.tar.gz"))
        if res.returncode == 0 and found:
            return found[0]
        errors.append((res.stderr or res.stdout).strip()[-400:])
    raise DemoBuildError(
        f"could not download the PyPI package '{STARDIST_REQUIREMENT}' (fluorescence nuclei). Run "
        f"`{sys.executable} -m pip download --no-deps {STARDIST_REQUIREMENT} -d DIR` to check access "
        f"to PyPI. pip said: {errors[-1]}"
    )


def fetch_stardist_images(cache: Path | None = None, progress: Progress | None = None) -> Path:
    """A folder holding img2d.tif and mask2d.tif from the ``stardist==0.9.2`` distribution."""
    log = progress or _noop
    dest = (cache or downloads_dir()) / STARDIST_REQUIREMENT.replace("==", "-")
    if _have_all(dest, list(STARDIST_MEMBERS)):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medseg-stardist-") as t:
        tmp = Path(t)
        log(f"downloading PyPI package {STARDIST_REQUIREMENT} (3 MB, data files only)")
        dist = _pip_download(tmp, log)
        if dist.suffix == ".whl":
            with zipfile.ZipFile(dist) as zf:
                for name, member in STARDIST_MEMBERS.items():
                    (dest / name).write_bytes(zf.read(member))
        else:
            with tarfile.open(dist) as tf:
                by_suffix = {m.name.split("/", 1)[-1]: m for m in tf.getmembers()}
                for name, member in STARDIST_MEMBERS.items():
                    src = tf.extractfile(by_suffix[member])
                    assert src is not None
                    (dest / name).write_bytes(src.read())
    return dest


# ------------------------------------------------------------------------------------ building


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def _mri_samples(src: Path) -> list[dict[str, Any]]:
    import nibabel as nib
    from scipy import ndimage as ndi

    from .volumes import canonical

    t1 = canonical(nib.load(str(src / "ch2.nii.gz")))
    aal = canonical(nib.load(str(src / "aal.nii.gz")))
    bet = canonical(nib.load(str(src / "ch2bet.nii.gz")))
    vol = np.asanyarray(t1.dataobj).astype(np.float32)
    labels = np.asanyarray(aal.dataobj).astype(np.int32)
    brain = np.asanyarray(bet.dataobj) > 0
    if vol.shape != labels.shape or vol.shape != brain.shape:
        raise DemoBuildError(f"mricron templates have different grids: {vol.shape}, {labels.shape}, {brain.shape}")
    lo, hi = percentile_range(vol)
    zooms = t1.header.get_zooms()[:3]
    spacing = [float(zooms[1]), float(zooms[0])]
    out = []
    for z, targets in MRI_SLICES.items():
        image = gray_to_rgb(rescale_to_uint8(display_slice(vol, z, "axial"), lo, hi))
        image_id = f"colin27_axial_z{z:03d}_{MRI_MODALITY_TOKEN}_{MRI_SITE}"
        masks = {}
        for lab in targets:
            if lab == WHOLE_BRAIN:
                m = ndi.binary_fill_holes(display_slice(brain, z, "axial"))
            else:
                m = display_slice(labels, z, "axial") == lab
            masks[AAL_TARGETS[lab]] = m
        out.append(
            {
                "image_id": image_id,
                "image": image,
                "masks": masks,
                "modality": "MRI",
                "modality_token": MRI_MODALITY_TOKEN,
                "site": MRI_SITE,
                "source": "Colin27 T1 + AAL (Debian mricron-data)",
                "spacing": spacing,
                "meta": {"axis": "axial", "slice_index": z, "mni_z_mm": float(t1.affine[2, 3] + z * zooms[2])},
            }
        )
    return out


def _resize(a: np.ndarray, nearest: bool) -> np.ndarray:
    import cv2

    h, w = a.shape[:2]
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    src = a.astype(np.uint8)
    return cv2.resize(src, (w * UPSCALE, h * UPSCALE), interpolation=interp)


def _micro_samples(src: Path) -> list[dict[str, Any]]:
    import tifffile
    from skimage.measure import regionprops

    raw = tifffile.imread(str(src / "img2d.tif"))
    inst = tifffile.imread(str(src / "mask2d.tif")).astype(np.int32)
    if raw.ndim != 2 or raw.shape != inst.shape:
        raise DemoBuildError(f"unexpected stardist data shapes {raw.shape} / {inst.shape}")
    lo, hi = percentile_range(raw)
    gray = rescale_to_uint8(raw, lo, hi)
    h, w = raw.shape
    out = []
    half = NUCLEUS_CROP // 2
    margin = 6
    candidates = []
    for p in regionprops(inst):
        cy, cx = (int(round(c)) for c in p.centroid)
        y0, x0 = cy - half, cx - half
        r0, c0, r1, c1 = p.bbox
        if not (y0 >= 0 and x0 >= 0 and y0 + NUCLEUS_CROP <= h and x0 + NUCLEUS_CROP <= w):
            continue
        if inst[cy, cx] != p.label or p.area < 300 or p.solidity < 0.93:
            continue
        if r0 - y0 < margin or c0 - x0 < margin or y0 + NUCLEUS_CROP - r1 < margin or x0 + NUCLEUS_CROP - c1 < margin:
            continue
        candidates.append((-int(p.area), int(p.label), y0, x0))
    candidates.sort()
    chosen: list[tuple[int, int, int]] = []
    for _, label, y0, x0 in candidates:
        if all(max(abs(y0 - y), abs(x0 - x)) >= NUCLEUS_CROP for _, y, x in chosen):
            chosen.append((label, y0, x0))
        if len(chosen) == N_CENTRAL_NUCLEI:
            break
    for label, y0, x0 in chosen:
        crop = gray[y0 : y0 + NUCLEUS_CROP, x0 : x0 + NUCLEUS_CROP]
        mask = inst[y0 : y0 + NUCLEUS_CROP, x0 : x0 + NUCLEUS_CROP] == label
        out.append(
            {
                "image_id": f"dsb2018_nucleus{label:03d}_y{y0:03d}x{x0:03d}_{MICRO_MODALITY_TOKEN}_{MICRO_SITE}",
                "image": gray_to_rgb(_resize(crop, nearest=False)),
                "masks": {CENTRAL_NUCLEUS: _resize(mask, nearest=True).astype(bool)},
                "modality": "Microscopy",
                "modality_token": MICRO_MODALITY_TOKEN,
                "site": MICRO_SITE,
                "source": "DSB 2018 nuclei (PyPI stardist 0.9.2)",
                "spacing": None,
                "meta": {"crop_yx": [y0, x0], "crop_size": NUCLEUS_CROP, "upscale": UPSCALE, "instance": label},
            }
        )
    # Fields with the most nucleus pixels, on a 32 px grid, not overlapping.
    fg = inst > 0
    scored = []
    for y0 in range(0, h - FIELD_CROP + 1, 32):
        for x0 in range(0, w - FIELD_CROP + 1, 32):
            scored.append((-int(fg[y0 : y0 + FIELD_CROP, x0 : x0 + FIELD_CROP].sum()), y0, x0))
    scored.sort()
    fields: list[tuple[int, int]] = []
    for _, y0, x0 in scored:
        if all(max(abs(y0 - y), abs(x0 - x)) >= FIELD_CROP for y, x in fields):
            fields.append((y0, x0))
        if len(fields) == N_FIELDS:
            break
    for y0, x0 in fields:
        crop = gray[y0 : y0 + FIELD_CROP, x0 : x0 + FIELD_CROP]
        mask = fg[y0 : y0 + FIELD_CROP, x0 : x0 + FIELD_CROP]
        out.append(
            {
                "image_id": f"dsb2018_field_y{y0:03d}x{x0:03d}_{MICRO_MODALITY_TOKEN}_{MICRO_SITE}",
                "image": gray_to_rgb(_resize(crop, nearest=False)),
                "masks": {ALL_NUCLEI: _resize(mask, nearest=True).astype(bool)},
                "modality": "Microscopy",
                "modality_token": MICRO_MODALITY_TOKEN,
                "site": MICRO_SITE,
                "source": "DSB 2018 nuclei (PyPI stardist 0.9.2)",
                "spacing": None,
                "meta": {"crop_yx": [y0, x0], "crop_size": FIELD_CROP, "upscale": UPSCALE},
            }
        )
    return out


def _write(entries: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    (root / "test").mkdir(parents=True)
    (root / "test_mask").mkdir()
    rows = []
    for e in entries:
        image_name = f"{e['image_id']}.png"
        _save_png(root / "test" / image_name, e["image"])
        for target, mask in e["masks"].items():
            if not mask.any():
                raise DemoBuildError(f"empty demo mask for {target} on {image_name}")
            mask_name = f"{e['image_id']}_{encode_name(target)}.png"
            _save_png(root / "test_mask" / mask_name, mask.astype(np.uint8) * 255)
            rows.append(
                {
                    "sample_id": mask_name[:-4],
                    "image": f"test/{image_name}",
                    "mask": f"test_mask/{mask_name}",
                    "target": f"{target} in {e['site']} {e['modality_token']}",
                    "target_name": target,
                    "modality": e["modality"],
                    "site": e["site"],
                    "split": "test",
                    "dataset": "demo",
                    "source": e["source"],
                    "spacing": e["spacing"],
                    "mask_area_px": int(mask.sum()),
                    "mask_fraction": round(float(mask.mean()), 4),
                    "meta": e["meta"],
                }
            )
    return rows


def is_complete(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a finished build of the current demo version."""
    root = Path(out_dir)
    try:
        marker = json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("version") != DEMO_VERSION:
        return False
    rows = manifest.get("samples", [])
    return bool(rows) and all((root / r["image"]).is_file() and (root / r["mask"]).is_file() for r in rows)


def build_demo_dataset(
    out_dir: str | Path | None = None,
    force: bool = False,
    *,
    progress: Progress | None = None,
    cache: str | Path | None = None,
) -> Path:
    """Build (or reuse) the demo dataset in ``out_dir`` (default :func:`default_demo_dir`).

    Deterministic: the same sources give byte-identical PNGs. Downloads are cached in ``cache``
    (default ``<cache_root()>/downloads``). An existing complete build is reused unless ``force``.
    Raises :class:`DemoBuildError` when a source cannot be obtained.
    """
    log = progress or _noop
    out = Path(out_dir).expanduser() if out_dir is not None else default_demo_dir()
    if not force and is_complete(out):
        log(f"reusing the demo dataset in {out}")
        return out
    if out.exists() and not out.is_dir():
        raise DemoBuildError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER_NAME).exists():
        raise DemoBuildError(f"{out} is not empty and holds no demo dataset; choose another folder")
    dl = Path(cache).expanduser() if cache is not None else downloads_dir()
    mri_src = fetch_mricron_templates(dl, log)
    micro_src = fetch_stardist_images(dl, log)
    log("slicing brain MRI (Colin27 + AAL)")
    entries = _mri_samples(mri_src)
    log("cropping fluorescence nuclei (DSB 2018)")
    entries += _micro_samples(micro_src)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        log(f"writing PNGs to {out}")
        rows = _write(entries, tmp)
        counts = {
            "modality": dict(Counter(r["modality"] for r in rows)),
            "target": dict(Counter(r["target_name"] for r in rows)),
        }
        manifest = {
            "name": "medseg-agent demo",
            "version": DEMO_VERSION,
            "layout": "biomedparse",
            "n_samples": len(rows),
            "n_images": len(entries),
            "counts": counts,
            "sources": {
                "mri": {"package": f"debian:{MRICRON_PACKAGE}", "files": list(MRICRON_FILES)},
                "microscopy": {"package": f"pypi:{STARDIST_REQUIREMENT}", "files": list(STARDIST_MEMBERS.values())},
            },
            "samples": rows,
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts["modality"].items()))
        (tmp / "README.txt").write_text(
            README_TEXT.format(
                version=DEMO_VERSION,
                nucleus_crop=NUCLEUS_CROP,
                field_crop=FIELD_CROP,
                upscale=UPSCALE,
                n_samples=len(rows),
                counts=summary,
            ),
            encoding="utf-8",
        )
        (tmp / MARKER_NAME).write_text(
            json.dumps({"version": DEMO_VERSION, "n_samples": len(rows)}) + "\n", encoding="utf-8"
        )
        tmp.chmod(0o755)
        if not force and is_complete(out):  # another process finished the same build meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return out
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"demo dataset ready: {len(rows)} samples in {out}")
    return out


def demo_summary(out_dir: str | Path) -> dict[str, Any]:
    """Counts from a built demo's manifest (``n_samples``, ``counts`` by modality and target)."""
    manifest = json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    return {"n_samples": manifest["n_samples"], "n_images": manifest.get("n_images"), **manifest["counts"]}
