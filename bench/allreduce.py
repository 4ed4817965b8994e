#!/usr/bin/env python
"""The all-reduce share of a data-parallel pretraining step: the gradient reduction alone, timed on its own.

    msrun --worker_num=2 --local_worker_num=2 --master_port=8241 --log_dir=/tmp/ar --join=True \
        bench/allreduce.py --config sample/bert_config.json --repeats 50

Each rank builds the model of --config and reduces a gradient of every trainable parameter with
`nn.DistributedGradReducer`, the cell `train.TrainStep` uses under data parallel, in a compiled graph, `--repeats`
times after 3 warm-ups. Rank 0 prints the median and spread of one reduction, the bytes it moves, and, with
--step_ms (a data-parallel step's time measured by run_pretrain, see docs/benchmarks.md), its share of the step.
Run with plain `python` it times the same graph at world size 1, where the reducer is skipped: the floor.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(HERE, "sample", "bert_config.json"))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--step_ms", type=float, default=None, help="a data-parallel step's time, for the share")
    args = parser.parse_args()

    import mindspore as ms
    import numpy as np
    from mindspore import nn, ops

    from smallbert.config import BertConfig
    from smallbert.model import BertForPreTraining
    from smallbert.train import init_data_parallel

    ms.set_device("CPU")  # before the process group
    rank, world_size = init_data_parallel()
    model = BertForPreTraining(BertConfig.from_json_file(args.config))
    weights = model.trainable_params()
    reducer = nn.DistributedGradReducer(weights, mean=True, degree=world_size) if world_size > 1 else None

    @ms.jit
    def reduce(grads):
        return reducer(grads) if reducer is not None else tuple(g * 1.0 for g in grads)

    grads = tuple(ops.ones_like(w) for w in weights)
    for _ in range(3):
        reduce(grads)[0].asnumpy()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = reduce(grads)
        out[-1].asnumpy()  # waits for the whole graph
        times.append((time.perf_counter() - start) * 1e3)
    if reducer is not None:
        np.testing.assert_allclose(out[0].asnumpy(), 1.0)  # the mean of ones over the ranks
    if rank == 0:
        megabytes = sum(int(np.prod(w.shape)) for w in weights) * 4 / 1e6
        median = statistics.median(times)
        print(f"world size {world_size}: gradient of {len(weights)} tensors, {megabytes:.1f} MB; one reduction "
              f"{median:.2f} ms median (min {min(times):.2f}, max {max(times):.2f}) over {args.repeats}", flush=True)
        if args.step_ms:
            print(f"share of a {args.step_ms:g} ms step: {median / args.step_ms:.1%}", flush=True)


if __name__ == "__main__":
    main()
