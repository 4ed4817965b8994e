"""Converts BERT checkpoints: Google TF or Hugging Face → smallbert, smallbert (or Google TF) → Hugging Face.

    python tools/convert_checkpoint.py --from google --to smallbert --input uncased_L-4_H-256_A-4 --output L4_H256
    python tools/convert_checkpoint.py --from smallbert --to hf --input runs/pretrain/final --output hf_model
"""
from __future__ import annotations

import argparse
import sys

from smallbert.convert import SOURCES, TARGETS, convert  # light: MindSpore is imported only when converting
from smallbert.errors import cli_main
from smallbert.flags import HelpFormatter, path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--from", dest="source_format", required=True, choices=SOURCES,
                        help="google: a release directory (bert_model.ckpt.* + bert_config.json + vocab.txt) or "
                             "checkpoint prefix, read with TensorFlow (pip install -e \".[tf]\"); hf: a transformers "
                             "directory (config.json + model.safetensors or pytorch_model.bin); smallbert: ours "
                             "(config.json + model.ckpt)")
    parser.add_argument("--to", dest="target_format", required=True, choices=TARGETS,
                        help="smallbert: config.json + model.ckpt + vocab.txt; hf: config.json + model.safetensors "
                             "+ vocab.txt + tokenizer files")
    parser.add_argument("--input", required=True, type=path, help="checkpoint directory (or, for google, checkpoint prefix)")
    parser.add_argument("--output", required=True, type=path, help="directory to write; files in it are replaced")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = convert(args.source_format, args.target_format, args.input, args.output)
    params = sum(p.size for p in model.weights())
    print(f"wrote {args.output}: {type(model).__name__}, {params:,} parameters ({args.target_format} format)")


if __name__ == "__main__":
    sys.exit(main())
