"""Fetching the Debian package ``mricron-data`` (Colin27 T1 MRI + AAL atlas): an installed copy,
the cache, ``apt-get download``, or the .deb from deb.debian.org; extracted with or without dpkg."""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path

from .downloads import have_all_files, run_command, url_download
from .locations import downloads_dir
from .reporting import DemoBuildError, Progress, no_progress

MRICRON_PACKAGE = "mricron-data"
MRICRON_FILES = ("ch2.nii.gz", "ch2bet.nii.gz", "aal.nii.gz", "aal.nii.txt")
MRICRON_TEMPLATES = "usr/share/mricron/templates"  # inside the package
INSTALLED_TEMPLATES = Path("/") / MRICRON_TEMPLATES  # after `apt-get install mricron-data`
# Fallback when apt-get is unavailable (non-Debian hosts): the same package straight from Debian.
MRICRON_DEB_URL = "https://deb.debian.org/debian/pool/main/m/mricron/mricron-data_1.2.20211006%2Bdfsg-4_all.deb"
MRICRON_DEB_SHA256 = "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f"


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
        res = run_command(["dpkg-deb", "-x", str(deb), str(root)], tmp)
        if res.returncode == 0:
            for inner, target in members.items():
                src = root / inner
                if src.is_file():
                    shutil.copyfile(src, target)
            if have_all_files(dest, MRICRON_FILES):
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
            upd = run_command(["apt-get", "update"], tmp)
            if upd.returncode != 0:
                attempts.append(f"apt-get update: {(upd.stderr or upd.stdout).strip()[-300:]}")
                break
        res = run_command(["apt-get", "download", MRICRON_PACKAGE], tmp)
        debs = sorted(tmp.glob(f"{MRICRON_PACKAGE}_*.deb"))
        if res.returncode == 0 and debs:
            return debs[-1]
        attempts.append(f"apt-get download: {(res.stderr or res.stdout).strip()[-300:]}")
    log("; ".join(attempts))
    return None


def fetch_mricron_templates(cache: Path | None = None, progress: Progress | None = None) -> Path:
    """A folder holding ch2.nii.gz, ch2bet.nii.gz, aal.nii.gz and aal.nii.txt.

    Uses an installed ``/usr/share/mricron/templates`` if present, else the cache, else
    ``apt-get download mricron-data`` (+ ``apt-get update`` on failure), else the .deb from
    deb.debian.org; raises :class:`DemoBuildError` naming the package and command otherwise.
    """
    log = progress or no_progress
    if have_all_files(INSTALLED_TEMPLATES, MRICRON_FILES):
        return INSTALLED_TEMPLATES
    dest = (cache or downloads_dir()) / MRICRON_PACKAGE
    if have_all_files(dest, MRICRON_FILES):
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
                url_download(MRICRON_DEB_URL, deb, MRICRON_DEB_SHA256)
            except (OSError, ValueError, DemoBuildError) as exc:  # no network, a refused URL, a bad checksum
                raise DemoBuildError(
                    f"could not obtain the Debian package '{MRICRON_PACKAGE}' (brain MRI + AAL atlas). "
                    f"Run `apt-get update && apt-get download {MRICRON_PACKAGE}` (or, as root, "
                    f"`apt-get install {MRICRON_PACKAGE}`, which puts the files in /{MRICRON_TEMPLATES}) "
                    f"and try again. Last error: {exc}"
                ) from exc
        log(f"extracting {deb.name}")
        _extract_deb(deb, dest, tmp)
    if not have_all_files(dest, MRICRON_FILES):
        raise DemoBuildError(f"package {MRICRON_PACKAGE} did not contain {', '.join(MRICRON_FILES)}")
    return dest
