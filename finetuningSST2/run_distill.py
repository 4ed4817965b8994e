"""Distils a fine-tuned teacher classifier into a compact student on GLUE SST-2 (Turc et al. 2019).

    python finetuningSST2/run_distill.py --teacher runs/minilm_sst2/best --data_dir GLUE/SST-2 \\
        --bert_config_file config/bert_L4_H256.json --vocab_file vocab.txt --output_dir runs/l4_distilled \\
        --transfer_file unlabelled.txt --temperature 2.0 --alpha 0.0 --seeds 1,2,3

--teacher: a run_classify.py best/ directory or a Hugging Face sequence-classification directory (config.json,
weights with classifier.*, vocab.txt). The student starts from --init_checkpoint (anything run_classify.py takes)
or, with --bert_config_file and --vocab_file alone, from random initialisation; each side tokenizes with its own
vocab. The transfer set is train.tsv's sentences plus every --transfer_file (one sentence per line, blank lines
between documents allowed; .gz/.bz2; a Wikipedia .xml.bz2 dump). The teacher's logits are cached on disk (reused
by a rerun, resumed when interrupted). Writes output_dir/best/, eval_results.json (with the teacher's dev accuracy)
and test_predictions.tsv, as run_classify.py does.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run_classify import boolean, seed_list  # noqa: E402  (one flag parser per kind)

from smallbert.errors import SmallBertError, cli_main  # noqa: E402
from smallbert.finetune.distill import DistillConfig, run_distill  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = DistillConfig(data_dir="", init_checkpoint=None, output_dir="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--teacher", required=True, help="fine-tuned classifier directory (run_classify.py best/ or Hugging Face)")
    add("--data_dir", required=True, help="GLUE's SST-2 directory: train.tsv, dev.tsv, test.tsv")
    add("--output_dir", default="outputs", help="where best/, eval_results.json and test_predictions.tsv go "
                                                 "(default: %(default)s)")
    add("--init_checkpoint", help="student checkpoint (run_pretrain.py output, ours, HF or converted Google); "
                                  "omit to start from random initialisation of --bert_config_file")
    add("--bert_config_file", help="student config JSON (default: the student checkpoint's config.json)")
    add("--vocab_file", help="student WordPiece vocab.txt (default: the student checkpoint's vocab.txt)")
    add("--do_lower_case", type=boolean, nargs="?", const=True, metavar="{true,false}",
        help="student tokenizer casing (default: the student checkpoint's tokenizer_config.json, else true); "
             "the teacher uses its own")
    add("--transfer_file", action="append", default=[], metavar="FILE",
        help="unlabelled text added to the transfer set; repeat for several files")
    add("--temperature", type=float, default=defaults.temperature,
        help="softmax temperature T of the soft targets; the soft loss is scaled by T² (default: %(default)s)")
    add("--alpha", type=float, default=defaults.alpha,
        help="weight of the hard-label cross-entropy on labelled rows (default: %(default)s)")
    add("--logits_cache", help="file for the teacher's transfer-set logits (default: DATA_DIR/cache/teacher-*.npz, "
                               "keyed by teacher, text and max length)")
    add("--max_length", type=int, default=defaults.max_length, help="(default: %(default)s)")
    add("--pad_to_max_length", action="store_true", help="no length buckets")
    add("--train_batch_size", type=int, default=defaults.train_batch_size, help="(default: %(default)s)")
    add("--eval_batch_size", type=int, default=defaults.eval_batch_size,
        help="also the teacher's batch size (default: %(default)s)")
    add("--lr", "--learning_rate", type=float, default=defaults.lr, help="peak learning rate (default: %(default)s)")
    add("--epochs", type=int, default=defaults.epochs, help="(default: %(default)s)")
    add("--warmup_proportion", type=float, default=defaults.warmup_proportion, help="(default: %(default)s)")
    add("--weight_decay", type=float, default=defaults.weight_decay, help="(default: %(default)s)")
    add("--max_grad_norm", type=float, default=defaults.max_grad_norm, help="(default: %(default)s)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="random seed (default: 1)")
    seeds.add_argument("--seeds", type=seed_list, help="several seeds, e.g. 1,2,3: one run each, then mean ± std")
    add("--do_predict", type=boolean, default=True, metavar="{true,false}",
        help="write test_predictions.tsv; needs test.tsv (default: true)")
    add("--cache_dir", help="tokenized splits and teacher logits cache (default: DATA_DIR/cache)")
    add("--device_target", default=defaults.device_target, choices=("CPU", "GPU", "Ascend"),
        help="(default: %(default)s)")
    add("--amp", default=defaults.amp, choices=("O0", "O2"), help="(default: %(default)s)")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.seeds == ():
        raise SmallBertError("--seeds: give at least one integer")
    run_distill(DistillConfig(
        teacher=args.teacher, data_dir=args.data_dir, init_checkpoint=args.init_checkpoint,
        output_dir=args.output_dir, vocab_file=args.vocab_file, bert_config_file=args.bert_config_file,
        do_lower_case=args.do_lower_case, transfer_files=tuple(args.transfer_file), temperature=args.temperature,
        alpha=args.alpha, logits_cache=args.logits_cache, max_length=args.max_length,
        pad_to_max_length=args.pad_to_max_length, train_batch_size=args.train_batch_size,
        eval_batch_size=args.eval_batch_size, lr=args.lr, epochs=args.epochs,
        warmup_proportion=args.warmup_proportion, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        seeds=args.seeds or (args.seed if args.seed is not None else 1,), do_predict=args.do_predict,
        cache_dir=args.cache_dir, device_target=args.device_target, amp=args.amp))


if __name__ == "__main__":
    sys.exit(main())
