#!/usr/bin/env python
"""Fused CPU kernels vs what they replace, forward + backward, in graph mode.

    python bench/cpu_kernels.py --tokens 4096 --hidden 256 --intermediate 1024 --repeats 40

Shapes default to BERT L4-H256 at batch 32 × seq 128: LayerNorm on [tokens, hidden] against MindSpore's; bias +
GELU on [tokens, intermediate] against BiasAdd and the erf formula; a sub-layer's end, LayerNorm(dropout(h + bias) +
residual) on [tokens, hidden], against the same from the separate fused dropout and LayerNorm kernels. Each runs
forward and backward (gradient of sum(out * sens)) as one compiled graph, the two implementations alternating;
prints their median milliseconds, the ratio, and the largest difference between their gradients relative to the
gradient's largest value (the residual end's dropout masks are the same in both).
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

    class BiasGelu(nn.Cell):  # what the model runs without the kernels: BiasAdd, then the erf formula
        def construct(self, x, bias):
            x = ops.bias_add(x, bias)
            return (0.5 * x) * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))

    class ResidualEnd(nn.Cell):
        """LayerNorm(dropout(h + bias) + residual): fused, or as the separate fused kernels and MindSpore's adds."""

        def __init__(self, fused: bool):
            super().__init__()
            self.dropout = cpu_kernels.FusedDropout(0.1)
            self.layer_norm = cpu_kernels.FusedLayerNorm(1e-12)
            self.fused = cpu_kernels.FusedResidualLayerNorm(1e-12) if fused else None

        def construct(self, h, bias, residual, gamma, beta):
            if self.fused is None:
                return self.layer_norm(self.dropout(ops.bias_add(h, bias)) + residual, gamma, beta)[0]
            y = self.fused(h, bias, residual, gamma, beta, self.dropout.stream, self.dropout.step,
                           self.dropout.keep_prob)[0]
            return self.dropout.counted(y)

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

    def timed(cells, inputs):
        """Median ms of each cell's forward + backward, the cells alternating; and each one's gradients."""
        steps = [ForwardBackward(cell) for cell in cells]
        results = [[g.asnumpy() for g in step(*inputs)] for step in steps]
        times = [[] for _ in steps]
        for _ in range(args.repeats):
            for step, spent in zip(steps, times):
                start = time.perf_counter()
                for g in step(*inputs):
                    g.asnumpy()
                spent.append(time.perf_counter() - start)
        return [float(np.median(t)) * 1e3 for t in times], results

    rng = np.random.default_rng(0)
    t, h, i = args.tokens, args.hidden, args.intermediate
    x = Tensor(rng.standard_normal((t, h), dtype=np.float32) * 3 + 1)
    gamma, beta, bias = (Tensor(rng.standard_normal((h,), dtype=np.float32)) for _ in range(3))
    sens, residual = (Tensor(rng.standard_normal((t, h), dtype=np.float32)) for _ in range(2))
    xi = Tensor(rng.standard_normal((t, i), dtype=np.float32) * 2)
    bias_i = Tensor(rng.standard_normal((i,), dtype=np.float32))
    sens_i = Tensor(rng.standard_normal((t, i), dtype=np.float32))
    cases = [(f"LayerNorm [{t}, {h}]", "MindSpore", cpu_kernels.FusedLayerNorm(1e-12), ops.LayerNorm(-1, -1, 1e-12),
              (x, gamma, beta, sens)),
             (f"bias + GELU [{t}, {i}]", "MindSpore", cpu_kernels.FusedBiasGelu(), BiasGelu(), (xi, bias_i, sens_i)),
             (f"residual end [{t}, {h}]", "separate", ResidualEnd(True), ResidualEnd(False),
              (x, bias, residual, gamma, beta, sens))]
    for cell in cases[-1][2:4]:
        cell.set_train(True)  # the dropouts drop
    print(f"{'fwd + bwd':26s} {'reference':>9s} {'ref. ms':>8s} {'fused ms':>9s} {'speed-up':>8s} "
          f"{'max rel diff':>12s}")
    for name, reference, fused, stock, inputs in cases:
        (fused_ms, stock_ms), (fused_out, stock_out) = timed([fused, stock], inputs)
        diff = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(fused_out, stock_out))
        print(f"{name:26s} {reference:>9s} {stock_ms:8.2f} {fused_ms:9.2f} {stock_ms / fused_ms:7.1f}x {diff:12.2e}")


if __name__ == "__main__":
    main()
