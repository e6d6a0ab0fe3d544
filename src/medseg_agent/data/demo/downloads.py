"""Small helpers shared by the package fetchers: complete-folder checks, quiet subprocesses, and a
checksummed HTTPS download."""

from __future__ import annotations

import hashlib
import subprocess
import urllib.request
from pathlib import Path

from .reporting import DemoBuildError


def have_all_files(folder: Path, names: tuple[str, ...] | list[str]) -> bool:
    """Whether a fetch already happened (empty files from an interrupted copy do not count)."""
    return all((folder / n).is_file() and (folder / n).stat().st_size > 0 for n in names)


def run_command(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a package tool quietly; the caller reads its return code and output to explain failures."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def url_download(url: str, dest: Path, sha256: str | None, timeout: int = 120) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
        data = resp.read()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise DemoBuildError(f"checksum mismatch for {url}")
    dest.write_bytes(data)
