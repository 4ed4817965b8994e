#!/usr/bin/env python
"""Pretrain BERT (masked LM + next sentence prediction, or --mlm_only) on the MindRecord shards of tools/create_pretraining_data.py.

    python run_pretrain.py --data_dir SHARDS --config config/bert_L4_H256.json --output_dir RUN --train_steps 10000

Data parallel: launch this script with MindSpore's msrun (see run_pretrain_bert.sh / run_pretrain_ascend.sh).
"""
from __future__ import annotations

import argparse
import logging
import sys

from smallbert.errors import SmallBertError, cli_main
from smallbert.train import AMP_DTYPES, AMP_LEVELS, DEVICES, PretrainConfig, pretrain


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Flags of the original run_pretrain.py still work: --save_ckpt_path = --output_dir; "
               "--do_load_ckpt true --model_path P = --init_checkpoint P; --jit true/false = --jit/--no-jit.")
    data = parser.add_argument_group("data and model")
    data.add_argument("--data_dir", required=True, help="directory of training shards (MindRecord, or Google "
                      "TFRecords) written by tools/create_pretraining_data.py")
    data.add_argument("--config", dest="bert_config_file", required=True,
                      help="model config: Google bert_config.json or Hugging Face config.json (e.g. config/*.json)")
    data.add_argument("--output_dir", "--save_ckpt_path", dest="output_dir", required=True,
                      help="run directory: checkpoints/step_<N>/, final/ and metrics.jsonl go here")
    data.add_argument("--vocab_file", help="vocab.txt to copy into every checkpoint, so each is self-contained")
    data.add_argument("--eval_data_dir", help="held-out shards: MLM perplexity and accuracy, NSP accuracy, before "
                      "the first step and at every eval")
    data.add_argument("--mlm_only", action="store_true",
                      help="masked LM alone, no NSP head or loss (RoBERTa-style), on shards made with "
                           "create_pretraining_data.py --mlm_only; the pooler and NSP head are kept as loaded")
    data.add_argument("--verify_data", choices=("full", "fast", "off"), default="full",
                      help="before the first step: full hashes every shard against metadata.json (in parallel); "
                           "fast checks sizes, headers and indexes; off skips both. Every batch's ids are "
                           "checked in any case (default: full; see docs/checks.md)")

    schedule = parser.add_argument_group("optimisation")
    schedule.add_argument("--optimizer", choices=("adamw", "lamb"), default="adamw",
                          help="adamw: Google's AdamWeightDecay; lamb: LAMB for large batches (default: adamw)")
    schedule.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: 1e-4)")
    schedule.add_argument("--end_lr", type=float, default=0.0, help="learning rate at the last step (default: 0)")
    schedule.add_argument("--warmup_steps", type=int, default=10000,
                          help="linear warmup from 0 over this many steps, then linear decay (default: 10000)")
    length = schedule.add_mutually_exclusive_group()
    length.add_argument("--train_steps", type=int, help="number of optimizer steps to train")
    length.add_argument("--epochs", type=int, help="number of passes over --data_dir (instead of --train_steps)")
    schedule.add_argument("--train_batch_size", type=int, default=32,
                          help="sequences per device per optimizer step (default: 32)")
    schedule.add_argument("--accumulation_steps", type=int, default=1,
                          help="split each device batch into K micro-batches and accumulate their gradients: "
                               "same update, 1/K of the activation memory (default: 1)")
    schedule.add_argument("--weight_decay", type=float, default=0.01,
                          help="decoupled weight decay, not applied to LayerNorm and bias (default: 0.01)")
    schedule.add_argument("--max_grad_norm", type=float, default=1.0,
                          help="clip gradients to this global norm after unscaling; 0 disables (default: 1.0)")
    schedule.add_argument("--seed", type=int, default=12345, help="seeds initialisation, shuffling and masking")

    speed = parser.add_argument_group("device and speed")
    speed.add_argument("--device_target", choices=DEVICES, default="CPU", help="default: CPU")
    speed.add_argument("--amp", choices=AMP_LEVELS, default="O0",
                       help="O0: float32. O2: matmuls in --amp_dtype with float32 master weights, LayerNorm, "
                            "softmax and losses, and dynamic loss scaling for float16; O1 is the same as O2 (the "
                            "model already keeps O1's float32 ops in float32). On CPU keep O0: float16 measured "
                            "2.4x slower than float32 there (default: O0)")
    speed.add_argument("--amp_dtype", choices=tuple(AMP_DTYPES), default="float16",
                       help="low-precision type for --amp O1/O2; bfloat16 needs GPU or Ascend (default: float16)")
    speed.add_argument("--init_loss_scale", type=float, default=2.0 ** 16,
                       help="initial dynamic loss scale for float16 (default: 65536)")
    speed.add_argument("--jit", nargs="?", const=True, default=True, type=parse_bool,
                       help="compile the whole train step as a graph (default)")
    speed.add_argument("--no-jit", dest="jit", action="store_false",
                       help="run the step op by op in PyNative mode, for debugging")

    saving = parser.add_argument_group("checkpoints, logs and eval")
    saving.add_argument("--save_steps", type=int, default=1000,
                        help="save a checkpoint every N steps (and always at the end); 0: only at the end")
    saving.add_argument("--keep_checkpoint_max", type=int, default=5,
                        help="keep the newest K checkpoints; 0 keeps all (default: 5)")
    saving.add_argument("--resume", metavar="auto|PATH",
                        help="auto: continue from the newest valid checkpoint in --output_dir (start fresh if "
                             "there is none); PATH: a checkpoint or run directory. Restores weights, optimizer "
                             "moments, step, learning-rate position, loss scale and data position")
    saving.add_argument("--init_checkpoint",
                        help="start from these weights (our checkpoint or a Hugging Face directory); missing "
                             "pretraining heads are initialised fresh and reported. Ignored when resuming")
    saving.add_argument("--do_load_ckpt", type=parse_bool, default=False, help=argparse.SUPPRESS)
    saving.add_argument("--model_path", help=argparse.SUPPRESS)
    saving.add_argument("--log_steps", type=int, default=100,
                        help="print and append to metrics.jsonl every N steps (default: 100)")
    saving.add_argument("--eval_steps", type=int, default=0,
                        help="evaluate on --eval_data_dir every N steps; 0: only at the end; a fresh "
                             "run is also evaluated before its first step (default: 0)")
    saving.add_argument("--eval_batches", type=int, default=100,
                        help="evaluate on at most this many batches (default: 100)")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    do_load_ckpt, model_path = args.pop("do_load_ckpt"), args.pop("model_path")
    if do_load_ckpt:
        if not model_path:
            raise SmallBertError("--do_load_ckpt: needs --model_path (or use --init_checkpoint PATH)")
        if args["init_checkpoint"]:
            raise SmallBertError("--model_path: give either it or --init_checkpoint, not both")
        args["init_checkpoint"] = model_path
    pretrain(PretrainConfig(**args))


if __name__ == "__main__":
    sys.exit(main())
