"""Fine-tunes a BERT checkpoint on GLUE SST-2 (or, with --do_train false, evaluates a fine-tuned one).

    python finetuningSST2/run_classify.py --data_dir GLUE/SST-2 --init_checkpoint runs/pretrain --output_dir out
    python finetuningSST2/run_classify.py --data_dir GLUE/SST-2 --init_checkpoint out/best --do_train false \\
        --output_dir out/eval

--init_checkpoint takes a run_pretrain.py output directory, a model directory (ours, or a Hugging Face BERT:
config.json + model.safetensors or pytorch_model.bin; the classifier head starts fresh) or, with --bert_config_file,
a weights file. Without it the model trains from scratch (a random initialisation fixed by the seed), from
--bert_config_file and --vocab_file alone. Writes output_dir/best/ (the best epoch, save_pretrained format),
eval_results.json and test_predictions.tsv (GLUE's `index<TAB>prediction`); with several --seeds,
output_dir/seed_<s>/ each plus the mean ± std. The seed project's flags (--bert_ckpt --dataset_path --config --batch_size --test_batch_size) still work.
"""
from __future__ import annotations

import argparse
import logging
import sys

from smallbert.errors import SmallBertError, cli_main
from smallbert.finetune import FinetuneConfig, run


def boolean(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = FinetuneConfig(data_dir="", init_checkpoint=None, output_dir="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data_dir", "--dataset_path", required=True,
        help="GLUE's SST-2 directory: train.tsv and dev.tsv (sentence<TAB>label), test.tsv (index<TAB>sentence)")
    add("--init_checkpoint", "--bert_ckpt",
        help="run_pretrain.py output dir, model dir (ours or Hugging Face), or weights file with --bert_config_file "
             "(default: none, train from a seeded random initialisation of --bert_config_file with --vocab_file)")
    add("--output_dir", default="outputs", help="where best/, eval_results.json and test_predictions.tsv go "
                                                 "(default: %(default)s)")
    add("--bert_config_file", "--config", help="model config JSON (default: the checkpoint directory's config.json)")
    add("--vocab_file", help="WordPiece vocab.txt (default: the checkpoint directory's vocab.txt)")
    add("--do_lower_case", type=boolean, nargs="?", const=True, metavar="{true,false}",
        help="lower-case and strip accents: true for uncased models (default: the checkpoint's "
             "tokenizer_config.json, else true)")
    add("--max_length", type=int, default=defaults.max_length,
        help="tokens per sentence with [CLS] and [SEP]; longer ones are truncated (default: %(default)s)")
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
    seeds.add_argument("--seed", type=int, help="random seed (default: 1)")
    seeds.add_argument("--seeds", type=seed_list, help="several seeds, e.g. 1,2,3,4,5: one run each, then mean ± std")
    add("--do_train", type=boolean, default=True, metavar="{true,false}",
        help="false: only evaluate dev and predict test with a fine-tuned classifier (default: true)")
    add("--do_predict", type=boolean, default=True, metavar="{true,false}",
        help="write test_predictions.tsv; needs test.tsv (default: true)")
    add("--cache_dir", help="where the tokenized splits are cached (default: DATA_DIR/cache)")
    add("--device_target", default=defaults.device_target, choices=("CPU", "GPU", "Ascend"),
        help="(default: %(default)s)")
    add("--amp", default=defaults.amp, choices=("O0", "O2"),
        help="O0: float32; O2: float16 matmuls with dynamic loss scaling (slower on CPU) (default: %(default)s)")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.seeds == ():
        raise SmallBertError("--seeds: give at least one integer")
    cfg = FinetuneConfig(
        data_dir=args.data_dir, init_checkpoint=args.init_checkpoint, output_dir=args.output_dir,
        vocab_file=args.vocab_file, bert_config_file=args.bert_config_file, do_lower_case=args.do_lower_case,
        max_length=args.max_length, train_batch_size=args.train_batch_size, eval_batch_size=args.eval_batch_size,
        lr=args.lr, epochs=args.epochs, warmup_proportion=args.warmup_proportion, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm, seeds=args.seeds or (args.seed if args.seed is not None else 1,),
        do_train=args.do_train, do_predict=args.do_predict, amp=args.amp, pad_to_max_length=args.pad_to_max_length,
        cache_dir=args.cache_dir, device_target=args.device_target)
    run(cfg)


if __name__ == "__main__":
    sys.exit(main())
