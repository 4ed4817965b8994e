#!/usr/bin/env python
"""Fused CPU LayerNorm and GELU kernels vs MindSpore's own ops, forward + backward, in graph mode.

    python bench/cpu_kernels.py --tokens 4096 --hidden 256 --intermediate 1024 --repeats 40

Shapes default to BERT L4-H256 at batch 32 × seq 128: LayerNorm on [tokens, hidden], GELU on
[tokens, intermediate]. Each runs forward and backward (gradient of sum(out * sens)) as one compiled graph; prints
the median milliseconds of both implementations, their ratio, and the largest difference between their gradients
relative to the gradient's largest value.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="rows: batch × sequence length")
    parser.add_argument("--hidden", type=int, default=256, help="LayerNorm width")
    parser.add_argument("--intermediate", type=int, default=1024, help="GELU width")
    parser.add_argument("--repeats", type=int, default=40, help="timed runs per implementation (after one warm-up)")
    args = parser.parse_args()

    import mindspore as ms
    from mindspore import Tensor, nn, ops

    from smallbert import cpu_kernels

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    if cpu_kernels.library() is None:
        raise SystemExit("the fused kernels could not be built (see the warning above)")

    class Formula(nn.Cell):
        def construct(self, x):
            return (0.5 * x) * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))

    class FirstOutput(nn.Cell):
        def __init__(self, cell):
            super().__init__()
            self.cell = cell

        def construct(self, *inputs):
            out = self.cell(*inputs)
            return out[0] if isinstance(out, tuple) else out

    class ForwardBackward(nn.Cell):
        def __init__(self, cell):
            super().__init__()
            self.net = FirstOutput(cell)
            self.grad = ops.GradOperation(get_all=True, sens_param=True)

        def construct(self, *inputs):
            return self.grad(self.net)(*inputs)

    def timed(cell, inputs):
        step = ForwardBackward(cell)
        result = [g.asnumpy() for g in step(*inputs)]
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for g in step(*inputs):
                g.asnumpy()
            times.append(time.perf_counter() - start)
        return float(np.median(times)) * 1e3, result

    rng = np.random.default_rng(0)
    t, h, i = args.tokens, args.hidden, args.intermediate
    x = Tensor(rng.standard_normal((t, h), dtype=np.float32) * 3 + 1)
    gamma, beta = (Tensor(rng.standard_normal((h,), dtype=np.float32)) for _ in range(2))
    sens = Tensor(rng.standard_normal((t, h), dtype=np.float32))
    xi = Tensor(rng.standard_normal((t, i), dtype=np.float32) * 2)
    sens_i = Tensor(rng.standard_normal((t, i), dtype=np.float32))
    cases = [(f"LayerNorm [{t}, {h}]", cpu_kernels.FusedLayerNorm(1e-12), ops.LayerNorm(-1, -1, 1e-12),
              (x, gamma, beta, sens)),
             (f"GELU [{t}, {i}]", cpu_kernels.FusedGelu(), Formula(), (xi, sens_i))]
    print(f"{'fwd + bwd':22s} {'MindSpore ms':>12s} {'fused ms':>9s} {'speed-up':>8s} {'max rel diff':>12s}")
    for name, fused, stock, inputs in cases:
        stock_ms, stock_out = timed(stock, inputs)
        fused_ms, fused_out = timed(fused, inputs)
        diff = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(fused_out, stock_out))
        print(f"{name:22s} {stock_ms:12.2f} {fused_ms:9.2f} {stock_ms / fused_ms:7.1f}x {diff:12.2e}")


if __name__ == "__main__":
    main()
