"""Exports a checkpoint directory (ours or Hugging Face) to MindIR for MindSpore Lite or `mindspore.load`.

The weight names pick the model: a fine-tuned classifier exports (input_ids, token_type_ids, attention_mask) → logits;
a pretraining checkpoint also takes masked_lm_positions and returns (mlm_logits, nsp_logits). All inputs are int32
with the fixed shapes given here.

    python tools/export.py --checkpoint runs/sst2/best --format MINDIR --seq_length 128 --batch_size 1
"""
from __future__ import annotations

import argparse
import sys

from smallbert.errors import cli_main
from smallbert.export import FORMATS, export


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="directory with config.json and model.ckpt (or model.safetensors / pytorch_model.bin)")
    parser.add_argument("--format", default="MINDIR", type=str.upper, choices=FORMATS, help="export format")
    parser.add_argument("--output", help="file to write; .mindir is appended when missing, as mindspore.export does "
                             "(default: CHECKPOINT/model.mindir)")
    parser.add_argument("--seq_length", type=int, default=128, help="S, tokens per sequence (default 128)")
    parser.add_argument("--batch_size", type=int, default=1, help="B, sequences per call (default 1)")
    parser.add_argument("--max_predictions_per_seq", type=int, default=20,
                        help="P, masked positions per sequence; pretraining checkpoints only (default 20)")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    path, model = export(args.checkpoint, args.output, args.format, args.batch_size, args.seq_length,
                         args.max_predictions_per_seq)
    print(f"wrote {path}: {type(model).__name__}, batch {args.batch_size}, sequence length {args.seq_length}")


if __name__ == "__main__":
    sys.exit(main())
