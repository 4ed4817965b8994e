#!/usr/bin/env python
"""What the live teacher of `run_distill.py --intermediate_loss` costs per step, against a logit-stage step.

    python bench/layer_distill_cost.py --teacher MODEL_DIR --student config/bert_L4_H256.json --seq_length 64

MODEL_DIR: the teacher, any model directory we read (e.g. all-MiniLM-L6-v2; its classifier head, if it has none,
is random: the cost does not depend on it). The student config takes the teacher's vocab_size (the stage needs the
teacher's vocab). Times, after 3 warmup steps that include the compile, `--steps` train steps of each kind on
random full-length batches: the logit stage (`DistillationLoss`, teacher logits as an input) and the layer stage
(`LayerDistillationLoss`, the teacher's forward pass inside the step), plus the teacher's forward pass alone.
Prints CPU time (`time.process_time`, all threads) and wall time per step, mean ± std over `--repeats`.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import mindspore as ms
import numpy as np

from smallbert import BertConfig, BertForSequenceClassification
from smallbert.finetune.distill import DistillationLoss
from smallbert.finetune.layers import LayerDistillationLoss
from smallbert.optim import WarmupPolynomialDecay, build_optimizer
from smallbert.train import TrainStep


def timed(fn, steps: int, repeats: int) -> tuple[list[float], list[float]]:
    """(CPU seconds per call, wall seconds per call) of each repeat of `steps` calls, after 3 warmup calls."""
    for _ in range(3):
        fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        for _ in range(steps):
            fn()
        cpu.append((time.process_time() - c) / steps)
        wall.append((time.perf_counter() - w) / steps)
    return cpu, wall


def show(name: str, cpu: list[float], wall: list[float]) -> None:
    print(f"{name:<28} cpu {1e3 * statistics.mean(cpu):7.1f} ± {1e3 * statistics.stdev(cpu):5.1f} ms   "
          f"wall {1e3 * statistics.mean(wall):7.1f} ± {1e3 * statistics.stdev(wall):5.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True, help="student config JSON")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ms.set_device("CPU")
    ms.set_seed(0)
    teacher = BertForSequenceClassification.from_pretrained(args.teacher, num_labels=2)
    teacher.set_train(False)
    config = dataclasses.replace(BertConfig.from_json_file(args.student), vocab_size=teacher.config.vocab_size)
    rng = np.random.default_rng(0)
    b, s = args.batch_size, args.seq_length
    batch = (ms.Tensor(rng.integers(5, config.vocab_size, (b, s), dtype=np.int32)),
             ms.Tensor(np.zeros((b, s), np.int32)), ms.Tensor(np.ones((b, s), np.int32)))
    labels, logits = ms.Tensor(rng.integers(0, 2, b, dtype=np.int32)), ms.Tensor(rng.normal(size=(b, 2)), ms.float32)

    def train_step(net, parameters):
        optimizer = build_optimizer("adamw", parameters, WarmupPolynomialDecay(1e-4, 0, 10 ** 6), weight_decay=0.01)
        return TrainStep(net, optimizer)

    student = BertForSequenceClassification(config)
    student.set_train(True)
    logit_step = train_step(DistillationLoss(student, 2.0, 0.0), student.trainable_params())
    show("logit stage step", *timed(lambda: logit_step.step(*batch, labels, logits), args.steps, args.repeats))
    forward = ms.jit(teacher.construct)
    show("teacher forward", *timed(lambda: forward(*batch).asnumpy(), args.steps, args.repeats))
    net = LayerDistillationLoss(student, teacher)
    layer_step = train_step(net, net.stage_parameters())
    print(f"layer map {net.layers}, attention loss {'on' if net.match_attention else 'off (head counts differ)'}")
    show("layer stage step", *timed(lambda: layer_step.step(*batch), args.steps, args.repeats))


if __name__ == "__main__":
    main()
