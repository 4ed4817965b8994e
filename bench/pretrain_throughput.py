#!/usr/bin/env python
"""Pretraining step throughput and memory: our graph-mode TrainStep vs transformers' BertForPreTraining.

    python bench/pretrain_throughput.py --config config/bert_L4_H256.json --batch_size 32 --seq_length 128 --steps 10

Both sides run the same model config, batch, sequence length, masked positions, thread count and step: forward,
MLM + NSP loss, backward, clip to global norm 1.0, AdamW update. PyTorch runs eager, and with the loss forward under
`torch.compile` (its backward compiled with it through AOTAutograd; clipping and AdamW stay eager), with the MLM head
applied to the gathered masked positions, as ours does (not the stock `labels=` path that scores every position).

Each framework lives in its own worker process (so peak RSS is its own); the parent alternates single steps
between them, so load from other processes on the machine hits all alike. PyTorch runs both as installed and with
OMP_WAIT_POLICY=PASSIVE (its spinning OpenMP threads collapse on a busy machine); the throughput ratio is against
the faster of the two. Prints median seconds per step, sequences/s, the ratio, peak RSS and its ratio, the
first-step (compile) time, and achieved GFLOP/s against the machine's sgemm peak: torch.mm on 2048³, sampled in
turn with the steps (the median of those samples).

The MindSpore worker times each step's launch (numpy batch to Tensors and graph dispatch: the framework's host
overhead per step) apart from the wait for its result. With --window N each timed sample is N steps (the first
sample, compile included, is reported as the first step), and a second MindSpore worker runs them as run_pretrain
does between log points off CPU: all N launched, then read. It prints the speed ratio of the two:

    python bench/pretrain_throughput.py --config config/bert_L2_H128.json --batch_size 8 --window 20 --no_compile

`--baseline_src DIR` adds a MindSpore worker importing smallbert from another checkout's src/ (e.g. a git worktree
of an earlier commit) and prints our speed and memory against it, alternating in the same run:

    git worktree add --detach /tmp/before HEAD~1
    python bench/pretrain_throughput.py --baseline_src /tmp/before/src --no_compile

`--accumulation_steps K` makes every step one update over K micro-batches of --batch_size: TrainStep's accumulation
for ours, K forward/backward passes into the same .grad for torch:

    python bench/pretrain_throughput.py --accumulation_steps 2 --baseline_src /tmp/before/src --no_compile

`--device_target GPU|Ascend` runs the MindSpore workers there (the torch workers, CPU builds, are left out): with
--window it shows whether queueing steps pays on that device, which is what `device.queues_steps` assumes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_batch(vocab_size: int, batch_size: int, seq_length: int, predictions: int, seed: int = 0):
    """A pretraining batch (Google's column order) of random ids, full-length sequences."""
    rng = np.random.default_rng(seed)
    positions = np.stack([np.sort(rng.choice(np.arange(1, seq_length), predictions, replace=False))
                          for _ in range(batch_size)]).astype(np.int32)
    segment_ids = np.zeros((batch_size, seq_length), np.int32)
    segment_ids[:, seq_length // 2:] = 1
    return (rng.integers(5, vocab_size, (batch_size, seq_length)).astype(np.int32),
            np.ones((batch_size, seq_length), np.int32), segment_ids, positions,
            rng.integers(5, vocab_size, (batch_size, predictions)).astype(np.int32),
            np.ones((batch_size, predictions), np.float32),
            rng.integers(0, 2, (batch_size, 1)).astype(np.int32))


def train_flops(config, batch_size: int, seq_length: int, predictions: int) -> float:
    """Matmul FLOPs of one train step: 3 × forward (backward costs two forwards)."""
    h, i, v, layers = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    tokens = batch_size * seq_length
    per_layer = 2 * tokens * (4 * h * h + 2 * h * i) + 2 * 2 * batch_size * seq_length * seq_length * h
    heads = 2 * batch_size * predictions * (h * h + h * v) + 2 * batch_size * (h * h + 2 * h)
    return 3.0 * (layers * per_layer + heads)


def mindspore_worker(args, config, batch):
    import mindspore as ms

    from smallbert import BertForPreTraining
    from smallbert.optim import build_optimizer
    from smallbert.train import TrainStep
    try:
        from smallbert.pretrain import BertPreTrainingWithLoss
    except ModuleNotFoundError:  # a --baseline_src checkout from before smallbert.pretrain split out of train
        from smallbert.train import BertPreTrainingWithLoss

    ms.set_device(args.device_target)
    ms.set_seed(0)
    model = BertForPreTraining(config)
    model.set_train(True)
    net = BertPreTrainingWithLoss(model)
    step = TrainStep(net, build_optimizer("adamw", net.trainable_params(), 1e-4), max_grad_norm=1.0,
                     accumulation_steps=args.accumulation_steps)
    queue = args.worker == "mindspore_async"  # launch the window's steps, then read them (run_pretrain off CPU)

    def window():
        pending = []
        for _ in range(args.window):
            start = time.perf_counter()
            pending.append(step.launch(*batch))  # numpy in, as the loop's batches come: conversion is framework cost
            LAUNCH_SECONDS.append(time.perf_counter() - start)
            if not queue:
                pending[-1].read()
        return [p.read() for p in pending][-1].loss

    return window


def torch_worker(args, config, batch):
    # torch is imported here only: in the MindSpore worker its libraries would count against our peak RSS.
    import torch
    import transformers

    torch.set_num_threads(args.threads)  # MindSpore uses its own thread pool
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(**config.to_hf_dict()))
    model.train()
    no_decay = [p for n, p in model.named_parameters() if "LayerNorm" in n or n.endswith("bias")]
    decay = [p for n, p in model.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-4, eps=1e-6)
    columns = [torch.from_numpy(x).long() if x.dtype == np.int32 else torch.from_numpy(x) for x in batch]
    k = args.accumulation_steps
    micro_batches = [[c.chunk(k)[i] for c in columns] for i in range(k)]

    def forward(input_ids, input_mask, segment_ids, positions, masked_ids, weights, nsp_labels):
        sequence_output, pooled = model.bert(input_ids, attention_mask=input_mask, token_type_ids=segment_ids,
                                             return_dict=False)[:2]
        gathered = torch.gather(sequence_output, 1, positions.unsqueeze(-1).expand(-1, -1, config.hidden_size))
        mlm_logits = model.cls.predictions(gathered)
        nll = torch.nn.functional.cross_entropy(mlm_logits.flatten(0, 1), masked_ids.flatten(), reduction="none")
        mlm_loss = (nll * weights.flatten()).sum() / (weights.sum() + 1e-5)
        nsp_loss = torch.nn.functional.cross_entropy(model.cls.seq_relationship(pooled), nsp_labels.flatten())
        return mlm_loss + nsp_loss

    if args.worker == "torch_compile":
        forward = torch.compile(forward)  # forward and, through AOTAutograd, its backward; clip and AdamW eager

    def step():
        optimizer.zero_grad(set_to_none=True)
        for micro in micro_batches:
            loss = forward(*micro)
            (loss / k).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return lambda: [step() for _ in range(args.window)][-1]


def sgemm_worker(args, config, batch):
    """The machine's sgemm peak: each sample is the best of three 2048³ float32 torch.mm on `args.threads` threads,
    taken between the frameworks' steps, so the peak is measured under the same load and clock as they are."""
    import torch

    torch.set_num_threads(args.threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    return lambda: 2 * 2048 ** 3 / min(_timed(lambda: torch.mm(a, b)) for _ in range(3)) / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


LAUNCH_SECONDS: list[float] = []  # host time of each `TrainStep.launch` in the current sample (async worker)


def run_worker(args) -> None:
    """Builds one framework's step, reports its first-step time, then runs one step per 'step' line on stdin."""
    from smallbert import BertConfig

    config = BertConfig.from_json_file(args.config)
    batch = make_batch(config.vocab_size, args.batch_size * args.accumulation_steps, args.seq_length,
                       args.predictions)
    build = {"sgemm": sgemm_worker}.get(args.worker) or (mindspore_worker if args.worker.startswith("mindspore")
                                                         else torch_worker)
    step = build(args, config, batch)
    first = _timed(step)
    reply = {"first_step_s": first}
    print(json.dumps(reply), flush=True)
    for line in sys.stdin:
        if line.strip() == "step":
            LAUNCH_SECONDS.clear()
            start = time.perf_counter()
            result = step()  # a step's loss; the sgemm worker's GFLOP/s
            seconds = (time.perf_counter() - start) / args.window
            launch = sum(LAUNCH_SECONDS) / args.window if LAUNCH_SECONDS else None
            print(json.dumps({"s": seconds, "launch_s": launch, "result": result}), flush=True)
        else:
            break
    print(json.dumps({"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(ROOT, "config", "bert_L4_H256.json"))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20, help="masked positions per sequence")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per framework, after the first")
    parser.add_argument("--accumulation_steps", type=int, default=1,
                        help="micro-batches of --batch_size per step (one update)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile worker")
    parser.add_argument("--device_target", choices=("CPU", "GPU", "Ascend"), default="CPU",
                        help="where the MindSpore workers run; off CPU the torch workers (CPU builds) are left out")
    parser.add_argument("--window", type=int, default=1,
                        help="steps per timed sample; above 1 adds a MindSpore worker that launches the window's "
                             "steps before reading any (run_pretrain's loop) beside one that reads every step")
    parser.add_argument("--baseline_src", help="another checkout's src/ directory: adds a MindSpore worker running "
                                               "its smallbert, to compare versions in one run")
    parser.add_argument("--worker", choices=("mindspore", "mindspore_async", "torch", "torch_compile", "sgemm"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    from smallbert import BertConfig

    config = BertConfig.from_json_file(args.config)
    command = [sys.executable, os.path.abspath(__file__), "--config", args.config, "--batch_size",
               str(args.batch_size), "--seq_length", str(args.seq_length), "--predictions", str(args.predictions),
               "--threads", str(args.threads), "--window", str(args.window), "--device_target", args.device_target,
               "--accumulation_steps", str(args.accumulation_steps), "--worker"]
    # PyTorch runs twice: as installed, and with OpenMP's passive wait. On a loaded machine the default spinning
    # threads can make torch several times slower; the ratio is taken against the faster of the two.
    runs = {"mindspore": ("mindspore", {})}
    if args.baseline_src:
        path = os.path.abspath(args.baseline_src)
        if not os.path.isfile(os.path.join(path, "smallbert", "__init__.py")):
            parser.error(f"--baseline_src {args.baseline_src}: no smallbert package there")
        runs["mindspore (baseline)"] = ("mindspore", {"PYTHONPATH": os.pathsep.join(
            [path] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])})
    if args.window > 1:
        runs["mindspore (async)"] = ("mindspore_async", {})
    on_cpu = args.device_target == "CPU"  # the torch workers are CPU ones: compared on CPU only
    if on_cpu:
        runs.update({"torch": ("torch", {}), "torch (OMP passive)": ("torch", {"OMP_WAIT_POLICY": "PASSIVE"})})
    if on_cpu and not args.no_compile:
        runs["torch.compile"] = ("torch_compile", {})
    if on_cpu:  # not a framework: samples the machine's sgemm peak between their steps
        runs["sgemm"] = ("sgemm", {})
    workers, first = {}, {}
    for name, (worker, env) in runs.items():  # one at a time, so compile and warm-up do not overlap
        workers[name] = subprocess.Popen(command + [worker], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, env={**os.environ, **env})
        first[name] = json.loads(workers[name].stdout.readline())["first_step_s"]
    times = {name: [] for name in runs}
    launches = {name: [] for name in runs}
    sgemm_samples = []
    for _ in range(args.steps):
        for name, worker in workers.items():
            worker.stdin.write("step\n")
            worker.stdin.flush()
            reply = json.loads(worker.stdout.readline())
            times[name].append(reply["s"])
            if name == "sgemm":
                sgemm_samples.append(reply["result"])
            if reply["launch_s"] is not None:
                launches[name].append(reply["launch_s"])
    rss = {}
    for name, worker in workers.items():
        worker.stdin.write("exit\n")
        worker.stdin.flush()
        rss[name] = json.loads(worker.stdout.readline())["peak_rss_gb"]
        worker.wait()
    runs.pop("sgemm", None)
    peak = statistics.median(sgemm_samples) if sgemm_samples else None
    sequences = args.batch_size * args.accumulation_steps  # per step
    flops = train_flops(config, sequences, args.seq_length, args.predictions)

    print(f"config {os.path.basename(args.config)}, batch {args.batch_size} x {args.accumulation_steps} "
          f"micro-batch(es), seq {args.seq_length}, "
          f"{args.predictions} predictions, {args.device_target}, {args.threads} threads, {args.steps} alternating "
          f"samples of {args.window} step(s) each, load average {os.getloadavg()[0]:.1f}")
    print(f"one train step = {flops / 1e9:.1f} GFLOP"
          + (f"; sgemm peak (torch.mm 2048³, median of samples between the steps): {peak:.1f} GFLOP/s "
             f"(range {min(sgemm_samples):.1f}-{max(sgemm_samples):.1f})" if peak else ""))
    median = {name: statistics.median(times[name]) for name in runs}
    for name in runs:
        gflops = flops / median[name] / 1e9
        print(f"{name:19s}  first step {first[name]:5.1f} s | median {median[name]:.3f} s/step "
              f"(min {min(times[name]):.3f}) | {sequences / median[name]:6.1f} seq/s | {gflops:6.1f} GFLOP/s"
              + (f" ({gflops / peak:.0%} of peak)" if peak else "") + f" | peak host RSS {rss[name]:.2f} GB")
    if on_cpu:
        torch_best = min(median["torch"], median["torch (OMP passive)"])
        print(f"throughput ratio mindspore/torch (faster torch setting): {torch_best / median['mindspore']:.2f}x; "
              f"memory ratio mindspore/torch: {rss['mindspore'] / rss['torch']:.2f}x")
    launch = {name: statistics.median(values) for name, values in launches.items() if values}
    if args.accumulation_steps == 1:  # with accumulation on CPU a launch waits for each micro-batch
        print(f"host time to launch a mindspore step (numpy batch to Tensors, graph dispatch), median: "
              f"{1e3 * launch['mindspore']:.2f} ms with no step running "
              f"({launch['mindspore'] / median['mindspore']:.1%} of the step: the framework's per-step overhead)")
    if "mindspore (async)" in launch:
        print(f"mindspore launching {args.window} steps before reading them vs reading each: "
              f"{median['mindspore'] / median['mindspore (async)']:.2f}x the speed; a launch with a step running "
              f"takes {1e3 * launch['mindspore (async)']:.2f} ms")
    if args.baseline_src:
        print(f"throughput ratio mindspore/baseline ({args.baseline_src}): "
              f"{median['mindspore (baseline)'] / median['mindspore']:.3f}x; memory ratio: "
              f"{rss['mindspore'] / rss['mindspore (baseline)']:.2f}x")
    if "torch.compile" in runs:
        print(f"throughput ratio mindspore/torch.compile: {median['torch.compile'] / median['mindspore']:.2f}x; "
              f"memory ratio mindspore/torch.compile: {rss['mindspore'] / rss['torch.compile']:.2f}x")


if __name__ == "__main__":
    main()
