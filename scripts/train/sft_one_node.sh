#!/usr/bin/env bash
# Stage 1 on one node: SFT of a Qwen-VL agent on exported expert trajectories, on all local GPUs.
#
#   MODEL=Qwen/Qwen3-VL-8B-Instruct DATA=runs/sft/train.parquet OUT=runs/sft GPUS=8 \
#     bash scripts/train/sft_one_node.sh [--lora] [--set warmup_steps=20] ...
#
# Extra arguments go to `medseg-agent train sft` (see --help). Rerun the same command after a kill:
# training resumes from the last checkpoint in $OUT.
set -euo pipefail
: "${MODEL:?set MODEL (base checkpoint)}" "${DATA:?set DATA (SFT rows)}" "${OUT:?set OUT (output folder)}"
GPUS="${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
GPUS="${GPUS:-1}"
exec accelerate launch --num_processes "$GPUS" -m medseg_agent.cli.app train sft \
  --model "$MODEL" --data "$DATA" --out "$OUT" --report-to tensorboard "$@"
