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
# segment-anything, antlr4 4.9.3 (hydra's parser) and iopath (sdists only) are built here as pure-Python wheels; sam2 too,
# without its CUDA extension (SAM2_BUILD_CUDA=0: the package then skips only its optional hole
# filling, which the tools do not use).
set -euo pipefail
cd "$(dirname "$0")/.."
exec 2> >(grep -v "^WARNING: Location 'file:" >&2)  # this machine's pip also lists local indexes that may be absent
out=.whl
py=${PYTHON:-.venv/bin/python}
rm -rf "$out"
mkdir -p "$out"

pins() {  # name==version of each package as installed in $py
    "$py" - "$@" <<'EOF'
import importlib.metadata as metadata
import sys
print(" ".join(f"{name}=={metadata.version(name)}" for name in sys.argv[1:]))
EOF
}

# compiled for CPython 3.12 on manylinux x86_64
compiled=(pydantic-core pycocotools psutil pyyaml uvloop httptools markupsafe)
# pure Python
pure=(fastapi starlette pydantic annotated-types typing-inspection typing-extensions uvicorn h11 click anyio
      sniffio python-multipart httpx httpcore certifi idna typer rich markdown-it-py mdurl pygments shellingham
      prometheus-client hydra-core omegaconf portalocker tqdm tifffile nibabel pydicom)

# shellcheck disable=SC2046  # pins prints several words on purpose
"$py" -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.12 --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$out" $(pins "${compiled[@]}")
# shellcheck disable=SC2046
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$out" $(pins "${pure[@]}")
# shellcheck disable=SC2046
"$py" -m pip wheel -q --no-deps -w "$out" $(pins segment-anything antlr4-python3-runtime iopath)
SAM2_BUILD_CUDA=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$out" "$(pins sam2)"
ls "$out" | wc -l | xargs echo "wheels:"
du -sh "$out"
