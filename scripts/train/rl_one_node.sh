#!/usr/bin/env bash
# Stage 2 on one node: multi-turn GRPO on verl, with a local segmentation tool server.
#
#   MODEL=runs/sft/final TRAIN=runs/rl/train.parquet VAL=runs/rl/val.parquet OUT=runs/rl \
#   TOOL=sam2 TOOL_CHECKPOINT=/ckpt/MedSAM2_latest.pt GPUS=8 \
#     bash scripts/train/rl_one_node.sh [-- trainer.total_epochs=3 ...]
#
# Set TOOL_URL to use a tool server that is already running (then TOOL/TOOL_CHECKPOINT are unused).
# The local server runs on TOOL_DEVICE (default cpu: the classic tool; for sam2 give it a spare GPU,
# e.g. TOOL_DEVICE=cuda:7 with GPUS=7, or run it on another machine). Port 8000: Ray's dashboard owns
# 8265, the server's default port. Rerun the same command after a kill: verl resumes from $OUT/checkpoints (resume_mode=auto).
set -euo pipefail
: "${MODEL:?set MODEL (policy checkpoint)}" "${TRAIN:?set TRAIN (RL parquet)}" "${OUT:?set OUT (run folder)}"
GPUS="${GPUS:-8}"
REWARD="${REWARD:-medseg}"
mkdir -p "$OUT"
if [[ -z "${TOOL_URL:-}" ]]; then
  TOOL_URL="http://127.0.0.1:${TOOL_PORT:-8000}"
  medseg-agent serve --tool "${TOOL:-classic}" ${TOOL_CHECKPOINT:+--checkpoint "$TOOL_CHECKPOINT"} \
    --device "${TOOL_DEVICE:-cpu}" --host 127.0.0.1 --port "${TOOL_PORT:-8000}" >"$OUT/tool_server.log" 2>&1 &
  SERVER_PID=$!
  trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
  for _ in $(seq 120); do curl -sf "$TOOL_URL/health" >/dev/null && break; sleep 1; done
  curl -sf "$TOOL_URL/health" >/dev/null || { echo "tool server did not start; see $OUT/tool_server.log" >&2; exit 1; }
fi
medseg-agent train rl --model "$MODEL" --train "$TRAIN" ${VAL:+--val "$VAL"} --out "$OUT" \
  --tool "$TOOL_URL" --reward "$REWARD" --nnodes 1 --gpus-per-node "$GPUS" "$@"
