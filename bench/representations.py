#!/usr/bin/env python
"""How distinct are a checkpoint's sentence representations? A collapse check for short pretraining runs.

    python bench/representations.py --data_dir GLUE/SST-2 --vocab_file vocab.txt \
        --random config/bert_L2_H128.json runs/pt_l2/checkpoints/step_1000 runs/pt_l2/final

For each model (a random initialisation of --random's config, seed 1, then each checkpoint) it encodes the first
--sentences dev sentences and prints, over them:
  cls_spread     the share of the last layer's [CLS] vectors' energy that varies between sentences,
                 mean ||x - mean(x)||² / mean ||x||² (0: every sentence gets the same vector)
  pooled_spread  the same for the pooler's tanh output, which the classifier reads
  saturated      fraction of pooler units with |tanh| > 0.99 (their gradient is ~0)
  eff_rank       effective rank (exp of the entropy of the normalised singular values) of the mean-pooled token
                 vectors, centred: how many directions the sentences actually spread over
A model early in MLM training that predicts the unigram distribution has no use for its input, and these show it.
"""
from __future__ import annotations

import argparse
import os
import sys

import mindspore as ms
import numpy as np

from smallbert.config import BertConfig
from smallbert.errors import cli_main
from smallbert.finetune import get_task, read_split
from smallbert.model import BertModel
from smallbert.tokenization import FullTokenizer


def encode(tokenizer: FullTokenizer, sentences: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] s [SEP], truncated and padded: returns input_ids and attention_mask, int32 [N, max_length]."""
    ids = np.zeros((len(sentences), max_length), np.int32)
    for row, sentence in enumerate(sentences):
        tokens = ["[CLS]", *tokenizer.tokenize(sentence)[:max_length - 2], "[SEP]"]
        ids[row, :len(tokens)] = tokenizer.convert_tokens_to_ids(tokens)
    return ids, (ids != 0).astype(np.int32)


def spread(x: np.ndarray) -> float:
    """x float [N, H] → mean squared distance of the rows from their mean over their mean squared norm."""
    return float(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean() / max((x ** 2).sum(axis=1).mean(), 1e-12))


def effective_rank(x: np.ndarray) -> float:
    """x float [N, H] → exp(entropy of the singular values of the centred x, normalised to sum 1)."""
    singular = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    p = singular / singular.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def statistics(model: BertModel, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, float]:
    """The four measures of the docstring for one model in eval mode."""
    model.set_train(False)
    sequence, pooled = model(ms.Tensor(input_ids), ms.Tensor(np.zeros_like(input_ids)), ms.Tensor(attention_mask))
    sequence, pooled = sequence.asnumpy(), pooled.asnumpy()
    mask = attention_mask[..., None].astype(np.float32)
    mean_tokens = (sequence * mask).sum(axis=1) / mask.sum(axis=1)
    return {"cls_spread": spread(sequence[:, 0]), "pooled_spread": spread(pooled),
            "saturated": float((np.abs(pooled) > 0.99).mean()), "eff_rank": effective_rank(mean_tokens)}


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", help="model directories (config.json + weights)")
    parser.add_argument("--data_dir", required=True, help="SST-2 directory; its dev.tsv supplies the sentences")
    parser.add_argument("--vocab_file", required=True)
    parser.add_argument("--random", metavar="CONFIG", help="also measure a random initialisation of this config")
    parser.add_argument("--sentences", type=int, default=512, help="(default: %(default)s)")
    parser.add_argument("--max_length", type=int, default=64, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    ms.set_device("CPU")
    sentences = read_split(get_task("sst-2"), args.data_dir, "dev").text_a[:args.sentences]
    input_ids, attention_mask = encode(FullTokenizer(args.vocab_file, do_lower_case=True), sentences,
                                       args.max_length)
    models = []
    if args.random:
        ms.set_seed(1)
        models.append((f"random {os.path.basename(args.random)}", BertModel(BertConfig.from_json_file(args.random))))
    models += [(path, BertModel.from_pretrained(path)) for path in args.checkpoints]
    print(f"{'model':60s} cls_spread pooled_spread saturated eff_rank")
    for name, model in models:
        s = statistics(model, input_ids, attention_mask)
        print(f"{name[-60:]:60s} {s['cls_spread']:10.4f} {s['pooled_spread']:13.4f} {s['saturated']:9.3f} "
              f"{s['eff_rank']:8.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
