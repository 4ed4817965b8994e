"""Device choice and per-device precision checks (smallbert.device), with GPU/Ascend environments injected.

CPU runs every path that chooses: which device id, whether the NPU saturates, whether bfloat16 runs. What only a
GPU or an NPU can show is listed in docs/pretraining.md ("Devices and precisions").
"""
import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn, ops

from smallbert import device
from smallbert.errors import SmallBertError
from smallbert.train import DynamicLossScale, TrainStep, global_norm

MSRUN = {"MS_ROLE": "MS_WORKER", "DEVICE_ID": "3", "RANK_ID": "3"}
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
RANK_TABLE = {"RANK_TABLE_FILE": "hccl_8p.json", "DEVICE_ID": "5", "RANK_ID": "5", "RANK_SIZE": "8"}


@pytest.mark.parametrize("flag, environ, expected", [
    (None, {}, None),                 # single device, nothing chosen: MindSpore's device 0
    (2, {}, 2),                       # --device_id on a single-device run
    (None, RANK_TABLE, 5),            # rank-table launch: each process its exported DEVICE_ID
    (1, RANK_TABLE, 1),               # the flag wins over the environment
    (None, MSRUN, None),              # msrun exports DEVICE_ID too, but negotiates the device itself
    (None, {"DEVICE_ID": ""}, None),
])
def test_device_id_follows_flag_then_environment(flag, environ, expected):
    assert device.device_id(flag, environ) == expected


@pytest.mark.parametrize("flag, environ, message", [
    (0, MSRUN, "--device_id: msrun assigns"),
    (-1, {}, "--device_id: must be >= 0"),
    (None, {"DEVICE_ID": "npu1"}, "DEVICE_ID='npu1': not a device number"),
])
def test_device_id_refuses_bad_input(flag, environ, message):
    with pytest.raises(SmallBertError, match=message):
        device.device_id(flag, environ)


def test_cpu_takes_no_device_id():
    with pytest.raises(SmallBertError, match="--device_id: CPU has one device"):
        device.set_device("CPU", 1)


@pytest.mark.parametrize("target, features, environ, expected", [
    ("CPU", set(), {}, False),
    ("GPU", set(), {}, False),
    ("Ascend", {"amp_loss_scale_train_classic_target"}, {}, True),                            # 910A
    ("Ascend", {"train_hq_dtype_line"}, {}, False),                                           # 910B, INF/NaN
    ("Ascend", {"train_hq_dtype_line"}, {"MS_ASCEND_CHECK_OVERFLOW_MODE": "SATURATION_MODE"}, True),
    ("Ascend", {"train_hq_dtype_line"}, {"MS_ASCEND_CHECK_OVERFLOW_MODE": "INFNAN_MODE"}, False),
])
def test_npu_saturation_by_device_and_soc(target, features, environ, expected):
    assert device.npu_saturates(target, features.__contains__, environ) is expected


def test_the_loop_queues_steps_on_accelerators_only():
    assert not device.queues_steps("CPU")
    assert device.queues_steps("GPU") and device.queues_steps("Ascend")


def test_this_machine_does_not_saturate():
    assert not device.npu_saturates()
    assert device.npu_status_check() is None


def status_says_overflow(grads):
    """A saturating NPU's status register after an overflow that left every gradient finite."""
    return ops.zeros((), ms.bool_)


class Quadratic(nn.Cell):
    """loss = sum(w · x)²; one small graph."""

    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(Tensor(np.full((4,), 0.5, np.float32)), name="w")

    def construct(self, x):
        return (self.w * x).sum() ** 2


@pytest.mark.parametrize("status, overflow", [(status_says_overflow, True), (ms.amp.all_finite, False)])
def test_float16_step_on_a_saturating_npu_reads_the_status(monkeypatch, status, overflow):
    """With the NPU status saying overflow the step is skipped and the scale halved although the gradients are
    finite; MindSpore's real all_finite compiles into the step (on CPU it checks isfinite) and passes."""
    monkeypatch.setattr(device, "npu_status_check", lambda: status)
    net = Quadratic()
    step = TrainStep(net, nn.SGD(net.trainable_params(), learning_rate=0.1), loss_scale=DynamicLossScale(1024.0))
    out = step.step(np.ones((4,), np.float32))
    assert out.overflow is overflow
    assert out.loss_scale == (512.0 if overflow else 1024.0)
    assert bool((net.w.asnumpy() == 0.5).all()) is overflow


def test_global_norm_is_float32_for_float16_gradients():
    """Each element's square (300² = 9e4) exceeds float16's max (65504): a float16 sum would be inf."""
    grads = [Tensor(np.full((64,), 300.0, np.float16)), Tensor(np.full((3, 3), -300.0, np.float16))]
    norm = global_norm(grads)
    assert norm.dtype == ms.float32
    assert float(norm.asnumpy()) == pytest.approx(300.0 * np.sqrt(73), rel=1e-6)


BFLOAT16_PROBE = """
import mindspore as ms
from smallbert import BertConfig, device
from smallbert.errors import SmallBertError
ms.set_device("CPU")
config = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=64)
try:
    device.check_bfloat16(config, "GPU")
except SmallBertError as err:
    print(err)
"""


def test_bfloat16_probe_fails_early_and_clearly_where_kernels_lack_it(tmp_path):
    """CPU really has no bfloat16 MatMul: the probe is the one a GPU without bf16 kernels would fail. In its own
    process: a failed kernel selection leaves MindSpore's graph manager unable to compile later graphs in the same
    process (harmless in a run, which stops there; here it would break the tests that follow)."""
    done = subprocess.run([sys.executable, "-c", BFLOAT16_PROBE], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": SRC})
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.fullmatch(r"--amp_dtype bfloat16: GPU cannot run BERT in bfloat16 .*Unsupported data type.*"
                        r"use --amp_dtype float16, or --amp O0\n", done.stdout, re.S), done.stdout


def test_bfloat16_probe_passes_where_kernels_exist(tiny_config):
    """The probe itself is sound: the same forward and backward in float16, which CPU has, runs through."""
    config = dataclasses.replace(tiny_config, hidden_dropout_prob=0.1)
    device.check_bfloat16(config, "CPU", run=lambda c: device._forward_backward(c, ms.float16))


def test_bfloat16_probe_reports_an_injected_kernel_failure(tiny_config):
    def missing_kernel(config):
        raise RuntimeError("Select GPU operator[Erf] fail! Unsupported data type!\nstack...")

    with pytest.raises(SmallBertError, match=r"\(Select GPU operator\[Erf\] fail! Unsupported data type!\)"):
        device.check_bfloat16(tiny_config, "GPU", run=missing_kernel)
