#!/usr/bin/env bash
# Issue 12, the check to run next on a GPU machine (about 7 minutes on one H100): where a batched
# decode's time goes, and whether the client or the server limits the rollout benchmark there.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]         # results: OUT_DIR (default $OUT, else runs/benchmarks/gpu-check)
#
# The second H100 run (docs/serving.md) measured 98.7 actions/s at 1024^2 with 8 client processes:
# ~147 ms per decode batch of ~20 rows against 8-9 ms for one serial decode, and client processes
# ~85 % busy. So:
# 1. decode_profile.py: Sam2Tool.decode_encoded per batch size and structure, first call at a shape
#    against the calls after it, the profiler's pieces (prompts, model, upsample, runs, rows) on the
#    host and the device, a Chrome trace of the largest batch.
# 2. rollout_server.py, the default workload at 1024^2 (8 images x 8 sessions x 5 actions), warm
#    (one unmeasured round first), server + ideal, 8 client processes: the second run's row, again,
#    now with the model thread's time per decode batch and busy share;
# 3. the same with 14 client processes: does more client CPU raise the throughput (client-bound)?
# 4. the same in fp32 instead of bf16 autocast.
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
step rollout-8-processes 100 "$python" benchmarks/rollout_server.py --device cuda --sides server,ideal \
    --client-processes 8 --warmup-rounds 1 --out "$out/rollout-8-processes.json"
step rollout-14-processes 90 "$python" benchmarks/rollout_server.py --device cuda --sides server \
    --client-processes 14 --warmup-rounds 1 --out "$out/rollout-14-processes.json"
step rollout-fp32 90 "$python" benchmarks/rollout_server.py --device cuda --sides server --precision fp32 \
    --client-processes 8 --warmup-rounds 1 --out "$out/rollout-fp32.json"
echo "== done $(date +%T); results in $out"
