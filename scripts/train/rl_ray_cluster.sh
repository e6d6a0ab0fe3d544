#!/usr/bin/env bash
# Stage 2 on a Ray cluster of several nodes: multi-turn GRPO on verl.
#
# Every node needs the same environment (medseg-agent + verl + the rollout engine) and the same
# paths to the model, the RL parquet and $OUT (shared storage). Run the tool server(s) first, e.g.
# one `medseg-agent serve --tool sam2 --device cuda --host 0.0.0.0 --port 8000 --token $TOKEN` per
# node or a pool behind a load balancer, and point TOOL_URL at it.
#
#   # on the head node
#   ROLE=head GPUS=8 bash scripts/train/rl_ray_cluster.sh
#   # on every other node
#   ROLE=worker HEAD=10.0.0.1 GPUS=8 bash scripts/train/rl_ray_cluster.sh
#   # then, on the head node, once `ray status` shows all nodes
#   ROLE=train NNODES=4 GPUS=8 MODEL=/shared/sft/final TRAIN=/shared/rl/train.parquet \
#     VAL=/shared/rl/val.parquet OUT=/shared/runs/rl TOOL_URL=http://tool-lb:8000 \
#     bash scripts/train/rl_ray_cluster.sh [-- trainer.total_epochs=3 ...]
set -euo pipefail
ROLE="${ROLE:?set ROLE to head, worker or train}"
GPUS="${GPUS:-8}"
RAY_PORT="${RAY_PORT:-6379}"
case "$ROLE" in
  head)
    ray start --head --port "$RAY_PORT" --num-gpus "$GPUS" --dashboard-host 0.0.0.0
    ;;
  worker)
    : "${HEAD:?set HEAD (address of the head node)}"
    ray start --address "$HEAD:$RAY_PORT" --num-gpus "$GPUS"
    ;;
  train)
    : "${NNODES:?set NNODES}" "${MODEL:?set MODEL}" "${TRAIN:?set TRAIN}" "${OUT:?set OUT}" "${TOOL_URL:?set TOOL_URL}"
    export RAY_ADDRESS="${RAY_ADDRESS:-auto}"   # verl's ray.init() joins the running cluster
    medseg-agent train rl --model "$MODEL" --train "$TRAIN" ${VAL:+--val "$VAL"} --out "$OUT" \
      --tool "$TOOL_URL" --reward "${REWARD:-medseg}" --nnodes "$NNODES" --gpus-per-node "$GPUS" "$@"
    ;;
  *)
    echo "ROLE must be head, worker or train, got $ROLE" >&2
    exit 2
    ;;
esac
