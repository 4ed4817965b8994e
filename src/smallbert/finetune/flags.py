"""The flags run_classify.py and run_distill.py share, and the config built from them.

No MindSpore here: `--help` must answer at once, with every default shown.
"""
from __future__ import annotations

import argparse
import dataclasses

from ..config import DEVICES
from ..errors import SmallBertError
from ..flags import boolean
from .config import AMP_LEVELS, FinetuneConfig
from .tasks import TASK_NAMES, TASK_TYPES


def seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def name_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(","))


def add_common_flags(parser: argparse.ArgumentParser, defaults: FinetuneConfig) -> None:
    """Adds the task, model, data, optimisation, seed and output flags, with `defaults`' values shown in --help.

    The seed project's names stay as aliases: --dataset_path, --bert_ckpt, --config, --batch_size,
    --test_batch_size, --learning_rate, --num_train_epochs.
    """
    add = parser.add_argument
    task = parser.add_argument_group("task")
    task.add_argument("--task_name", default=defaults.task_name, choices=TASK_NAMES, type=str.lower,
                      help="a GLUE task (its files as GLUE distributes them), or tsv: any TSV with a header, "
                           "columns named by the three flags below (default: %(default)s)")
    task.add_argument("--text_a_column", default=defaults.text_a_column,
                      help="tsv: header name of the (first) text (default: %(default)s)")
    task.add_argument("--text_b_column", default=defaults.text_b_column,
                      help="tsv: header name of the second text of a pair (default: none, single sentences)")
    task.add_argument("--label_column", default=defaults.label_column,
                      help="tsv: header name of the label (default: %(default)s)")
    task.add_argument("--task_type", choices=TASK_TYPES,
                      help="tsv: classification or regression (default: classification; GLUE tasks know theirs)")
    task.add_argument("--labels", type=name_list, metavar="A,B,...",
                      help="label names in id order (default: the task's own; tsv: train's, first seen first, or "
                           "numeric order when all are integers; --do_train false: the checkpoint's id2label)")
    task.add_argument("--metric_for_best", metavar="METRIC",
                      help="dev metric that picks the best epoch and seed: accuracy, f1, mcc, pearson, spearman, "
                           "loss, or <dev split>_<metric> such as dev_mismatched_accuracy (default: the task's "
                           "first: sst-2 accuracy, cola mcc, mrpc/qqp f1, sts-b pearson, mnli dev_matched_accuracy)")
    add("--data_dir", "--dataset_path", required=True,
        help="the task's directory: train.tsv, dev.tsv (MNLI: dev_matched.tsv, dev_mismatched.tsv) and test.tsv "
             "(MNLI: test_matched.tsv, test_mismatched.tsv)")
    add("--output_dir", default=defaults.output_dir,
        help="where best/, eval_results.json and *_predictions.tsv go; must be new or empty (default: %(default)s)")
    add("--overwrite", action="store_true", help="clear a non-empty --output_dir first instead of refusing it")
    add("--resume", action="store_true",
        help="continue an interrupted run from the last epoch checkpoint in --output_dir (checkpoints/, per seed); "
             "the flags must be the run's own; without a checkpoint, start afresh")
    add("--init_checkpoint", "--bert_ckpt",
        help="run_pretrain.py output dir, model dir (ours or Hugging Face), or weights file with --bert_config_file "
             "(default: none, train from a seeded random initialisation of --bert_config_file with --vocab_file)")
    add("--bert_config_file", "--config", help="model config JSON (default: the checkpoint directory's config.json)")
    add("--vocab_file", help="WordPiece vocab.txt (default: the checkpoint directory's vocab.txt)")
    add("--adapt_vocab", action="store_true",
        help="allow a --vocab_file that is not the checkpoint's: shared tokens keep their embedding rows, new "
             "ones start as the mean of the old pieces that spell them (the model's vocab_size follows the vocab)")
    add("--do_lower_case", type=boolean, nargs="?", const=True, metavar="{true,false}",
        help="lower-case and strip accents: true for uncased models (default: the checkpoint's "
             "tokenizer_config.json, else true)")
    add("--max_length", type=int, default=defaults.max_length,
        help="tokens per example with [CLS] and [SEP]s; longer ones are truncated (default: %(default)s)")
    add("--pad_to_max_length", action="store_true",
        help="pad every batch to --max_length instead of to the smallest of 16, 32, 64, ... that fits")
    add("--train_batch_size", "--batch_size", type=int, default=defaults.train_batch_size,
        help="(default: %(default)s)")
    add("--eval_batch_size", "--test_batch_size", type=int, default=defaults.eval_batch_size,
        help="(default: %(default)s)")
    add("--lr", "--learning_rate", type=float, default=defaults.lr, help="peak learning rate (default: %(default)s)")
    add("--epochs", "--num_train_epochs", type=int, default=defaults.epochs, help="(default: %(default)s)")
    add("--warmup_proportion", type=float, default=defaults.warmup_proportion,
        help="fraction of the steps with linear warmup; linear decay to 0 after (default: %(default)s)")
    add("--weight_decay", type=float, default=defaults.weight_decay,
        help="AdamWeightDecay's decay, not on LayerNorm and biases (default: %(default)s)")
    add("--max_grad_norm", type=float, default=defaults.max_grad_norm,
        help="clip gradients to this global norm, <= 0: no clipping (default: %(default)s)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help=f"random seed (default: {defaults.seeds[0]})")
    seeds.add_argument("--seeds", type=seed_list, help="several seeds, e.g. 1,2,3,4,5: one run each, then mean ± std")
    add("--do_predict", type=boolean, default=defaults.do_predict, metavar="{true,false}",
        help="write the test files' predictions; needs test.tsv (default: %(default)s)")
    add("--cache_dir", help="where tokenized splits (and teacher logits) are cached (default: "
                            "$SMALLBERT_CACHE_DIR/finetune, else $XDG_CACHE_HOME/smallbert/finetune, else "
                            "~/.cache/smallbert/finetune)")
    add("--device_target", default=defaults.device_target, choices=DEVICES, help="(default: %(default)s)")
    add("--amp", default=defaults.amp, choices=AMP_LEVELS,
        help="O0: float32; O2: float16 matmuls with dynamic loss scaling (slower on CPU) (default: %(default)s)")


def config_from_args(cls: type[FinetuneConfig], args: argparse.Namespace, **values) -> FinetuneConfig:
    """`cls` with every field that has a flag of the same name taken from `args`, `values` overriding."""
    if args.seeds == ():
        raise SmallBertError("--seeds: give at least one integer")
    seeds = args.seeds or (args.seed if args.seed is not None else 1,)
    fields = {f.name for f in dataclasses.fields(cls)}
    taken = {name: value for name, value in vars(args).items() if name in fields}
    return cls(**{**taken, "seeds": seeds, **values})
