"""Writing the demo dataset folder: PNGs in BiomedParse layout, the manifest, the attribution README
and a completion marker, built in a temporary folder and moved into place atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..common import encode_name
from .brain_mri import brain_mri_images
from .debian import MRICRON_FILES, MRICRON_PACKAGE, fetch_mricron_templates
from .locations import default_demo_dir, downloads_dir
from .nuclei import FIELD_CROP, NUCLEUS_CROP, UPSCALE, nuclei_images
from .pypi import STARDIST_MEMBERS, STARDIST_REQUIREMENT, fetch_stardist_images
from .reporting import DemoBuildError, Progress, no_progress

DEMO_VERSION = "1"
MARKER_NAME = ".medseg-demo.json"
MANIFEST_NAME = "demo_manifest.json"

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


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


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
    log = progress or no_progress
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
    entries = brain_mri_images(mri_src)
    log("cropping fluorescence nuclei (DSB 2018)")
    entries += nuclei_images(micro_src)
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
