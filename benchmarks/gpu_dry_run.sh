#!/usr/bin/env bash
# Before a device session: does the GPU check start on a machine that has only the device's packages
# and .whl/? Builds a virtual environment with what the device machine has (torch, torchvision,
# transformers, numpy, opencv, scikit-image, timm, pyarrow), installs the wheels of
# benchmarks/gpu_wheels.sh beside it the way the device does (pip --target, on PYTHONPATH), and runs
# the check's two programs on this CPU at a tiny size, the model process included. A requirement
# missing from .whl/ shows here as it would there (a server that exits during startup), without
# spending device minutes. About 3 minutes, the first time.
#
#   bash benchmarks/gpu_wheels.sh && bash benchmarks/gpu_dry_run.sh
#
# The compiled wheels in .whl/ are for CPython 3.12; their equivalents for this Python are fetched
# here (same versions). DRY_VENV (default /tmp/gpu-dry-venv) is kept between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .whl ] || { echo "no .whl/: run bash benchmarks/gpu_wheels.sh first" >&2; exit 2; }
exec 2> >(grep -v "^WARNING: Location 'file:" >&2)
venv=${DRY_VENV:-/tmp/gpu-dry-venv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
torch_version=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "torch==$torch_version" torchvision transformers numpy opencv-python-headless \
        scikit-image timm pyarrow
fi
mkdir -p "$work/wheels"
compiled=()
for wheel in .whl/*.whl; do
    name=$(basename "$wheel")
    if [[ $name == *-cp312-* ]]; then  # name-version-cp312-...: the same version for this Python
        compiled+=("$(cut -d- -f1 <<<"$name")==$(cut -d- -f2 <<<"$name")")
    else
        cp "$wheel" "$work/wheels/"
    fi
done
"$venv/bin/pip" download -q --no-deps --only-binary=:all: -d "$work/wheels" "${compiled[@]}"
"$venv/bin/pip" install -q --no-deps --target "$work/site" "$work/wheels"/*.whl
export PYTHONPATH="$work/site:$PWD/src"
tiny=(--images 2 --sessions 2 --actions 2 --image-size 256)
"$venv/bin/python" benchmarks/decode_profile.py --images 1 --batches 1 --repeats 1 --out "$work/profile.json" | tail -n 1
"$venv/bin/python" benchmarks/rollout_server.py "${tiny[@]}" --sides server,ideal --out "$work/eager.json" | tail -n 2
"$venv/bin/python" benchmarks/rollout_server.py "${tiny[@]}" --sides server --model-process --out "$work/process.json" \
    | tail -n 2
echo "dry run passed: the GPU check's programs start with the device's packages and .whl/ only"
