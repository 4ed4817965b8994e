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
from smallbert.export import FORMATS, export  # light: MindSpore is imported only when exporting
from smallbert.flags import HelpFormatter, path, set_defaults_from


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=path,
                        help="directory with config.json and model.ckpt (or model.safetensors / pytorch_model.bin)")
    parser.add_argument("--format", dest="file_format", type=str.upper, choices=FORMATS, help="export format")
    parser.add_argument("--output", type=path, help="file to write; .mindir is appended when missing, as "
                                                   "mindspore.export does (default: CHECKPOINT/model.mindir)")
    parser.add_argument("--seq_length", type=int, help="S, tokens per sequence")
    parser.add_argument("--batch_size", type=int, help="B, sequences per call")
    parser.add_argument("--max_predictions_per_seq", type=int,
                        help="P, masked positions per sequence; pretraining checkpoints only")
    set_defaults_from(parser, export)
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    written, model = export(**vars(args))
    print(f"wrote {written}: {type(model).__name__}, batch {args.batch_size}, sequence length {args.seq_length}")


if __name__ == "__main__":
    sys.exit(main())
