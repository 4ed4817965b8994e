#!/usr/bin/env bash
# Data-parallel BERT pretraining on GPUs with MindSpore's msrun: one process per device, gradients averaged,
# rank 0 writes checkpoints and logs.
#
# usage: bash run_pretrain_bert.sh DEVICE_NUM DATA_DIR CONFIG OUTPUT_DIR [run_pretrain.py flags ...]
#   e.g. bash run_pretrain_bert.sh 8 /data/wiki_shards config/bert_L4_H256.json runs/l4 --train_steps 100000
#
# Several machines: run the same command on each with NODES (machine count), NODE_RANK (this machine, 0..NODES-1)
# and MASTER_ADDR (machine 0's address) set. MASTER_PORT defaults to 8118. DEVICE_TARGET=CPU runs the same launch
# on CPU processes (MindSpore's mccl backend), which is how the tests check data parallelism.
set -euo pipefail

if [ $# -lt 4 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 2
fi
DEVICE_NUM=$1; DATA_DIR=$2; CONFIG=$3; OUTPUT_DIR=$4; shift 4
NODES=${NODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-8118}
DEVICE_TARGET=${DEVICE_TARGET:-GPU}
HERE=$(cd "$(dirname "$0")" && pwd)

cmd=(msrun --worker_num=$((DEVICE_NUM * NODES)) --local_worker_num="$DEVICE_NUM"
     --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" --node_rank="$NODE_RANK"
     --log_dir="$OUTPUT_DIR/msrun_logs" --join=True
     "$HERE/run_pretrain.py" --device_target "$DEVICE_TARGET"
     --data_dir "$DATA_DIR" --config "$CONFIG" --output_dir "$OUTPUT_DIR" "$@")
echo "${cmd[*]}"
exec "${cmd[@]}"
