"""Fine-tunes a BERT checkpoint on a GLUE task or any labelled TSV (or, with --do_train false, evaluates a
fine-tuned one). SST-2 is the default task.

    python finetuningSST2/run_classify.py --data_dir GLUE/SST-2 --init_checkpoint runs/pretrain --output_dir out
    python finetuningSST2/run_classify.py --task_name mrpc --data_dir GLUE/MRPC --init_checkpoint runs/pretrain \\
        --output_dir out_mrpc
    python finetuningSST2/run_classify.py --task_name tsv --text_a_column text_a --label_column label \\
        --data_dir chnsenticorp --init_checkpoint bert-base-chinese --output_dir out_zh
    python finetuningSST2/run_classify.py --data_dir GLUE/SST-2 --init_checkpoint out/best --do_train false \\
        --output_dir out/eval

--init_checkpoint takes a run_pretrain.py output directory, a model directory (ours, or a Hugging Face BERT:
config.json + model.safetensors or pytorch_model.bin; the classifier head starts fresh) or, with --bert_config_file,
a weights file. Without it the model trains from scratch (a random initialisation fixed by the seed), from
--bert_config_file and --vocab_file alone. Writes output_dir/best/ (the best epoch, save_pretrained format, label
names in config.json's id2label), eval_results.json and test_predictions.tsv (GLUE's `index<TAB>prediction`, label
names); with several --seeds, output_dir/seed_<s>/ each plus the mean ± std. The seed project's flags (--bert_ckpt
--dataset_path --config --batch_size --test_batch_size) still work.
"""
from __future__ import annotations

import argparse
import logging
import sys

from smallbert.errors import cli_main
from smallbert.finetune.config import FinetuneConfig
from smallbert.finetune.flags import add_common_flags, config_from_args
from smallbert.flags import HelpFormatter, add_compile_cache_flag, boolean


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    defaults = FinetuneConfig(data_dir="", init_checkpoint=None, output_dir="outputs")
    add_common_flags(parser, defaults)
    parser.add_argument("--do_train", type=boolean, default=True, metavar="{true,false}",
                        help="false: only evaluate dev and predict test with a fine-tuned classifier (default: true)")
    add_compile_cache_flag(parser, default=defaults.compile_cache)
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_args(FinetuneConfig, args)
    from smallbert.finetune.loop import run  # imports MindSpore: after the flags are parsed

    run(cfg)


if __name__ == "__main__":
    sys.exit(main())
