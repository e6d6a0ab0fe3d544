#!/usr/bin/env bash
# The packages the GPU check needs that the device machine lacks, as Python 3.12 wheels in .whl/
# (git-ignored), at the versions this project's .venv runs, so that a device session spends its
# minutes measuring instead of preparing.
#
#   bash benchmarks/gpu_wheels.sh                  # here, with network to PyPI (about a minute)
#
# The device machine (no network) has Python 3.12 with torch, transformers, numpy, opencv,
# scikit-image, timm and pyarrow. With the device tool, carrying .whl:
#
#   pip install -q --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site bash benchmarks/gpu_check.sh
#
# What goes in: the packages the check imports (ROOTS) and everything they require, as this .venv's
# metadata says, less what the device machine has (DEVICE and what those require). An earlier
# hand-written list missed two of fastapi's requirements (opentelemetry-api, annotated-doc): the
# server would not have started there. segment-anything, antlr4 4.9.3 (hydra's parser) and iopath
# (sdists only) are built here as pure-Python wheels; sam2 too, without its CUDA extension
# (SAM2_BUILD_CUDA=0: the package then skips only its optional hole filling, which the tools do not
# use).
set -euo pipefail
cd "$(dirname "$0")/.."
exec 2> >(grep -v "^WARNING: Location 'file:" >&2)  # this machine's pip also lists local indexes that may be absent
out=.whl
py=${PYTHON:-.venv/bin/python}
rm -rf "$out"
mkdir -p "$out"

# What the check imports (the server, the tools, the benchmarks; matplotlib and openai are imported
# only by commands the check does not run).
ROOTS="fastapi uvicorn uvloop httptools python-multipart httpx pydantic typer rich prometheus-client psutil pyyaml
       pycocotools nibabel pydicom tifffile hydra-core iopath segment-anything sam2"
# The device's array and image stack, whose requirements are stable; not transformers or timm, whose
# requirements change with their versions (this .venv's transformers requires typer, hence pydantic,
# which the device machine does not have).
DEVICE="torch torchvision numpy opencv-python-headless scikit-image pyarrow"
BUILT_HERE="segment-anything antlr4-python3-runtime iopath sam2"

# prints two lines: the compiled packages' pins, then the pure-Python ones', built-here ones left out
plan=$("$py" - "$ROOTS" "$DEVICE" "$BUILT_HERE" <<'PY'
import importlib.metadata as metadata
import re
import sys

from packaging.markers import default_environment
from packaging.requirements import Requirement

roots, device, built_here = (arg.split() for arg in sys.argv[1:])
environment = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.0", "extra": ""}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str], *, installed_only: bool = False) -> set[str]:
    """The packages and all they require; ``installed_only``: skip what this .venv lacks (the device
    machine has it, with its own requirements)."""
    seen: set[str] = set()
    todo = [norm(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if installed_only:
                continue
            raise SystemExit(f"gpu_wheels.sh: {name} is needed by the GPU check but not installed in this .venv")
        seen.add(name)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(norm(requirement.name))
    return seen


needed = closure(roots) - closure(device, installed_only=True) - {norm(n) for n in built_here}
compiled, pure = [], []
for name in sorted(needed):
    dist = metadata.distribution(name)
    (pure if "Root-Is-Purelib: true" in (dist.read_text("WHEEL") or "") else compiled).append(f"{name}=={dist.version}")
print(" ".join(compiled))
print(" ".join(pure))
PY
)
compiled=$(sed -n 1p <<<"$plan")
pure=$(sed -n 2p <<<"$plan")
echo "compiled for CPython 3.12: $compiled"
echo "pure Python: $pure"

# shellcheck disable=SC2086  # several pins on purpose
"$py" -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.12 --abi cp312 --abi abi3 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 --platform manylinux_2_5_x86_64 \
    --platform manylinux1_x86_64 -d "$out" $compiled
# shellcheck disable=SC2086
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$out" $pure
pins() {  # name==version of each package as installed in $py
    "$py" -c 'import importlib.metadata as m, sys; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "$@"
}
# shellcheck disable=SC2046
"$py" -m pip wheel -q --no-deps -w "$out" $(pins segment-anything antlr4-python3-runtime iopath)
SAM2_BUILD_CUDA=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$out" "$(pins sam2)"
ls "$out" | wc -l | xargs echo "wheels:"
du -sh "$out"
