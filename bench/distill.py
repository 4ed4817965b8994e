#!/usr/bin/env python
"""The compact-model recipe on real SST-2: labels only vs distilled, per student size and initialisation.

    python bench/distill.py --data_dir GLUE/SST-2 --teacher runs/minilm_sst2/best \
        --students config/bert_L2_H128.json,config/bert_L4_H256.json --seeds 1,2,3
    python bench/distill.py ... --pretrained bert_L2_H128=runs/pt_l2/final      # adds the "pretrained" row
    python bench/distill.py ... --labelled_rows 1000    # few labels: the rest of train becomes unlabelled text
    python bench/distill.py ... --augment 4    # distillation cells add 4 perturbed copies of each train sentence

Each cell of the table is one run of the suite's own entry points, in a child process, over --seeds:
  labels          finetuningSST2/run_classify.py on train.tsv's labels (the from-scratch or pretrained baseline)
  logits          finetuningSST2/run_distill.py: the teacher's softened logits on the transfer set (alpha 0)
  layers          run_distill.py --intermediate_loss: TinyBERT-style layer distillation, then the logit stage
  logits+labels   run_classify.py started from the `logits` cell's best/ student (its best seed)
A cell reports the best dev accuracy over epochs, mean ± std over seeds, and the CPU time (user + system) of its
child process, which holds tokenization, graph compilation, training and evaluation; the teacher's logits are
computed by the first distillation cell and cached, so that cell carries their cost, reported separately.

With --labelled_rows N, train.tsv is cut to N random rows (seed 0) and the other rows' sentences become a
--transfer_file: labels-only sees N labels, distillation sees N labels plus the teacher's view of all of train.

Google's published GLUE test figures for the same sizes pretrained on BooksCorpus + Wikipedia and fine-tuned
(no distillation): BERT-Tiny (L2-H128) 83.2, BERT-Mini (L4-H256) 85.9 on SST-2.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys

from smallbert.errors import SmallBertError, cli_main
from smallbert.fileio import write_json

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("labels", "logits", "layers", "logits+labels")
GOOGLE_SST2 = {"bert_L2_H128": 83.2, "bert_L4_H256": 85.9}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="GLUE's SST-2 directory (train.tsv, dev.tsv)")
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher (run_classify.py best/ or HF)")
    parser.add_argument("--students", default="config/bert_L2_H128.json,config/bert_L4_H256.json",
                        help="comma-separated student configs (default: %(default)s)")
    parser.add_argument("--vocab_file", help="the students' vocab (default: the teacher's vocab.txt)")
    parser.add_argument("--pretrained", action="append", default=[], metavar="CONFIG_NAME=DIR",
                        help="a pretrained init for a student config, e.g. bert_L2_H128=runs/pt/final; repeatable")
    parser.add_argument("--inits", default="random,pretrained",
                        help="rows to run: random, and pretrained where --pretrained names one (default: %(default)s)")
    parser.add_argument("--methods", default="labels,logits,logits+labels",
                        help=f"comma-separated, of {', '.join(METHODS)} (default: %(default)s)")
    parser.add_argument("--seeds", default="1,2,3", help="(default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=5e-4, help="students' peak learning rate (default: %(default)s)")
    parser.add_argument("--finetune_lr", type=float, default=1e-4,
                        help="learning rate of the logits+labels stage (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=2.0, help="(default: %(default)s)")
    parser.add_argument("--train_batch_size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--max_length", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--augment", type=int, default=0,
                        help="run_distill.py --augment: perturbed copies of each train example in the transfer set "
                             "(default: %(default)s)")
    parser.add_argument("--labelled_rows", type=int, help="keep this many labelled train rows (few-label setting)")
    parser.add_argument("--output_dir", default="bench_out/distill", help="(default: %(default)s)")
    return parser.parse_args(argv)


def few_label_split(data_dir: str, rows: int, work: str) -> tuple[str, str]:
    """Writes work/data/{train,dev}.tsv with `rows` random train rows (seed 0) and work/unlabelled.txt with the
    other rows' sentences; returns (data directory, transfer file)."""
    with open(os.path.join(data_dir, "train.tsv"), encoding="utf-8") as f:
        header, *lines = f.read().splitlines()
    if rows >= len(lines):
        raise SmallBertError(f"--labelled_rows: {rows} is not fewer than train.tsv's {len(lines)} rows")
    random.Random(0).shuffle(lines)
    column = header.split("\t").index("sentence")
    out = os.path.join(work, "data")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "train.tsv"), "w", encoding="utf-8") as f:
        f.write("\n".join([header, *lines[:rows]]) + "\n")
    with open(os.path.join(data_dir, "dev.tsv"), encoding="utf-8") as src, \
            open(os.path.join(out, "dev.tsv"), "w", encoding="utf-8") as dst:
        dst.write(src.read())
    transfer = os.path.join(work, "unlabelled.txt")
    with open(transfer, "w", encoding="utf-8") as f:
        f.write("\n".join(line.split("\t")[column] for line in lines[rows:]) + "\n")
    return out, transfer


def run_cell(command: list[str], out: str) -> float:
    """Runs one entry point to completion with its output in out.log; records and returns its CPU seconds
    (user + sys) in out.cpu.json."""
    log_path = out + ".log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(log_path))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code:
        raise SmallBertError(f"{' '.join(command[:2])} failed (exit {code}); see {log_path}")
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    write_json(out + ".cpu.json", {"command": command, "cpu_seconds": cpu_seconds})
    return cpu_seconds


def finished_cpu_seconds(out: str, command: list[str]) -> float | None:
    """The CPU seconds of an earlier run of exactly this command into out, if it finished; else None.

    A rerun of the bench with the same flags thus skips finished cells and redoes unfinished ones."""
    try:
        with open(out + ".cpu.json", encoding="utf-8") as f:
            done = json.load(f)
    except FileNotFoundError:
        return None
    finished = done["command"] == command and os.path.exists(os.path.join(out, "eval_results.json"))
    return done["cpu_seconds"] if finished else None


def summarize(cell_dir: str, cpu_seconds: float) -> dict:
    """Reads a finished cell's eval_results.json into {accuracies, mean, std, cpu_seconds, best_checkpoint}."""
    with open(os.path.join(cell_dir, "eval_results.json"), encoding="utf-8") as f:
        results = json.load(f)
    accuracies = [100 * seed["best_dev_accuracy"] for seed in results["seeds"]]
    return {"accuracies": accuracies, "mean": statistics.mean(accuracies),
            "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0, "cpu_seconds": cpu_seconds,
            "best_checkpoint": results["best_checkpoint"],
            "teacher_dev_accuracy": results.get("teacher_dev_accuracy")}


def cell_command(method: str, init: str, student: str, args, data_dir: str, transfer: str | None,
                 out: str, previous: dict) -> list[str]:
    """The entry-point command of one (method, init) cell for one student config."""
    vocab = args.vocab_file or os.path.join(args.teacher, "vocab.txt")
    start = (["--init_checkpoint", init] if init != "random" else ["--bert_config_file", student]) + [
        "--vocab_file", vocab]
    def common(lr: float) -> list[str]:
        return ["--data_dir", data_dir, "--output_dir", out, "--seeds", args.seeds, "--epochs", str(args.epochs),
                "--lr", str(lr), "--train_batch_size", str(args.train_batch_size),
                "--max_length", str(args.max_length), "--do_predict", "false", "--overwrite"]

    classify = [sys.executable, os.path.join(HERE, "finetuningSST2", "run_classify.py")]
    distill = [sys.executable, os.path.join(HERE, "finetuningSST2", "run_distill.py"), "--teacher", args.teacher,
               "--temperature", str(args.temperature), "--alpha", "0", "--augment", str(args.augment)]
    distill += ["--transfer_file", transfer] if transfer else []
    if method == "labels":
        return classify + start + common(args.lr)
    if method == "logits":
        return distill + start + common(args.lr)
    if method == "layers":
        return distill + ["--intermediate_loss"] + start + common(args.lr)
    if "logits" not in previous:
        raise SmallBertError("--methods: logits+labels needs the logits cell before it")
    return classify + ["--init_checkpoint", previous["logits"]["best_checkpoint"]] + common(args.finetune_lr)


def markdown(table: dict, args, teacher_accuracy: float | None) -> str:
    """The results as a markdown table: a row per (student, init), a column per method."""
    methods = args.methods.split(",")
    lines = [f"teacher dev accuracy: {teacher_accuracy:.2f}" if teacher_accuracy else "",
             "| student | init | " + " | ".join(methods) + " | Google (pretrained + fine-tuned, test) |",
             "|---|---|" + "---|" * len(methods) + "---|"]
    for (student, init), cells in table.items():
        values = [f"{cells[m]['mean']:.2f} ± {cells[m]['std']:.2f} ({cells[m]['cpu_seconds'] / 60:.0f} CPU min)"
                  if m in cells else "" for m in methods]
        lines.append(f"| {student} | {init} | " + " | ".join(values) + f" | {GOOGLE_SST2.get(student, '')} |")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        raise SmallBertError(f"--methods: unknown {', '.join(sorted(unknown))} (choose from {', '.join(METHODS)})")
    if set(args.inits.split(",")) - {"random", "pretrained"}:
        raise SmallBertError(f"--inits: {args.inits!r} is not a list of random, pretrained")
    pretrained = dict(item.split("=", 1) for item in args.pretrained)
    work = os.path.abspath(args.output_dir)
    os.makedirs(work, exist_ok=True)
    data_dir, transfer = os.path.abspath(args.data_dir), None
    if args.labelled_rows:
        data_dir, transfer = few_label_split(data_dir, args.labelled_rows, work)
    summary_path = os.path.join(work, "distill_bench.json")
    table: dict[tuple[str, str], dict] = {}
    teacher_accuracy = None
    for student in args.students.split(","):
        name = os.path.splitext(os.path.basename(student))[0]
        rows = {"random": "random", "pretrained": pretrained.get(name)}
        for row in args.inits.split(","):
            init = rows[row]
            if init is None:
                continue
            cells: dict[str, dict] = {}
            for method in args.methods.split(","):
                out = os.path.join(work, f"{name}-{row}-{method}")
                command = cell_command(method, init, os.path.abspath(student), args, data_dir, transfer, out, cells)
                print(f"[{name} {row} {method}] {' '.join(command)}", flush=True)
                cells[method] = summarize(out, finished_cpu_seconds(out, command)
                                          or run_cell(command, out))
                teacher_accuracy = teacher_accuracy or cells[method]["teacher_dev_accuracy"]
                print(f"[{name} {row} {method}] dev accuracy {cells[method]['mean']:.2f} ± "
                      f"{cells[method]['std']:.2f} over seeds {args.seeds}, "
                      f"{cells[method]['cpu_seconds']:.0f} CPU s", flush=True)
                table[(name, row)] = cells
                write_json(summary_path, {"hparams": vars(args),
                                          "cells": {f"{k[0]} {k[1]}": v for k, v in table.items()}})
    print(markdown(table, args, teacher_accuracy and 100 * teacher_accuracy))


if __name__ == "__main__":
    sys.exit(main())
