"""Distils a fine-tuned teacher classifier into a compact student (Turc et al. 2019) on any task run_classify.py
takes: single sentences or pairs, string labels, or regression (MSE to the teacher's output).

    python finetuningSST2/run_distill.py --teacher runs/minilm_sst2/best --data_dir GLUE/SST-2 \\
        --bert_config_file config/bert_L4_H256.json --vocab_file vocab.txt --output_dir runs/l4_distilled \\
        --transfer_file unlabelled.txt --temperature 2.0 --alpha 0.0 --seeds 1,2,3

--teacher: a run_classify.py best/ directory or a Hugging Face sequence-classification directory (config.json,
weights with classifier.*, vocab.txt). The student starts from --init_checkpoint (anything run_classify.py takes)
or, with --bert_config_file and --vocab_file alone, from random initialisation; each side tokenizes with its own
vocab. The transfer set is train.tsv's examples, with --augment N up to N perturbed copies of each (Tang et al.
2019), plus, for single-sentence tasks, every --transfer_file (one sentence per line, blank lines between documents
allowed; .gz/.bz2; a Wikipedia .xml.bz2 dump). The teacher's logits are cached on disk (reused by a rerun, resumed
when interrupted). Writes output_dir/best/, eval_results.json (with the teacher's dev metrics) and
test_predictions.tsv, as run_classify.py does.

--intermediate_loss first distils the teacher's hidden states and attention scores layer by layer (TinyBERT) for
--intermediate_epochs, the teacher running live: it must then share the student's vocab and casing. --resume
continues an interrupted run after its last finished epoch.
"""
from __future__ import annotations

import argparse
import logging
import sys

from smallbert.errors import cli_main
from smallbert.finetune.config import DistillConfig
from smallbert.finetune.flags import add_common_flags, config_from_args
from smallbert.flags import HelpFormatter, add_compile_cache_flag, boolean


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = DistillConfig(data_dir="", init_checkpoint=None, output_dir="outputs")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_flags(parser, defaults)
    distill = parser.add_argument_group("distillation")
    add = distill.add_argument
    add("--teacher", required=True, help="fine-tuned classifier directory (run_classify.py best/ or Hugging Face)")
    add("--transfer_file", action="append", default=[], metavar="FILE",
        help="unlabelled text added to the transfer set (single-sentence tasks); repeat for several files")
    add("--augment", type=int, default=defaults.augment, metavar="N",
        help="add N perturbed copies of each train example to the transfer set, labelled by the teacher alone: "
             "words dropped or swapped, n-grams cut out (Tang et al. 2019) (default: %(default)s)")
    add("--temperature", type=float, default=defaults.temperature,
        help="softmax temperature T of the soft targets; the soft loss is scaled by T² (default: %(default)s)")
    add("--alpha", type=float, default=defaults.alpha,
        help="weight of the hard-label loss on labelled rows (default: %(default)s)")
    add("--intermediate_loss", type=boolean, nargs="?", const=True, default=defaults.intermediate_loss,
        metavar="{true,false}",
        help="first distil the teacher's hidden states and attention scores layer by layer (TinyBERT), with the "
             "teacher run live: it must share the student's vocab and casing (default: %(default)s)")
    add("--intermediate_epochs", type=int, default=defaults.intermediate_epochs,
        help="epochs of that layer stage before the --epochs of the logit stage (default: %(default)s)")
    add("--logits_cache", help="file for the teacher's transfer-set logits (default: CACHE_DIR/teacher-*.npz, "
                               "keyed by teacher, text and max length)")
    add_compile_cache_flag(parser, default=defaults.compile_cache)
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_args(DistillConfig, args, transfer_files=tuple(args.transfer_file))
    from smallbert.finetune.distill import run_distill  # imports MindSpore: after the flags are parsed

    run_distill(cfg)


if __name__ == "__main__":
    sys.exit(main())
