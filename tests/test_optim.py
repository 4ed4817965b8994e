"""Optimizers and schedule against float64 NumPy references of Google's formulas."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, Tensor, nn

from smallbert.errors import SmallBertError
from smallbert.optim import WarmupPolynomialDecay, build_optimizer, excluded_from_weight_decay


def reference_step(name, params, grads, state, lr, weight_decay, step, beta1=0.9, beta2=0.999, eps=1e-6):
    """Google's AdamWeightDecay (no bias correction) / LAMB update in float64, in place; `step` is 1-based."""
    for key, w in params.items():
        g = grads[key]
        m = state.setdefault(f"m.{key}", np.zeros_like(w))
        v = state.setdefault(f"v.{key}", np.zeros_like(w))
        m[...] = beta1 * m + (1 - beta1) * g
        v[...] = beta2 * v + (1 - beta2) * g * g
        if name == "adamw":
            update = m / (np.sqrt(v) + eps)
        else:
            update = (m / (1 - beta1 ** step)) / (np.sqrt(v / (1 - beta2 ** step)) + eps)
        if not ("LayerNorm" in key or key.endswith("bias")):
            update = update + weight_decay * w
        ratio = 1.0
        if name == "lamb":
            w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(update)
            ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        w -= lr * ratio * update


class Tiny(nn.Cell):
    """Parameters named like BERT's: a decayed weight, a bias and a LayerNorm weight and bias."""

    def __init__(self, rng):
        super().__init__()
        self.dense_weight = Parameter(Tensor(rng.normal(size=(4, 3)).astype(np.float32)), name="dense.weight")
        self.dense_bias = Parameter(Tensor(np.zeros(4, np.float32)), name="dense.bias")
        self.ln_weight = Parameter(Tensor(rng.normal(1.0, 0.1, size=4).astype(np.float32)), name="LayerNorm.weight")
        self.ln_bias = Parameter(Tensor(rng.normal(size=4).astype(np.float32)), name="LayerNorm.bias")


def test_decay_exclusion_names():
    assert excluded_from_weight_decay("bert.embeddings.LayerNorm.weight")
    assert excluded_from_weight_decay("bert.encoder.layer.0.attention.self.query.bias")
    assert excluded_from_weight_decay("cls.predictions.bias")
    assert not excluded_from_weight_decay("bert.encoder.layer.0.attention.self.query.weight")
    assert not excluded_from_weight_decay("bert.embeddings.word_embeddings.weight")


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_optimizer_matches_numpy_reference(name):
    rng = np.random.default_rng(0)
    net = Tiny(rng)
    params = net.trainable_params()
    lr, weight_decay = 0.05, 0.1
    optimizer = build_optimizer(name, params, lr, weight_decay=weight_decay)
    step_fn = ms.jit(optimizer)
    expected = {p.name: p.asnumpy().astype(np.float64) for p in params}
    state = {}
    for step in range(1, 4):
        grads = {p.name: rng.normal(size=p.shape) for p in params}
        step_fn(tuple(Tensor(grads[p.name].astype(np.float32)) for p in params))
        reference_step(name, expected, grads, state, lr, weight_decay, step)
    # MindSpore's fused CPU AdamWeightDecay kernel divides with ~1e-5 relative error; a wrongly decayed tensor
    # would be off by lr * weight_decay * |w| ~ 5e-3 per step, far outside this tolerance.
    for p in params:
        np.testing.assert_allclose(p.asnumpy(), expected[p.name], rtol=1e-5, atol=2e-5, err_msg=p.name)
    assert int(optimizer.global_step.asnumpy()[0]) == 3


def test_warmup_polynomial_decay_values():
    schedule = WarmupPolynomialDecay(1e-3, warmup_steps=10, decay_steps=100, end_learning_rate=1e-5, power=1.0)
    expected = {0: 0.0, 5: 5e-4, 10: (1e-3 - 1e-5) * 0.9 + 1e-5, 55: (1e-3 - 1e-5) * 0.45 + 1e-5,
                100: 1e-5, 150: 1e-5}
    for step, value in expected.items():
        assert schedule.value(step) == pytest.approx(value, rel=1e-5, abs=1e-12), step
    squared = WarmupPolynomialDecay(1.0, warmup_steps=0, decay_steps=10, power=2.0)
    assert squared.value(0) == pytest.approx(1.0)
    assert squared.value(5) == pytest.approx(0.25)


def test_optimizer_uses_schedule_at_applied_updates():
    """The first update uses lr(0) (= 0 during warmup), the second lr(1): nothing moves on step one."""
    net = Tiny(np.random.default_rng(1))
    params = net.trainable_params()
    optimizer = build_optimizer("adamw", params, WarmupPolynomialDecay(0.1, 2, 10), weight_decay=0.0)
    before = [p.asnumpy().copy() for p in params]
    grads = tuple(Tensor(np.ones(p.shape, np.float32)) for p in params)
    optimizer(grads)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.asnumpy(), b)
    optimizer(grads)
    moved = params[0].asnumpy() - before[0]
    # lr(1) = 0.1 * 1/2; m = 0.19, v = 0.001999 after two unit gradients.
    np.testing.assert_allclose(moved, -0.05 * 0.19 / (np.sqrt(0.001999) + 1e-6), rtol=1e-5)


def test_bad_optimizer_name():
    with pytest.raises(SmallBertError, match="--optimizer"):
        build_optimizer("sgd", Tiny(np.random.default_rng(0)).trainable_params(), 0.1)
