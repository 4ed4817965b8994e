#!/usr/bin/env python
"""CPU time of the per-batch value check of pretraining (`smallbert.data.records.bad_row`), to set against a step.

    python bench/batch_check.py --repeats 7 --calls 2000

Builds random, valid batches of pretraining shape (vocab 30522) and times `bad_row` on each shape with
`time.process_time`: CPU time, the figure other load on a shared machine disturbs least (wall time there is
several times higher). Prints the best and mean ± std of the repeats, in microseconds per batch.
"""
from __future__ import annotations

import argparse
import statistics
import time
import timeit

import numpy as np

from smallbert.data.records import bad_row

VOCAB_SIZE = 30522
SHAPES = ((32, 128, 20), (256, 128, 20), (32, 512, 80))  # (batch, sequence length, masked positions)


def random_batch(rng: np.random.Generator, b: int, s: int, p: int) -> dict[str, np.ndarray]:
    """A valid batch as `checked_batches` sees it: COLUMNS → [B, ...] arrays."""
    return {"input_ids": rng.integers(0, VOCAB_SIZE, (b, s), dtype=np.int32),
            "input_mask": np.ones((b, s), np.int32),
            "segment_ids": rng.integers(0, 2, (b, s), dtype=np.int32),
            "masked_lm_positions": rng.integers(0, s, (b, p), dtype=np.int32),
            "masked_lm_ids": rng.integers(0, VOCAB_SIZE, (b, p), dtype=np.int32),
            "masked_lm_weights": np.ones((b, p), np.float32),
            "next_sentence_labels": rng.integers(0, 2, (b, 1), dtype=np.int32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000, help="calls per repeat")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for b, s, p in SHAPES:
        batch = random_batch(rng, b, s, p)
        assert bad_row(batch, VOCAB_SIZE) is None
        timer = timeit.Timer(lambda: bad_row(batch, VOCAB_SIZE), timer=time.process_time)
        runs = [timer.timeit(number=args.calls) / args.calls * 1e6 for _ in range(args.repeats)]
        print(f"B={b} S={s} P={p}: best {min(runs):.0f} us, mean {statistics.mean(runs):.0f} ± "
              f"{statistics.stdev(runs):.0f} us of CPU per batch ({args.repeats} x {args.calls} calls)")


if __name__ == "__main__":
    main()
