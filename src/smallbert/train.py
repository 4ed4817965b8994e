"""The train step shared by pretraining and fine-tuning, and the data-parallel helpers it needs.

`TrainStep` turns any "net with loss" and optimizer into a jit-compiled step: forward, backward, dynamic loss
scaling, gradient accumulation, data-parallel gradient averaging, clipping and the optimizer update run as MindSpore
graphs. `run_steps` runs it over a sequence of batches. The pretraining loss and loop built on it are in
`smallbert.pretrain`, fine-tuning's in `smallbert.finetune`.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.communication import get_group_size, get_rank, init

from . import cpu_kernels, device, optim


def init_data_parallel() -> tuple[int, int]:
    """Joins the process group when launched by msrun (or a rank table); returns (rank, world_size).

    Sets MindSpore's DATA_PARALLEL mode with gradient averaging. A plain `python` launch is rank 0 of 1.
    msrun also runs the script as its scheduler process (MS_ROLE=MS_SCHED), whose `init()` serves the cluster
    and exits the process when the workers are done: call this before doing any work.
    """
    launched = os.environ.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED") or int(os.environ.get("RANK_SIZE", "1")) > 1
    if not launched:
        return 0, 1
    init()
    world_size = get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world_size)
    return get_rank(), world_size


def _data_parallel_world_size() -> int:
    if ms.get_auto_parallel_context("parallel_mode") != ms.ParallelMode.DATA_PARALLEL:
        return 1
    return get_group_size()


def sum_over_ranks(values: np.ndarray) -> np.ndarray:
    """Element-wise sum of a small float array over the data-parallel ranks (one AllReduce); unchanged alone."""
    if _data_parallel_world_size() == 1:
        return values
    return ops.AllReduce()(Tensor(np.asarray(values, np.float32))).asnumpy().astype(np.float64)


class DynamicLossScale(nn.Cell):
    """Dynamic loss scaling for float16 training.

    The loss is multiplied by `scale` before backward. After a step whose unscaled gradients hold inf/nan, the
    step is skipped and the scale divided by `factor` (never below 1); after `window` finite steps in a row it is
    multiplied by `factor`. `scale` and `good_steps` are Parameters, so checkpoints carry them.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, factor: float = 2.0, window: int = 2000):
        super().__init__()
        self.scale = Parameter(Tensor(init_scale, mstype.float32), name="loss_scale", requires_grad=False)
        self.good_steps = Parameter(Tensor(0, mstype.int32), name="loss_scale_good_steps", requires_grad=False)
        self.factor = float(factor)
        self.window = int(window)

    def update(self, overflow: Tensor) -> Tensor:
        """overflow: bool scalar for the step just taken → the scale for the next step (also stored)."""
        good_steps = ops.select(overflow, ops.zeros_like(self.good_steps), self.good_steps + 1)
        grow = good_steps >= self.window
        shrunk = ops.maximum(self.scale / self.factor, 1.0)
        scale = ops.select(overflow, shrunk, ops.select(grow, self.scale * self.factor, self.scale))
        ops.assign(self.good_steps, ops.select(grow, ops.zeros_like(good_steps), good_steps))
        ops.assign(self.scale, scale)
        return scale


class StepOutput(NamedTuple):
    """What `TrainStep.step` returns, as host values.

    loss: the objective, averaged over micro-batches (rank-local under data parallel).
    aux: the net's other outputs; scalars averaged over micro-batches, arrays concatenated along axis 0.
    overflow: True when the gradients were not finite and the update was skipped.
    loss_scale: the loss scale for the next step (1.0 without loss scaling).
    """

    loss: float
    aux: tuple
    overflow: bool
    loss_scale: float


class PendingStep:
    """A step `TrainStep.launch` has queued: its device outputs, not yet read. `read()` waits for the step the
    first time and returns the same `StepOutput` after."""

    def __init__(self, micro_outputs: list, overflow: Tensor, loss_scale: Tensor):
        self.micro_outputs, self.overflow, self.loss_scale = micro_outputs, overflow, loss_scale
        self._output: StepOutput | None = None

    def read(self) -> StepOutput:
        if self._output is None:
            outs = self.micro_outputs
            merged = [_merge([out[j].asnumpy() for out in outs]) for j in range(len(outs[0]))]
            self._output = StepOutput(loss=float(merged[0]), aux=tuple(merged[1:]),
                                      overflow=bool(self.overflow.asnumpy()),
                                      loss_scale=float(self.loss_scale.asnumpy()))
        return self._output


class TrainStep(nn.Cell):
    """One optimizer step for any net with a loss, compiled as MindSpore graphs.

    Contract:
        net_with_loss(*batch) returns a float32 scalar loss, or a tuple whose first element is that loss and whose
            other elements (e.g. mlm_loss and nsp_loss, or logits) are passed back untouched as `aux`. Gradients are
            taken with respect to `optimizer.parameters`.
        step(*batch) takes arrays or Tensors with a leading batch axis of size accumulation_steps × B and performs
            ONE optimizer update: the batch is split into `accumulation_steps` micro-batches of B rows (by
            `net_with_loss.split_batch(batch, k)` when the net defines it, e.g. to add a normaliser shared by all
            micro-batches and ranks; a single process without accumulation needs no split); their gradients are
            summed and divided by `accumulation_steps`, so the update equals one step on the whole batch, at a
            micro-batch's memory. Under data parallel the gradients are then averaged
            across ranks. They are unscaled by the loss scale, checked for inf/nan through their global norm (the
            stock loss-scale cell's check does not run on CPU), clipped to global norm `max_grad_norm` (<= 0: no
            clipping) — after unscaling, so the threshold means the true norm — and given to the optimizer unless
            they overflowed. A skipped step does not advance the optimizer's `global_step`, hence
            not the learning rate either. Returns a `StepOutput`. `launch(*batch)` does the same without waiting:
            it returns a `PendingStep` whose `read()` is that `StepOutput`.

    Graphs: with jit=True (the default) the whole step is one graph when accumulation_steps == 1; otherwise one
    graph per micro-batch (forward, backward, add into `accumulated_grads.*` buffers) and one for the update.
    jit=False runs the same code in PyNative mode, for debugging.

    Checkpoint state: `state_parameters()` lists what besides the model's own weights a resume needs (optimizer
    moments, its `global_step`, the loss scale and its counter).
    """

    def __init__(self, net_with_loss: nn.Cell, optimizer: nn.Optimizer, *, accumulation_steps: int = 1,
                 max_grad_norm: float = 1.0, loss_scale: DynamicLossScale | None = None, jit: bool = True):
        super().__init__(auto_prefix=False)
        if accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
        self.net_with_loss = net_with_loss
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.accumulation_steps = int(accumulation_steps)
        self.max_grad_norm = float(max_grad_norm)
        self.loss_scale = loss_scale
        # float16 on a saturating NPU: overflow leaves no inf/nan for the norm check to see (see device.py).
        self.status_finite = device.npu_status_check() if loss_scale is not None else None
        self.squared_sum = cpu_kernels.squared_sum() if cpu_kernels.enabled() else None  # for global_norm
        self.release_heap = cpu_kernels.release_freed_heap() if cpu_kernels.enabled() else None
        # our AdamWeightDecay multiplies the gradients by the unscale-and-clip coefficient in its own kernel
        self.optimizer_scales = isinstance(optimizer, optim.AdamWeightDecay)
        self.grad_fn = ms.value_and_grad(self.scaled_forward, None, self.weights, has_aux=True)
        world_size = _data_parallel_world_size()
        self.grad_reducer = nn.DistributedGradReducer(self.weights, mean=True, degree=world_size) \
            if world_size > 1 else None
        if self.accumulation_steps > 1:
            self.accumulated_grads = self.weights.clone(prefix="accumulated_grads", init="zeros")
        compile_ = ms.jit if jit else (lambda fn: fn)
        self._fused_step = compile_(self.construct)
        self._accumulate = compile_(self.accumulate)
        self._apply_accumulated = compile_(self.apply_accumulated)

    def current_scale(self) -> Tensor:
        return self.loss_scale.scale if self.loss_scale is not None else Tensor(1.0, mstype.float32)

    def scaled_forward(self, *batch):
        """The net's outputs with the loss times the loss scale prepended: what backward differentiates."""
        outputs = self.net_with_loss(*batch)
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        if self.loss_scale is None:
            return (outputs[0],) + outputs
        return (outputs[0] * self.loss_scale.scale.astype(outputs[0].dtype),) + outputs

    def apply_gradients(self, grads: tuple, divisor: float) -> tuple[Tensor, Tensor]:
        """Averages across ranks, unscales by loss scale × divisor, checks, clips and applies `grads`.

        The inf/nan check is on the global norm (inf or nan whenever any element is), which clipping needs
        anyway; unscaling and clipping are then one multiply. Returns (overflow bool scalar, next loss scale).
        """
        if self.grad_reducer is not None:
            grads = self.grad_reducer(grads)
        inverse = 1.0 / (self.current_scale() * divisor)
        norm = global_norm(grads, self.squared_sum) * inverse
        finite = ops.isfinite(norm)
        if self.status_finite is not None:
            finite = ops.logical_and(finite, self.status_finite(grads))
            if self.grad_reducer is not None:  # the status is per device: skip on every rank or on none
                finite = ops.AllReduce()(ops.logical_not(finite).astype(mstype.float32)) < 0.5
        coefficient = inverse
        if self.max_grad_norm > 0:
            coefficient = inverse * self.max_grad_norm / ops.maximum(norm, self.max_grad_norm)
        # A branch, not a flag the kernel reads: with the flag (no control flow) an L4-H256 step took 1.10 s
        # against 0.77 s on CPU, MindSpore 2.10's runtime queues spinning (AsyncRQueue::Wait, 24% of CPU samples).
        if finite:
            if self.optimizer_scales:
                self.optimizer(grads, coefficient)
            else:
                self.optimizer(tuple(g * coefficient.astype(g.dtype) for g in grads))
        overflow = ops.logical_not(finite)
        scale = self.loss_scale.update(overflow) if self.loss_scale is not None else self.current_scale()
        return overflow, scale

    def after_heap_release(self, batch: tuple) -> tuple:
        """`batch` with its first tensor made to wait for `release_heap` (on CPU): the graph frees the host heap
        its compilation left before any of its own memory is touched."""
        if self.release_heap is None:
            return batch
        return (ops.depend(batch[0], self.release_heap(batch[0])),) + batch[1:]

    def construct(self, *batch):
        """The whole step on one batch (accumulation_steps == 1): (net outputs, overflow, next loss scale)."""
        outputs, grads = self.grad_fn(*self.after_heap_release(batch))
        overflow, scale = self.apply_gradients(grads, 1.0)
        return outputs[1:], overflow, scale

    def accumulate(self, first: Tensor, *batch):
        """Forward and backward on one micro-batch, its (scaled) gradients written into `accumulated_grads` if
        `first` (a bool scalar), else added to them.

        A branch on a tensor rather than two graphs: it spares zeroing the buffers, and a graph with no control
        flow ran 1.4x slower on CPU (see `apply_gradients`): 1.1 s against 0.79 s per L4-H256 micro-batch of 32."""
        outputs, grads = self.grad_fn(*self.after_heap_release(batch))
        if first:
            for buffer, grad in zip(self.accumulated_grads, grads):
                ops.assign(buffer, grad)
        else:
            for buffer, grad in zip(self.accumulated_grads, grads):
                ops.assign_add(buffer, grad)
        return outputs[1:]

    def apply_accumulated(self):
        """The update from the accumulated gradients. Returns (overflow, next loss scale)."""
        return self.apply_gradients(tuple(self.accumulated_grads), float(self.accumulation_steps))

    def launch(self, *batch) -> PendingStep:
        """Dispatches one optimizer update on `batch` (see the class docstring) without waiting for it.

        On an accelerator the call returns once the work is queued, and only reading a result (`PendingStep.read`)
        waits, so a loop that launches several steps before reading any keeps the device busy while the host
        prepares the next batch. On CPU a launch waits for the step already running, and overlapping steps there
        is slower (`device.queues_steps`)."""
        k = self.accumulation_steps
        split = getattr(self.net_with_loss, "split_batch", None)
        if k == 1:
            if split is not None and self.grad_reducer is not None:  # the loss's denominator spans the ranks
                batch = split(batch, 1)[0]
            outputs, overflow, scale = self._fused_step(*_tensors(batch))
            return PendingStep([outputs], overflow, scale)
        micro_batches = (split or split_batch)(batch, k)
        # On CPU each micro-batch is waited for before the next graph is launched, as steps are (device.queues_steps):
        # launched back to back, an L4-H256 step of 2 micro-batches took 2.8 s instead of 2.2 (docs/benchmarks.md).
        wait = not device.queues_steps(ms.get_context("device_target"))
        micro_outputs = []
        for i, micro in enumerate(micro_batches):
            micro_outputs.append(self._accumulate(Tensor(i == 0), *_tensors(micro)))
            if wait:
                micro_outputs[-1][0].asnumpy()
        overflow, scale = self._apply_accumulated()
        return PendingStep(micro_outputs, overflow, scale)

    def step(self, *batch) -> StepOutput:
        """One optimizer update on `batch` (leading axis accumulation_steps × B), waited for; see `launch`."""
        return self.launch(*batch).read()

    def state_parameters(self) -> list[Parameter]:
        """Parameters a resume needs besides the net's weights: optimizer, loss-scale and dropout-generator state."""
        own = {id(p) for p in self.net_with_loss.get_parameters()}
        skip = {id(p) for p in self.accumulated_grads} if self.accumulation_steps > 1 else set()
        return ([p for p in self.get_parameters() if id(p) not in own and id(p) not in skip]
                + cpu_kernels.rng_state(self.net_with_loss))


def run_steps(train_step: TrainStep, batches: Iterable[Sequence], queue: bool, bar: tqdm | None = None,
              **postfix: Any) -> list[StepOutput]:
    """One `train_step` update per batch (e.g. a fine-tuning epoch); returns their outputs in order.

    With `queue` (an accelerator, `device.queues_steps`) every step is launched before any is read, so the
    device never waits for the host; otherwise each is read as it is launched and its loss shown on `bar`, after
    the `postfix` fields given."""
    pending = []
    for batch in batches:
        pending.append(train_step.launch(*batch))
        if not queue:
            loss = pending[-1].read().loss
            if bar is not None:
                bar.set_postfix(**postfix, loss=f"{loss:.4f}")
    return [p.read() for p in pending]


def split_batch(batch: Sequence[Tensor], k: int) -> list[tuple[Tensor, ...]]:
    """Splits every column of `batch` (leading axis k × B) into k micro-batches of B rows."""
    rows = batch[0].shape[0]
    if rows % k:
        raise ValueError(f"batch of {rows} rows does not split into {k} equal micro-batches")
    size = rows // k
    return [tuple(x[i * size:(i + 1) * size] for x in batch) for i in range(k)]


def _tensors(batch: Sequence) -> tuple[Tensor, ...]:
    return tuple(Tensor(x) if isinstance(x, np.ndarray) else x for x in batch)


def global_norm(tensors: Sequence[Tensor], squared_sum: ops.Custom | None = None) -> Tensor:
    """sqrt(sum of squares of all elements), float32 scalar: by `squared_sum` (`cpu_kernels.squared_sum`, one op
    for all tensors, ~25x faster than MindSpore per tensor on CPU) if given, else a dot product of each tensor with
    itself, ~2x faster than square-and-sum and without a temporary copy."""
    flats = [t.reshape(1, -1).astype(mstype.float32) for t in tensors]
    if squared_sum is not None:
        return ops.sqrt(squared_sum(*flats).reshape(()))
    total = ops.zeros((), mstype.float32)
    for flat in flats:
        total = total + ops.matmul(flat, flat.T).reshape(())
    return ops.sqrt(total)


def _merge(values: Sequence[np.ndarray]) -> np.ndarray:
    """Micro-batch results: scalars averaged, arrays concatenated along the batch axis."""
    if values[0].ndim == 0:
        return np.mean(values, dtype=np.float64)
    return np.concatenate(values, axis=0)
