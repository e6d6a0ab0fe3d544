#!/usr/bin/env bash
# Issue 12, the check to run once on a GPU machine (about 7 minutes on one H100): where the tool
# server's time goes, and what the rollout benchmark measures once its client is not one process.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]         # results: OUT_DIR (default $OUT, else runs/benchmarks/gpu-check)
#
# 1. decode_profile.py: Sam2Tool.decode_encoded per batch size and structure, first call at a shape
#    against the calls after it (a GPU may build kernels or plans per shape), the profiler's pieces.
# 2. rollout_server.py, the default workload at 1024^2 (8 images x 8 sessions x 5 actions):
#    a. server + ideal with the old client (one process, 64 threads), decoder calls not bucketed
#       = the earlier H100 row;
#    b. server with 8 client processes, not bucketed;
#    c. server with 8 client processes, bucketed (power-of-two rows per decoder call, the default on CUDA);
#    d. server + ideal with 8 client processes, bucketed, after one unmeasured warm-up round on other images.
# Every step has its own time limit, so one slow step still leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-runs/benchmarks/gpu-check}}"
mkdir -p "$out"
python=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" \
    >> "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T), limit ${limit}s)"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    echo "   exit $? ; last lines:"
    tail -n 25 "$out/$name.log" | grep -v '━'
}

step decode-profile 150 "$python" benchmarks/decode_profile.py --device cuda --trace "$out/decode-trace.json" \
    --out "$out/decode-profile.json"
step rollout-1-process 120 "$python" benchmarks/rollout_server.py --device cuda --sides server,ideal \
    --client-processes 1 --bucket-batches off --out "$out/rollout-1-process.json"
step rollout-8-processes 90 "$python" benchmarks/rollout_server.py --device cuda --sides server \
    --client-processes 8 --bucket-batches off --out "$out/rollout-8-processes.json"
step rollout-8-processes-bucketed 90 "$python" benchmarks/rollout_server.py --device cuda --sides server \
    --client-processes 8 --out "$out/rollout-8-processes-bucketed.json"
step rollout-8-processes-warm 120 "$python" benchmarks/rollout_server.py --device cuda --sides server,ideal \
    --client-processes 8 --warmup-rounds 1 --out "$out/rollout-8-processes-warm.json"
echo "== done $(date +%T); results in $out"
