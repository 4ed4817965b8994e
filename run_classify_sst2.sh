#!/usr/bin/env bash
# Fine-tunes a checkpoint on GLUE SST-2 and writes OUTPUT_DIR/best/, eval_results.json and test_predictions.tsv.
#
# usage: bash run_classify_sst2.sh MODEL_DIR DATA_DIR OUTPUT_DIR [run_classify.py flags ...]
#   MODEL_DIR: a run_pretrain.py output dir, our or a Hugging Face model dir (config.json + weights + vocab.txt)
#   DATA_DIR:  GLUE's SST-2 (train.tsv, dev.tsv, test.tsv)
#   e.g. bash run_classify_sst2.sh runs/l4 glue/SST-2 runs/l4_sst2 --seeds 1,2,3,4,5 --lr 5e-5
# DEVICE_TARGET (CPU, GPU or Ascend; default CPU) picks the device.
set -euo pipefail

if [ $# -lt 3 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 2
fi
MODEL_DIR=$1; DATA_DIR=$2; OUTPUT_DIR=$3; shift 3
HERE=$(cd "$(dirname "$0")" && pwd)

exec python "$HERE/finetuningSST2/run_classify.py" --init_checkpoint "$MODEL_DIR" --data_dir "$DATA_DIR" \
  --output_dir "$OUTPUT_DIR" --device_target "${DEVICE_TARGET:-CPU}" "$@"
