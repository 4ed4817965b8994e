"""Optimizers and schedule against float64 NumPy references of Google's formulas."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, Tensor, nn

from smallbert import cpu_kernels
from smallbert.errors import SmallBertError
from smallbert.optim import WarmupPolynomialDecay, build_optimizer, excluded_from_weight_decay


def reference_step(name, params, grads, state, lr, weight_decay, step, beta1=0.9, beta2=0.999, eps=1e-6):
    """One update in float64, in place; `step` is 1-based. adamw: Google's AdamWeightDecay (no bias correction).
    lamb: You et al. 2019, Algorithm 2, with TF-Addons' default exclusions: LayerNorm and bias parameters get
    neither weight decay nor the trust ratio (phi = identity; ratio 1 where a norm is zero)."""
    for key, w in params.items():
        excluded = "LayerNorm" in key or key.endswith("bias")
        g = grads[key]
        m = state.setdefault(f"m.{key}", np.zeros_like(w))
        v = state.setdefault(f"v.{key}", np.zeros_like(w))
        m[...] = beta1 * m + (1 - beta1) * g
        v[...] = beta2 * v + (1 - beta2) * g * g
        if name == "adamw":
            update = m / (np.sqrt(v) + eps) + (0.0 if excluded else weight_decay) * w
            w -= lr * update
            continue
        m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
        r = m_hat / (np.sqrt(v_hat) + eps) + (0.0 if excluded else weight_decay) * w
        w_norm, r_norm = np.linalg.norm(w), np.linalg.norm(r)
        ratio = w_norm / r_norm if not excluded and w_norm > 0 and r_norm > 0 else 1.0
        w -= lr * ratio * r


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
@pytest.mark.parametrize("scheduled", [False, True])
def test_optimizer_matches_numpy_reference(name, scheduled):
    rng = np.random.default_rng(0)
    net = Tiny(rng)
    params = net.trainable_params()
    weight_decay = 0.1
    schedule = WarmupPolynomialDecay(0.05, warmup_steps=2, decay_steps=5, end_learning_rate=0.01)
    optimizer = build_optimizer(name, params, schedule if scheduled else 0.05, weight_decay=weight_decay)
    step_fn = ms.jit(optimizer)
    expected = {p.name: p.asnumpy().astype(np.float64) for p in params}
    state = {}
    for step in range(1, 5):
        grads = {p.name: rng.normal(size=p.shape) for p in params}
        step_fn(tuple(Tensor(grads[p.name].astype(np.float32)) for p in params))
        lr = schedule.value(step - 1) if scheduled else 0.05
        reference_step(name, expected, grads, state, lr, weight_decay, step)
    # MindSpore's fused CPU AdamWeightDecay kernel divides with ~1e-5 relative error; a wrongly decayed tensor
    # would be off by lr * weight_decay * |w| ~ 5e-3 per step, far outside this tolerance.
    for p in params:
        np.testing.assert_allclose(p.asnumpy(), expected[p.name], rtol=1e-5, atol=2e-5, err_msg=p.name)
    assert int(optimizer.global_step.asnumpy()[0]) == 4


@pytest.mark.skipif(not cpu_kernels.enabled(), reason="no C++ compiler for the fused CPU kernels")
def test_adamw_forms_one_minus_beta_in_double_as_google_does():
    """After one update from zero moments, m = float32(1 - 0.9)·g and v = float32(1 - 0.999)·g², the constants
    formed in double and then rounded, as Google's TF code and torch do. MindSpore's nn.AdamWeightDecay kernel
    forms 1 - float32(0.999) = 0.00099998713 and gives v 1.29e-5 too small: outside this tolerance."""
    weight = Parameter(Tensor(np.ones(3, np.float32)), name="dense.weight")
    optimizer = build_optimizer("adamw", [weight], 0.1, weight_decay=0.0)
    gradient = np.array([1.0, 2.0, 3.0], np.float32)
    ms.jit(optimizer)((Tensor(gradient),))
    np.testing.assert_allclose(optimizer.moments1[0].asnumpy(), np.float32(1 - 0.9) * gradient, rtol=2e-7)
    np.testing.assert_allclose(optimizer.moments2[0].asnumpy(), np.float32(1 - 0.999) * gradient ** 2, rtol=2e-7)


def test_lamb_moves_a_zero_bias_by_about_lr_per_step():
    """Under Google's warmup, a zero-initialised bias with a steady gradient moves by ~lr(t) per update (Adam's
    |m/sqrt(v)| ~ 1). With a trust ratio it would move by lr(t) times its own norm: after warmup's lr(0) = 0 it is
    still zero, then ~lr(1), then ~lr(1)·lr(2), ... and stay frozen."""
    net = Tiny(np.random.default_rng(2))
    params = net.trainable_params()
    schedule = WarmupPolynomialDecay(1e-2, warmup_steps=5, decay_steps=20)
    optimizer = build_optimizer("lamb", params, schedule, weight_decay=0.01)
    step_fn = ms.jit(optimizer)
    grads = tuple(Tensor(np.full(p.shape, 0.3, np.float32)) for p in params)
    for _ in range(10):
        step_fn(grads)
    bias = net.dense_bias.asnumpy()
    moved = sum(schedule.value(t) for t in range(10))
    np.testing.assert_allclose(bias, -moved, rtol=1e-3)
    # The adaptation is still on for the weight matrix, and can be switched off for everything.
    adapted = Tiny(np.random.default_rng(2))
    plain = Tiny(np.random.default_rng(2))
    for net_, exclude in ((adapted, None), (plain, lambda name: True)):
        opt = build_optimizer("lamb", net_.trainable_params(), 1e-2, weight_decay=0.0,
                              exclude_from_layer_adaptation=exclude)
        ms.jit(opt)(tuple(Tensor(np.full(p.shape, 0.3, np.float32)) for p in net_.trainable_params()))
    start = Tiny(np.random.default_rng(2)).dense_weight.asnumpy()
    w_norm = np.linalg.norm(start)
    np.testing.assert_allclose(adapted.dense_weight.asnumpy(), start - 1e-2 * w_norm / np.sqrt(start.size),
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(plain.dense_weight.asnumpy(), start - 1e-2, rtol=1e-4, atol=1e-7)


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
