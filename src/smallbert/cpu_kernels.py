"""Fused float32 CPU kernels for LayerNorm, bias + exact GELU, dropout, a sub-layer's bias + dropout + residual +
LayerNorm, attention's heads (in, with their biases, and out) and masked softmax, softmax cross-entropy, the
gradient norm's sums of squares and the AdamWeightDecay update, run as MindSpore AOT custom ops.

On CPU, MindSpore 2.10's LayerNormGrad takes ~19 ms on a [4096, 256] activation and the erf GELU ~60 ms forward +
backward on [4096, 1024]: together about a fifth of an L4-H256 pretraining step. `cpu_kernels.cc` does each in one
pass over memory (~3 and ~6 ms). Its dropout draws masks from a counter-based generator whose only state is a step
counter per layer, which checkpoints save: resumed runs and repeated seeds are bit-exact (`FusedDropout`).
The softmax cross-entropy (`FusedSoftmaxNll`) and the optimizer update (`AdamWeightDecayInPlace`) are there for
exactness: MindSpore's float32 CPU Exp/LogSoftmax are biased by ~1e-6 and its AdamWeightDecay kernel forms 1 - beta2
in float32 (see each), which moved 200 AdamW steps 2.4e-3 away from Google's update in transformers.

The C++ ships as source and is compiled with the system's C++ compiler (`$CXX`, else `g++`) on first use, for this
CPU (`-march=native`), into `$SMALLBERT_CACHE_DIR` (default `~/.cache/smallbert`). The model falls back to
MindSpore's own ops, with a one-line warning, when the device is not CPU, no compiler works, or
`SMALLBERT_FUSED_KERNELS=0`; both give the same results to float rounding, except dropout, whose masks come from a
different generator (tests/test_cpu_kernels.py).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator

import numpy as np

from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.ops import signature as sig

from smallbert import native

logger = logging.getLogger("smallbert")

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels.cc")
FLAGS = ["-O3", "-march=native", "-std=c++17", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", "-pthread",
         "-D_GLIBCXX_USE_CXX11_ABI=0"]
FALLBACK = ("using MindSpore's own LayerNorm, GELU, dropout, softmaxes, norms and AdamWeightDecay (slower; dropout "
            "masks not resumable)")
_disabled = 0


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Models built inside use MindSpore's own ops (e.g. for a MindIR export that must run without our library)."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def enabled() -> bool:
    """Whether cells built now should use the fused kernels: CPU device, not switched off, library compiled."""
    import mindspore as ms

    if _disabled or os.environ.get("SMALLBERT_FUSED_KERNELS", "1") == "0":
        return False
    return ms.get_context("device_target") == "CPU" and library() is not None


@functools.lru_cache(maxsize=None)
def library() -> str | None:
    """Path of the compiled kernel library, building it on first call; None (and a warning) if it can't be built."""
    path = native.cache_path(SOURCE, FLAGS)
    allowed = [d for d in os.environ.get("MS_CUSTOM_AOT_WHITE_LIST", "").split(":") if d]
    if allowed and not any(os.path.abspath(path).startswith(os.path.join(os.path.abspath(d), "")) for d in allowed):
        logger.warning("fused CPU kernels: %s is outside MS_CUSTOM_AOT_WHITE_LIST (set SMALLBERT_CACHE_DIR inside "
                       "it); %s", os.path.dirname(path), FALLBACK)
        return None
    return native.build(SOURCE, FLAGS, "fused CPU kernels", FALLBACK, path)


def _custom(name: str, out_shape, out_dtype) -> ops.Custom:
    return ops.Custom(f"{library()}:{name}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot")


class FusedLayerNorm(nn.Cell):
    """(x [..., H], gamma [H], beta [H]) → (y [..., H], mean [...], rstd [...]), all float32; with its backward."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = Tensor([eps], mstype.float32)
        self.forward = _custom("LayerNormForward", lambda x, g, b, e: (x, x[:-1], x[:-1]),
                               lambda x, g, b, e: (x, x, x))
        self.backward = _custom("LayerNormBackward", lambda x, g, m, r, dy: (x, g, g),
                                lambda x, g, m, r, dy: (x, x, x))

    def construct(self, x: Tensor, gamma: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.forward(x, gamma, beta, self.eps)

    def bprop(self, x, gamma, beta, out, dout):
        dx, dgamma, dbeta = self.backward(x, gamma, out[1], out[2], dout[0])
        return dx, dgamma, dbeta


class FusedBiasGelu(nn.Cell):
    """(x [N, C], bias [C]) → gelu(x + bias) [N, C], float32, erf to 1.5e-7: a dense layer's bias and activation as
    one pass each way. The backward recomputes Φ instead of storing it, and gives the bias its column sums."""

    def __init__(self):
        super().__init__()
        self.forward = _custom("BiasGeluForward", lambda x, b: x, lambda x, b: x)
        self.backward = _custom("BiasGeluBackward", lambda x, b, dy: (x, b), lambda x, b, dy: (x, x))

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        return self.forward(x, bias)

    def bprop(self, x, bias, out, dout):
        return self.backward(x, bias, dout)


class FusedResidualLayerNorm(nn.Cell):
    """(h [N, C], bias [C], residual [N, C], gamma [C], beta [C], stream, step, keep_prob) →
    LayerNorm(dropout(h + bias) + residual) [N, C], float32: the end of each Transformer sub-layer in one pass each
    way, where h is the dense layer's output before its bias. The dropout takes `FusedDropout`'s stream, step and
    keep_prob and draws its masks, element for element; the caller counts the step."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = Tensor([eps], mstype.float32)
        self.forward = _custom("ResidualLayerNormForward",
                               lambda h, b, r, g, be, e, s, n, k: (h, h, h, h[:-1], h[:-1]),
                               lambda h, b, r, g, be, e, s, n, k: (h, h, mstype.uint8, h, h))
        self.backward = _custom("ResidualLayerNormBackward",
                                lambda z, g, m, r, mask, k, dy: (z, g, z, g, g),
                                lambda z, g, m, r, mask, k, dy: (z, z, z, z, z))

    def construct(self, h, bias, residual, gamma, beta, stream, step, keep_prob):
        """→ (y, then what the backward keeps: z = LayerNorm's input, the mask, mean and rstd)."""
        return self.forward(h, bias, residual, gamma, beta, self.eps, stream, step, keep_prob)

    def bprop(self, h, bias, residual, gamma, beta, stream, step, keep_prob, out, dout):
        dh, dbias, dresidual, dgamma, dbeta = self.backward(out[1], gamma, out[3], out[4], out[2], keep_prob, dout[0])
        return (dh, dbias, dresidual, dgamma, dbeta, ops.zeros_like(stream), ops.zeros_like(step),
                ops.zeros_like(keep_prob))

class _DropoutOp(nn.Cell):
    """(x, stream, step, keep_prob) → (x · mask / keep_prob, mask uint8), with its backward."""

    def __init__(self):
        super().__init__()
        self.forward = _custom("DropoutForward", lambda x, s, n, k: (x, x), lambda x, s, n, k: (x, mstype.uint8))
        self.backward = _custom("DropoutBackward", lambda dy, m, k: dy, lambda dy, m, k: dy)

    def construct(self, x, stream, step, keep_prob):
        return self.forward(x, stream, step, keep_prob)

    def bprop(self, x, stream, step, keep_prob, out, dout):
        return (self.backward(dout[0], out[1], keep_prob), ops.zeros_like(stream), ops.zeros_like(step),
                ops.zeros_like(keep_prob))


class SeededDropout(nn.Cell):
    """MindSpore's Dropout with op-level seeds (seed + rank, site + 1): data-parallel ranks draw different masks.

    `nn.Dropout` takes its seeds from `_get_graph_seed(0, "dropout")` (mindspore/nn/layer/basic.py and
    common/seed.py in 2.10): the global seed and a per-process counter, the same on every rank, so all ranks would
    drop the same units of their slices. Weights still come from the global seed alone, identical on every rank.
    `site` (the layer's index, set by `number_sites`) keeps layers apart; +1 because seeds (0, 0) mean "random".
    """

    def __init__(self, p: float):
        super().__init__()
        import mindspore as ms

        self.p = p
        self.seed = int(ms.get_seed() or 0)
        self.rank = _rank()
        self.set_site(0)

    def set_site(self, site: int) -> None:
        self.site = site
        self.dropout = ops.Dropout(1.0 - self.p, (self.seed + self.rank) % 2 ** 31, site + 1)

    def construct(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return self.dropout(x)[0]


class FusedDropout(SeededDropout):
    """Dropout whose masks are a function of (seed, rank, site, step): resumable, unlike MindSpore's CPU dropout.

    MindSpore's CPU dropout keeps its generator inside the kernel, where a checkpoint can't reach it. Here the only
    state is `step` (int32 [1], counted up by every training call): saved with the optimizer state (see
    `rng_state`), it makes a resumed run draw the masks of an uninterrupted one. `site` tells the model's dropout
    layers apart and is set by the model after construction (`number_sites`); `seed` is MindSpore's global seed.
    float16 input (mixed precision) goes to the seeded MindSpore dropout.
    """

    def __init__(self, p: float):
        super().__init__(p)
        self.keep_prob = Tensor([1.0 - p], mstype.float32)
        self.step = Parameter(Tensor([0], mstype.int32), name="step", requires_grad=False)
        self.op = _DropoutOp()

    def set_site(self, site: int) -> None:
        super().set_site(site)
        words = np.array([self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF, self.rank, site], np.uint32)
        self.stream = Tensor(words.view(np.int32))  # the kernel reads the bits as unsigned

    def construct(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.dtype != mstype.float32:
            return super().construct(x)
        return self.counted(self.op(x, self.stream, self.step, self.keep_prob)[0])

    def counted(self, y: Tensor) -> Tensor:
        """y, once `step` has counted the call that drew y's masks (the next call draws new ones)."""
        return ops.depend(y, ops.assign_add(self.step, ops.ones_like(self.step)))


class FusedSoftmaxNll(nn.Cell):
    """(logits float32 [N, C], bias float32 [C], labels int32 [N]) → (nll float32 [N], stats float64 [N, 2]): per-row
    softmax cross-entropy of z = logits + bias, -log softmax(z)[label], with its backward dz = dnll · (softmax(z) -
    onehot) for the logits and its column sums for the bias.

    The bias is the output layer's (the MLM decoder's [V], NSP's [2]): adding it here spares a pass over the
    [N, V] logits each way and its gradient's own. The exponentials are float32 and their sums double, and the
    backward divides the very exponentials the forward summed by that sum, so each gradient row sums to 0 up to its
    final roundings. MindSpore 2.10's float32 `LogSoftmax`/`Softmax` probabilities sum to 1 + ~1e-6 on CPU, so
    every row of softmax - onehot summed to ~1e-6 instead of 0, pushing the MLM output bias and every word-embedding
    row the same way at every step. Never materialises the log-probabilities: the backward needs only the logits
    and each row's max and sum (the `stats` output, which carries no gradient). A label outside [0, C) fails the
    kernel.
    """

    def __init__(self):
        super().__init__()
        self.forward = _custom("SoftmaxNllForward", lambda x, b, y: (y, [y[0], 2]),
                               lambda x, b, y: (x, mstype.float64))
        self.backward = _custom("SoftmaxNllBackward", lambda x, b, y, stats, dnll: (x, b),
                                lambda x, b, y, stats, dnll: (x, b))

    def construct(self, logits: Tensor, bias: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward(logits, bias, labels)

    def bprop(self, logits, bias, labels, out, dout):
        dlogits, dbias = self.backward(logits, bias, labels, out[1], dout[0])
        return dlogits, dbias, ops.zeros_like(labels)


class FusedQkvHeads(nn.Cell):
    """(x [B, S, 3, A, D], the query, key and value projections before their biases, bias [3, A, D]) → q, k, v
    [B, A, S, D] each, biases added: attention's three bias adds and head transposes as one pass each way."""

    def __init__(self):
        super().__init__()
        self.forward = _custom("QkvHeadsForward", lambda x, b: ([x[0], x[3], x[1], x[4]],) * 3,
                               lambda x, b: (x, x, x))
        self.backward = _custom("QkvHeadsBackward", lambda dq, dk, dv: ([dq[0], dq[2], 3, dq[1], dq[3]],
                                                                        [3, dq[1], dq[3]]),
                                lambda dq, dk, dv: (dq, dq))

    def construct(self, x: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.forward(x, bias)

    def bprop(self, x, bias, out, dout):
        return self.backward(dout[0], dout[1], dout[2])


class FusedMergeHeads(nn.Cell):
    """x [B, A, S, D] → [B, S, A, D]: attention's context back to rows, one copy pass each way."""

    def __init__(self):
        super().__init__()
        self.forward = _custom("MergeHeadsForward", lambda x: [x[0], x[2], x[1], x[3]], lambda x: x)
        self.backward = _custom("MergeHeadsBackward", lambda dy: [dy[0], dy[2], dy[1], dy[3]], lambda dy: dy)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def bprop(self, x, out, dout):
        return (self.backward(dout),)


class FusedMaskedSoftmax(nn.Cell):
    """(scores float32 [B, A, S, T], bias float32 [B, 1, 1, T], scale float32 [1]) → softmax(scale · scores + bias)
    over the last axis, with its backward (from the probabilities; the bias and scale get no gradient).

    Attention's scale, mask add and softmax as one pass each way: MindSpore's softmax backward (ReduceSum, Sub, Mul)
    ran at 1-3 GB/s and cost ~7x its forward (profiled L4-H256 step)."""

    def __init__(self):
        super().__init__()
        self.forward = _custom("MaskedSoftmaxForward", lambda x, b, s: x, lambda x, b, s: x)
        self.backward = _custom("MaskedSoftmaxBackward", lambda p, dp, s: p, lambda p, dp, s: p)

    def construct(self, scores: Tensor, bias: Tensor, scale: Tensor) -> Tensor:
        return self.forward(scores, bias, scale)

    def bprop(self, scores, bias, scale, out, dout):
        return self.backward(out, dout, scale), ops.zeros_like(bias), ops.zeros_like(scale)


class FusedMaskedSoftmaxDropout(nn.Cell):
    """(scores, bias, scale as `FusedMaskedSoftmax`; stream, step, keep_prob as `FusedDropout`) → dropout(softmax(scale
    · scores + bias)) [B, A, S, T], with its backward: attention's softmax and dropout in one pass each way, the
    dropout drawing `FusedDropout`'s masks element for element (the caller counts the step). The separate passes
    wrote and read the probabilities once more forward and their gradient once more backward."""

    def __init__(self):
        super().__init__()
        self.forward = _custom("MaskedSoftmaxDropoutForward", lambda x, b, s, st, n, k: (x, x, x),
                               lambda x, b, s, st, n, k: (x, x, mstype.uint8))
        self.backward = _custom("MaskedSoftmaxDropoutBackward", lambda p, m, k, dy, s: p,
                                lambda p, m, k, dy, s: p)

    def construct(self, scores, bias, scale, stream, step, keep_prob):
        """→ (the dropped probabilities, then what the backward keeps: the probabilities and the mask)."""
        return self.forward(scores, bias, scale, stream, step, keep_prob)

    def bprop(self, scores, bias, scale, stream, step, keep_prob, out, dout):
        return (self.backward(out[1], out[2], keep_prob, dout[0], scale), ops.zeros_like(bias),
                ops.zeros_like(scale), ops.zeros_like(stream), ops.zeros_like(step), ops.zeros_like(keep_prob))


class AdamWeightDecayInPlace(ops.Custom):
    """The op (w, m, v Parameters, g [n]; lr [], wd [], hyper [5] = (β1, 1-β1, β2, 1-β2, eps), scale []) → done
    float32 [1]: Google BERT's AdamWeightDecay step for one tensor with gradient scale·g, w ← w - lr·(m / (sqrt(v)
    + eps) + wd·w), written into w, m and v. See `optim.AdamWeightDecay` for why not MindSpore's kernel. `scale` is
    the train step's unscaling and clipping factor: multiplied in here, it costs no op per tensor, and the product
    scale·g is the one a separate float32 multiply gives.

    Declared as MindSpore declares its own in-place optimizer primitives: w, m and v written (`RW_WRITE`) and a
    memory side effect, so the graph orders the update after every read of w and keeps it though `done` is unused.
    Out of place, the three copies back (Assign) took 2% of an L4-H256 step and 3 × the parameters' memory."""

    __mindspore_signature__ = (sig.make_sig("w", sig.sig_rw.RW_WRITE), sig.make_sig("m", sig.sig_rw.RW_WRITE),
                               sig.make_sig("v", sig.sig_rw.RW_WRITE), sig.make_sig("g"), sig.make_sig("lr"),
                               sig.make_sig("wd"), sig.make_sig("hyper"), sig.make_sig("scale"))

    def __init__(self):
        super().__init__(f"{library()}:AdamWeightDecayInPlace", out_shape=lambda w, *rest: [1],
                         out_dtype=lambda w, *rest: w, func_type="aot")
        self.add_prim_attr("side_effect_mem", True)


def squared_sum() -> ops.Custom:
    """The op (x_1, ..., x_k float32 [...]) → float32 [1], the sum of all their elements' squares accumulated in
    double: `train.global_norm`'s square in one op for all the gradients."""
    return _custom("SquaredSum", lambda *shapes: [1], lambda *dtypes: dtypes[0])


def release_freed_heap() -> ops.Custom:
    """The op x [...] → float32 [1] that returns the host heap's free pages to the OS the first time any graph runs
    it in this process: a graph that runs it first does not carry its compiler's freed memory (~0.3 GB for an
    L4-H256 train step) into its peak. x only orders the op."""
    return _custom("ReleaseFreedHeap", lambda x: [1], lambda x: mstype.float32)


def _rank() -> int:
    """This process's data-parallel rank (0 when not distributed): ranks must not share dropout masks."""
    import mindspore as ms

    if ms.get_auto_parallel_context("parallel_mode") != ms.ParallelMode.DATA_PARALLEL:
        return 0  # the same test as train._data_parallel_world_size: set by train.init_data_parallel
    from mindspore.communication import get_rank

    return int(get_rank())


def number_sites(model: nn.Cell) -> None:
    """Gives each dropout layer in `model` its own stream, in the model's (deterministic) cell order."""
    for site, cell in enumerate(c for _, c in model.cells_and_names() if isinstance(c, SeededDropout)):
        cell.set_site(site)


def rng_state(cell: nn.Cell) -> list[Parameter]:
    """The `step` counters of every FusedDropout in `cell`: run state to checkpoint, not weights."""
    return [c.step for _, c in cell.cells_and_names() if isinstance(c, FusedDropout)]
