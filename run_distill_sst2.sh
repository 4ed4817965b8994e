#!/usr/bin/env bash
# Distils a fine-tuned teacher into a student on GLUE SST-2; writes OUTPUT_DIR/best/, eval_results.json and
# test_predictions.tsv.
#
# usage: bash run_distill_sst2.sh TEACHER_DIR STUDENT DATA_DIR OUTPUT_DIR [run_distill.py flags ...]
#   TEACHER_DIR: run_classify.py's best/ or a Hugging Face sequence-classification directory
#   STUDENT:     a student checkpoint (run_pretrain.py output or model dir), or a config JSON for a random start
#                (then pass --vocab_file)
#   DATA_DIR:    GLUE's SST-2 (train.tsv, dev.tsv, test.tsv)
#   e.g. bash run_distill_sst2.sh runs/minilm_sst2/best config/bert_L4_H256.json glue/SST-2 runs/l4_kd \
#          --vocab_file vocab.txt --transfer_file unlabelled.txt --seeds 1,2,3
# DEVICE_TARGET (CPU, GPU or Ascend; default CPU) picks the device.
set -euo pipefail

if [ $# -lt 4 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 2
fi
TEACHER=$1; STUDENT=$2; DATA_DIR=$3; OUTPUT_DIR=$4; shift 4
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -f "$STUDENT" ] && [[ "$STUDENT" == *.json ]]; then
  STUDENT_FLAG=(--bert_config_file "$STUDENT")
else
  STUDENT_FLAG=(--init_checkpoint "$STUDENT")
fi

exec python "$HERE/finetuningSST2/run_distill.py" --teacher "$TEACHER" "${STUDENT_FLAG[@]}" --data_dir "$DATA_DIR" \
  --output_dir "$OUTPUT_DIR" --device_target "${DEVICE_TARGET:-CPU}" "$@"
