#!/usr/bin/env bash
# Issue 12, the check to run next on a GPU machine (about 10 minutes on one H100): where a batched
# decode's time goes, and whether the client or the server limits the rollout benchmark there.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]         # results: OUT_DIR (default $OUT, else runs/benchmarks/gpu-check)
#
# On the device machine lent to a session (Python 3.12, torch, no network), prepare the wheels here
# first and check that the programs start with them (bash benchmarks/gpu_wheels.sh && bash
# benchmarks/gpu_dry_run.sh), then, carrying .whl:
#   pip install -q --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site bash benchmarks/gpu_check.sh
#
# The third H100 run (docs/serving.md) measured 86.8 actions/s at 1024^2 with 8 client processes, the
# model thread busy 94 % of the action phase at ~142 ms per decode batch, where the same batches take
# 56-70 ms outside the server (two forwards of 16 rows; each forward bound by launching ~1,700
# operators, ~20 ms whatever its rows). The server's process used 6.9 ms of CPU per action: one
# interpreter for the model thread and the event loop. Since then the tool can replay its prompt
# encoder and mask decoder from one CUDA graph per input shape (tool option cuda_graphs=true): one
# launch per forward instead of ~1,700. So, the issue's question first (a device session may end
# before the last step):
# 1. rollout_server.py, the default workload at 1024^2, warm, 8 client processes, with the tool's 32
#    rows per decoder call on CUDA, --cuda-graphs: the target (>= 250 actions/s, p95 <= 0.3 s); a
#    graph whose first replay differs from the eager answer is dropped and counted;
# 2. the same eager: the baseline on the same machine;
# 3. decode_profile.py --contend 0.4 --cuda-graphs: every batch eager, then replayed from graphs
#    (first calls = captures), each also beside a thread of pure Python 40 % of the time (the event
#    loop's share), and how far the graphs' answers are from the eager ones;
# 4. the same workload with --cuda-graphs --model-process: the event loop and the model on two
#    interpreters;
# 5. the same with --cuda-graphs and 14 client processes: is the client the limit then?
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

step rollout-graphs 100 "$python" benchmarks/rollout_server.py --device cuda --sides server --cuda-graphs \
    --client-processes 8 --warmup-rounds 1 --out "$out/rollout-graphs.json"
step rollout-eager 100 "$python" benchmarks/rollout_server.py --device cuda --sides server,ideal \
    --client-processes 8 --warmup-rounds 1 --out "$out/rollout-eager.json"
step decode-profile 200 "$python" benchmarks/decode_profile.py --device cuda --contend 0.4 --cuda-graphs \
    --trace "$out/decode-trace.json" --out "$out/decode-profile.json"
step rollout-graphs-model-process 100 "$python" benchmarks/rollout_server.py --device cuda --sides server \
    --cuda-graphs --model-process --client-processes 8 --warmup-rounds 1 --out "$out/rollout-graphs-model-process.json"
step rollout-graphs-14-processes 90 "$python" benchmarks/rollout_server.py --device cuda --sides server \
    --cuda-graphs --client-processes 14 --warmup-rounds 1 --out "$out/rollout-graphs-14-processes.json"
echo "== done $(date +%T); results in $out"
