"""Which device a process runs on, and what its precision needs, decided before any graph is built.

GPU and Ascend cannot run in this project's CI: every function here takes its environment (environment
variables, the SoC's features, the op runner) as an argument, so tests choose each path by injection. What was
read to write each one is cited where it is used; docs/pretraining.md says what is tested where.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import numpy as np

import mindspore as ms
from mindspore import Tensor, ops

from .config import BertConfig
from .errors import SmallBertError


def launched_by_msrun(environ: Mapping[str, str] = os.environ) -> bool:
    """msrun starts workers (and the scheduler) with MS_ROLE set; a rank-table launch does not."""
    return environ.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED")


def device_id(flag: int | None, environ: Mapping[str, str] = os.environ) -> int | None:
    """The device id to pass to `ms.set_device`: `--device_id`, else $DEVICE_ID, else None (= device 0).

    Under msrun None: msrun exports DEVICE_ID=<local rank> itself (mindspore/parallel/cluster/process_entity/
    _api.py, `_start_single_worker`) and `ms.set_device` without an id lets the framework negotiate the device
    (its 2.10 docstring), so `--device_id` is refused there. A rank-table launch (run_pretrain_ascend.sh with
    RANK_TABLE_FILE) exports DEVICE_ID per process and nothing else picks it up: MindSpore's rank-table tutorial
    reads it into set_device/set_context, and without it every process would take device 0.
    """
    if launched_by_msrun(environ):
        if flag is not None:
            raise SmallBertError("--device_id: msrun assigns one device per process; drop the flag")
        return None
    if flag is not None:
        if flag < 0:
            raise SmallBertError(f"--device_id: must be >= 0, got {flag}")
        return flag
    text = environ.get("DEVICE_ID")
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise SmallBertError(f"DEVICE_ID={text!r}: not a device number")
    return int(text)


def set_device(device_target: str, flag: int | None = None) -> None:
    """`ms.set_device(device_target, device_id(flag))`; CPU has a single device and takes no id."""
    if device_target == "CPU" and flag:
        raise SmallBertError("--device_id: CPU has one device (0)")
    ms.set_device(device_target, None if device_target == "CPU" else device_id(flag))


def queues_steps(device_target: str) -> bool:
    """Whether a training loop should launch several steps before reading any of them back.

    On GPU and Ascend the kernels run on a device stream and the host only queues them (MindSpore's runtime is
    asynchronous until a result is read, `mindspore.runtime.launch_blocking`'s 2.10 docstring), so waiting for
    every step's loss leaves the device idle while the host fetches the next batch. On CPU the device is the
    host's own cores: with a second step launched while one ran, each step took 1.9-2.8x as long (measured on
    2 cores at L2-H128 and L4-H256, docs/benchmarks.md), so there the loop reads each step as it launches it.
    """
    return device_target != "CPU"


def _soc_supports(feature: str) -> bool:
    from mindspore._c_expression import MSContext

    return bool(MSContext.get_instance().ascend_soc_supports_feature(feature))


def npu_saturates(device_target: str | None = None, soc_supports: Callable[[str], bool] = _soc_supports,
                  environ: Mapping[str, str] = os.environ) -> bool:
    """Whether float overflow saturates to ±max instead of giving inf/nan, so an isfinite check never fires.

    True on Atlas training-series NPUs (910A: CANN supports only saturation mode there) and on Atlas A2 (910B)
    when MS_ASCEND_CHECK_OVERFLOW_MODE=SATURATION_MODE (A2's default is INF/NaN). The SoC tests are the ones
    MindSpore 2.10's own `mindspore.amp._all_finite` and `nn.TrainOneStepWithLossScaleCell` use: SoC features
    "amp_loss_scale_train_classic_target" (910A) and "train_hq_dtype_line" (910B).
    """
    target = device_target or ms.get_context("device_target")
    if target != "Ascend":
        return False
    if soc_supports("amp_loss_scale_train_classic_target"):
        return True
    return soc_supports("train_hq_dtype_line") and environ.get("MS_ASCEND_CHECK_OVERFLOW_MODE") == "SATURATION_MODE"


def npu_status_check(saturates: Callable[[], bool] = npu_saturates) -> Callable | None:
    """The extra overflow check a float16 `TrainStep` needs: None where inf/nan show (the gradient norm's isfinite
    suffices), else `mindspore.amp.all_finite`, which on a saturating NPU reads and clears the NPU float status
    register (NPUGetFloatStatusV2 / NPUClearFloatStatusV2, mindspore/amp.py in 2.10): it records an overflow in
    any kernel since the last read, saturated or not."""
    return ms.amp.all_finite if saturates() else None


def check_bfloat16(config: BertConfig, device_target: str, run: Callable[[BertConfig], None] | None = None) -> None:
    """Runs a one-layer BERT of `config`'s kind in bfloat16, forward and backward, op by op; SmallBertError if a
    kernel refuses, so a run fails here and not mid-graph after the data checks and compile.

    GPU bfloat16 needs kernels MindSpore builds only for some ops and CUDA architectures (cuBLAS bf16 GEMM needs
    compute capability 8.0+), and Atlas training-series NPUs have no bfloat16 at all; MindSpore raises on the
    first kernel it cannot select ("Unsupported data type", as on CPU). After such a failure MindSpore cannot
    compile further graphs in this process, which is fine: the run stops here. `run` replaces the probe (tests).
    """
    try:
        (run or _forward_backward)(config)
    except (RuntimeError, TypeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SmallBertError(f"--amp_dtype bfloat16: {device_target} cannot run BERT in bfloat16 with this "
                             f"MindSpore build ({reason}); use --amp_dtype float16, or --amp O0") from None


def _forward_backward(config: BertConfig, dtype=ms.bfloat16) -> None:
    """Runs the model's own kernels in `dtype`: embeddings, attention, GELU, dropout, heads, their gradients."""
    from .model import BertForPreTraining

    probe = dataclasses.replace(config, num_hidden_layers=1, vocab_size=min(config.vocab_size, 64),
                                max_position_embeddings=8)
    model = BertForPreTraining(probe, dtype)
    model.set_train(True)
    ids = Tensor(np.arange(8, dtype=np.int32).reshape(1, 8) % probe.vocab_size)
    types, mask = ops.zeros((1, 8), ms.int32), ops.ones((1, 8), ms.int32)
    positions = Tensor(np.array([[1, 2]], np.int32))

    def loss(*inputs):
        mlm, nsp = model(*inputs)
        return mlm.astype(ms.float32).sum() + nsp.astype(ms.float32).sum()

    grads = ms.grad(loss, grad_position=None, weights=model.trainable_params())(ids, types, mask, positions)
    for g in grads:
        g.asnumpy()  # PyNative runs asynchronously: a kernel's failure surfaces at the first read
