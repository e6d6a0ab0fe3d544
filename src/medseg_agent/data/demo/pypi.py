"""Fetching the DSB 2018 nuclei image and mask from the PyPI distribution ``stardist==0.9.2`` (data
files only: the wheel is opened as a zip, nothing is installed)."""

from __future__ import annotations

import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from .downloads import have_all_files, run_command
from .locations import downloads_dir
from .reporting import DemoBuildError, Progress, no_progress

STARDIST_REQUIREMENT = "stardist==0.9.2"
STARDIST_MEMBERS = {"img2d.tif": "stardist/data/images/img2d.tif", "mask2d.tif": "stardist/data/images/mask2d.tif"}


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
        res = run_command(cmd, tmp)
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
    log = progress or no_progress
    dest = (cache or downloads_dir()) / STARDIST_REQUIREMENT.replace("==", "-")
    if have_all_files(dest, list(STARDIST_MEMBERS)):
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
