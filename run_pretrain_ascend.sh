#!/usr/bin/env bash
# Data-parallel BERT pretraining on Ascend NPUs, launched with msrun or with a rank table.
#
# usage: bash run_pretrain_ascend.sh DEVICE_NUM DATA_DIR CONFIG OUTPUT_DIR [run_pretrain.py flags ...]
#   e.g. bash run_pretrain_ascend.sh 8 /data/wiki_shards config/bert_base.json runs/base --train_steps 1000000 \
#          --amp O2 --amp_dtype bfloat16 --optimizer lamb --train_batch_size 64
#
# msrun (default): several machines as in run_pretrain_bert.sh, with NODES, NODE_RANK, MASTER_ADDR, MASTER_PORT.
# Rank table: set RANK_TABLE_FILE=/path/hccl.json to start one process per local device the classic way
# (DEVICE_ID, RANK_ID and RANK_SIZE exported per process; RANK_START = first rank on this machine, default 0).
set -euo pipefail

if [ $# -lt 4 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 2
fi
DEVICE_NUM=$1; DATA_DIR=$2; CONFIG=$3; OUTPUT_DIR=$4; shift 4
HERE=$(cd "$(dirname "$0")" && pwd)
script=("$HERE/run_pretrain.py" --device_target Ascend --data_dir "$DATA_DIR" --config "$CONFIG"
        --output_dir "$OUTPUT_DIR" "$@")

if [ -z "${RANK_TABLE_FILE:-}" ]; then
  NODES=${NODES:-1}
  cmd=(msrun --worker_num=$((DEVICE_NUM * NODES)) --local_worker_num="$DEVICE_NUM"
       --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-8118}"
       --node_rank="${NODE_RANK:-0}" --log_dir="$OUTPUT_DIR/msrun_logs" --join=True "${script[@]}")
  echo "${cmd[*]}"
  exec "${cmd[@]}"
fi

export RANK_TABLE_FILE RANK_SIZE=${RANK_SIZE:-$DEVICE_NUM}
RANK_START=${RANK_START:-0}
mkdir -p "$OUTPUT_DIR/logs"
pids=()
for ((i = 0; i < DEVICE_NUM; i++)); do
  echo "DEVICE_ID=$i RANK_ID=$((RANK_START + i)) RANK_SIZE=$RANK_SIZE python ${script[*]} > $OUTPUT_DIR/logs/rank_$((RANK_START + i)).log"
  DEVICE_ID=$i RANK_ID=$((RANK_START + i)) python "${script[@]}" > "$OUTPUT_DIR/logs/rank_$((RANK_START + i)).log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
