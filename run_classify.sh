#!/usr/bin/env bash
# Fine-tunes a checkpoint on a GLUE task or a labelled TSV; writes OUTPUT_DIR/best/, eval_results.json and the
# test predictions.
#
# usage: bash run_classify.sh TASK MODEL_DIR DATA_DIR OUTPUT_DIR [run_classify.py flags ...]
#   TASK:      sst-2, cola, mrpc, sts-b, qqp, mnli, qnli, rte, wnli, or tsv (then --text_a_column,
#              --text_b_column, --label_column name the header's columns)
#   MODEL_DIR: a run_pretrain.py output dir, our or a Hugging Face model dir (config.json + weights + vocab.txt)
#   DATA_DIR:  the task's directory as GLUE distributes it (train.tsv, dev.tsv, test.tsv; MNLI: dev_matched.tsv,
#              dev_mismatched.tsv, test_matched.tsv, test_mismatched.tsv)
#   e.g. bash run_classify.sh mrpc runs/l4 glue/MRPC runs/l4_mrpc --seeds 1,2,3 --lr 5e-5 --max_length 128
# DEVICE_TARGET (CPU, GPU or Ascend; default CPU) picks the device.
set -euo pipefail

if [ $# -lt 4 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 2
fi
TASK=$1; MODEL_DIR=$2; DATA_DIR=$3; OUTPUT_DIR=$4; shift 4
HERE=$(cd "$(dirname "$0")" && pwd)

exec python "$HERE/finetuningSST2/run_classify.py" --task_name "$TASK" --init_checkpoint "$MODEL_DIR" \
  --data_dir "$DATA_DIR" --output_dir "$OUTPUT_DIR" --device_target "${DEVICE_TARGET:-CPU}" "$@"
