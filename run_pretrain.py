#!/usr/bin/env python
"""Pretrain BERT (masked LM + next sentence prediction, or --mlm_only) on the MindRecord shards of tools/create_pretraining_data.py.

    python run_pretrain.py --data_dir SHARDS --config config/bert_L4_H256.json --output_dir RUN --train_steps 10000

Data parallel: launch this script with MindSpore's msrun (see run_pretrain_bert.sh / run_pretrain_ascend.sh).
"""
from __future__ import annotations

import argparse
import logging
import sys

# Only light modules here: `--help` and flag errors must not wait for MindSpore (imported by smallbert.pretrain).
from smallbert.config import AMP_LEVELS, DEVICES, OPTIMIZERS, PRECISIONS, PretrainConfig
from smallbert.data.records import VERIFY_MODES
from smallbert.errors import SmallBertError, cli_main
from smallbert.flags import HelpFormatter, add_compile_cache_flag, boolean, path, set_defaults_from


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormatter,
        epilog="Flags of the original run_pretrain.py still work: --save_ckpt_path = --output_dir; "
               "--do_load_ckpt true --model_path P = --init_checkpoint P; --jit true/false = --jit/--no-jit.")
    data = parser.add_argument_group("data and model")
    data.add_argument("--data_dir", required=True, type=path,
                      help="directory of training shards written by tools/create_pretraining_data.py, or a glob of "
                           "Google TFRecords")
    data.add_argument("--config", dest="bert_config_file", required=True, type=path,
                      help="model config: Google bert_config.json or Hugging Face config.json (e.g. config/*.json)")
    data.add_argument("--output_dir", "--save_ckpt_path", dest="output_dir", required=True, type=path,
                      help="run directory: checkpoints/step_<N>/, final/ and metrics.jsonl go here")
    data.add_argument("--vocab_file", type=path,
                      help="vocab.txt to copy into every checkpoint, so each is self-contained")
    data.add_argument("--eval_data_dir", type=path, help="held-out shards: MLM perplexity and accuracy, NSP accuracy, "
                      "before the first step and at every eval")
    data.add_argument("--mlm_only", action="store_true",
                      help="masked LM alone, no NSP head or loss (RoBERTa-style), on shards made with "
                           "create_pretraining_data.py --mlm_only; the pooler and NSP head are kept as loaded")
    data.add_argument("--verify_data", choices=VERIFY_MODES,
                      help="before the first step: full hashes every shard against metadata.json (in parallel); "
                           "fast checks sizes, headers and indexes; off skips both. Every batch's ids are "
                           "checked in any case (see docs/checks.md)")

    schedule = parser.add_argument_group("optimisation")
    schedule.add_argument("--optimizer", choices=OPTIMIZERS,
                          help="adamw: Google's AdamWeightDecay; lamb: LAMB for large batches")
    schedule.add_argument("--lr", type=float, help="peak learning rate")
    schedule.add_argument("--end_lr", type=float, help="learning rate at the last step")
    schedule.add_argument("--warmup_steps", type=int,
                          help="linear warmup from 0 over this many steps, then linear decay")
    length = schedule.add_mutually_exclusive_group(required=True)
    length.add_argument("--train_steps", type=int, help="number of optimizer steps to train (this or --epochs)")
    length.add_argument("--epochs", type=int, help="number of passes over --data_dir (this or --train_steps)")
    schedule.add_argument("--train_batch_size", type=int, help="sequences per device per optimizer step")
    schedule.add_argument("--accumulation_steps", type=int,
                          help="split each device batch into K micro-batches and accumulate their gradients: "
                               "same update, 1/K of the activation memory")
    schedule.add_argument("--weight_decay", type=float,
                          help="decoupled weight decay, not applied to LayerNorm and bias")
    schedule.add_argument("--adam_epsilon", type=float,
                          help="the eps added to sqrt(v) in AdamW's and Lamb's updates (Google: 1e-6)")
    schedule.add_argument("--max_grad_norm", type=float,
                          help="clip gradients to this global norm after unscaling; 0 disables")
    schedule.add_argument("--seed", type=int, help="seeds initialisation, shuffling and masking")

    speed = parser.add_argument_group("device and speed")
    speed.add_argument("--device_target", choices=DEVICES, help="where to train")
    speed.add_argument("--device_id", type=int,
                       help="GPU/NPU to run on when not launched by msrun ($DEVICE_ID if set, else 0; msrun "
                            "assigns one per process)")
    speed.add_argument("--amp", choices=AMP_LEVELS,
                       help="O0: float32. O2: matmuls in --amp_dtype with float32 master weights, LayerNorm, "
                            "softmax and losses, and dynamic loss scaling for float16; O1 is the same as O2 (the "
                            "model already keeps O1's float32 ops in float32). On CPU keep O0: float16 measured "
                            "2.4x slower than float32 there")
    speed.add_argument("--amp_dtype", choices=PRECISIONS,
                       help="low-precision type for --amp O1/O2; bfloat16 needs GPU or Ascend")
    speed.add_argument("--init_loss_scale", type=float, help="initial dynamic loss scale for float16")
    speed.add_argument("--jit", nargs="?", const=True, type=boolean, help="compile the whole train step as a graph")
    speed.add_argument("--no-jit", dest="jit", action="store_false",
                       help="run the step op by op in PyNative mode, for debugging")
    add_compile_cache_flag(speed)

    saving = parser.add_argument_group("checkpoints, logs and eval")
    saving.add_argument("--save_steps", type=int,
                        help="save a checkpoint every N steps (and always at the end); 0: only at the end")
    saving.add_argument("--keep_checkpoint_max", type=int, help="keep the newest K checkpoints; 0 keeps all")
    saving.add_argument("--resume", metavar="auto|PATH",
                        help="auto: continue from the newest valid checkpoint in --output_dir (start fresh if "
                             "there is none); PATH: a checkpoint or run directory. Restores weights, optimizer "
                             "moments, step, learning-rate position, loss scale and data position")
    saving.add_argument("--resume_force", action="store_true",
                        help="resume even though the learning-rate, batch, precision or optimizer flags, the model "
                             "config or the number of devices differ from the checkpoint's (they are listed, and a "
                             "schedule change is shown); without it such a resume is refused")
    saving.add_argument("--init_checkpoint", type=path,
                        help="start from these weights (our checkpoint or a Hugging Face directory); missing "
                             "pretraining heads are initialised fresh and reported. Ignored when resuming")
    saving.add_argument("--do_load_ckpt", type=boolean, default=False, help=argparse.SUPPRESS)
    saving.add_argument("--model_path", type=path, help=argparse.SUPPRESS)
    saving.add_argument("--log_steps", type=int, help="print and append to metrics.jsonl every N steps")
    saving.add_argument("--eval_steps", type=int, help="evaluate on --eval_data_dir every N steps; 0: only at the "
                        "end; a fresh run is also evaluated before its first step")
    saving.add_argument("--eval_batches", type=int, help="evaluate on at most this many batches")
    set_defaults_from(parser, PretrainConfig)
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
    if args["resume"] not in (None, "auto"):
        args["resume"] = path(args["resume"])
    from smallbert.pretrain import pretrain

    pretrain(PretrainConfig(**args))


if __name__ == "__main__":
    sys.exit(main())
