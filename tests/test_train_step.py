"""TrainStep: accumulation, loss scaling and overflow skipping, the masked-LM loss (tiny BERT, synthetic data)."""
import dataclasses

import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from smallbert import BertForPreTraining
from smallbert.optim import WarmupPolynomialDecay, build_optimizer
from smallbert.pretrain import BertPreTrainingMetrics, BertPreTrainingWithLoss, evaluate, masked_lm_loss
from smallbert.train import DynamicLossScale, TrainStep
from smallbert.weights import assign
from test_optim import reference_step


def synthetic_batch(rng, batch_size, seq_length=16, predictions=4, vocab_size=128, real_predictions=None):
    """A pretraining batch in PRETRAINING_COLUMNS order; row r has `real_predictions[r]` weighted slots (an int:
    the same for all rows; None: all `predictions`)."""
    real = np.broadcast_to(predictions if real_predictions is None else real_predictions, (batch_size,))
    input_ids = rng.integers(5, vocab_size, (batch_size, seq_length)).astype(np.int32)
    input_mask = np.ones((batch_size, seq_length), np.int32)
    segment_ids = np.zeros((batch_size, seq_length), np.int32)
    segment_ids[:, seq_length // 2:] = 1
    positions = np.stack([np.sort(rng.choice(np.arange(1, seq_length), predictions, replace=False))
                          for _ in range(batch_size)]).astype(np.int32)
    masked_lm_ids = rng.integers(5, vocab_size, (batch_size, predictions)).astype(np.int32)
    padded = np.arange(predictions)[None, :] >= real[:, None]
    weights = np.where(padded, 0.0, 1.0).astype(np.float32)
    positions[padded] = 0
    masked_lm_ids[padded] = 0
    next_sentence_labels = rng.integers(0, 2, (batch_size, 1)).astype(np.int32)
    return input_ids, input_mask, segment_ids, positions, masked_lm_ids, weights, next_sentence_labels


def build_step(config, accumulation_steps):
    """SGD keeps the check about gradients: Adam's m/sqrt(v) would amplify float noise in near-zero gradients."""
    ms.set_seed(0)
    model = BertForPreTraining(config)
    model.set_train(True)
    net = BertPreTrainingWithLoss(model)
    optimizer = nn.SGD(net.trainable_params(), learning_rate=0.5)
    return TrainStep(net, optimizer, accumulation_steps=accumulation_steps, loss_scale=DynamicLossScale())


def copy_state(source: TrainStep, target: TrainStep):
    """Through weights.assign, which (unlike set_data) reaches graphs that have already run."""
    target_params = {p.name: p for p in target.get_parameters()}
    for p in source.get_parameters():
        if p.name in target_params:
            assign(target_params[p.name], p.asnumpy().copy())


@pytest.fixture(scope="module")
def steps(tiny_config):
    config = dataclasses.replace(tiny_config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return build_step(config, 1), build_step(config, 4)


def test_accumulation_equals_one_big_batch(steps):
    whole, accumulated = steps
    copy_state(whole, accumulated)
    initial = [p.asnumpy().copy() for p in whole.net_with_loss.trainable_params()]
    rng = np.random.default_rng(0)
    for _ in range(2):
        # Micro-batches of 2 rows hold 2, 4, 6 and 8 real predictions: each must weigh by the whole batch's count.
        batch = synthetic_batch(rng, 8, real_predictions=[1, 1, 2, 2, 3, 3, 4, 4])
        out_whole = whole.step(*batch)
        out_accumulated = accumulated.step(*batch)
        assert out_accumulated.loss == pytest.approx(out_whole.loss, abs=1e-5)
        np.testing.assert_allclose(out_accumulated.aux, out_whole.aux, atol=1e-5)
    for p, q in zip(whole.net_with_loss.trainable_params(), accumulated.net_with_loss.trainable_params()):
        np.testing.assert_allclose(q.asnumpy(), p.asnumpy(), atol=1e-5, err_msg=p.name)
    # The updates were real: lr 0.5 moves the weights far more than the tolerance.
    moved = max(float(np.abs(p.asnumpy() - b).max())
                for p, b in zip(whole.net_with_loss.trainable_params(), initial))
    assert moved > 1e-3


def test_overflow_skips_update_and_lowers_scale(steps):
    step = steps[0]
    params = step.net_with_loss.trainable_params()
    before = [p.asnumpy().copy() for p in params]
    ops.assign(step.loss_scale.scale, Tensor(3e38, ms.float32))  # loss × scale = inf: every gradient overflows
    out = step.step(*synthetic_batch(np.random.default_rng(1), 8))
    assert out.overflow
    assert out.loss_scale == pytest.approx(1.5e38, rel=1e-6)
    assert int(step.loss_scale.good_steps.asnumpy()) == 0
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.asnumpy(), b, err_msg=p.name)
    ops.assign(step.loss_scale.scale, Tensor(1024.0, ms.float32))
    out = step.step(*synthetic_batch(np.random.default_rng(2), 8))
    assert not out.overflow and out.loss_scale == 1024.0
    assert int(step.loss_scale.good_steps.asnumpy()) == 1
    assert any(not np.array_equal(p.asnumpy(), b) for p, b in zip(params, before))


def test_clipping_uses_the_unscaled_gradient_norm(steps):
    """One SGD step (lr 0.5, loss scale 65536, clip 1.0) moves the weights by lr × g × min(1, 1/‖g‖) of the true
    gradient g: clipping the scaled gradient would shrink the step 65536-fold."""
    step = steps[0]
    ops.assign(step.loss_scale.scale, Tensor(65536.0, ms.float32))
    net = step.net_with_loss
    params = net.trainable_params()
    batch = tuple(Tensor(x) for x in synthetic_batch(np.random.default_rng(3), 8))
    grad_fn = ms.value_and_grad(lambda *b: net(*b)[0], None, params)
    _, grads = grad_fn(*batch)
    grads = [g.asnumpy().astype(np.float64) for g in grads]
    norm = np.sqrt(sum((g * g).sum() for g in grads))
    assert norm > 1.0  # so that clipping is active
    before = [p.asnumpy().copy() for p in params]
    assert not step.step(*batch).overflow
    for p, b, g in zip(params, before, grads):
        np.testing.assert_allclose(p.asnumpy(), b - 0.5 * g / norm, rtol=1e-4, atol=1e-6, err_msg=p.name)


class LinearLoss(nn.Cell):
    """loss = Σ w · a over parameters named like BERT's (decayed weight, bias, LayerNorm weight): the gradient
    with respect to each parameter is exactly its input a, so a reference needs no autodiff."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(5)
        self.weight = Parameter(Tensor(rng.normal(size=(4, 3)).astype(np.float32)), name="dense.weight")
        self.bias = Parameter(Tensor(np.zeros(4, np.float32)), name="dense.bias")
        self.ln_weight = Parameter(Tensor(np.ones(4, np.float32)), name="LayerNorm.weight")

    def construct(self, a_weight, a_bias, a_ln_weight):
        return (self.weight * a_weight).sum() + (self.bias * a_bias).sum() + (self.ln_weight * a_ln_weight).sum()


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_skip_and_clip_with_adaptive_optimizers_under_a_schedule(name):
    """AdamWeightDecay and Lamb behind TrainStep, with warmup + decay, a loss scale and clipping: the weights follow
    the float64 reference fed the unscaled gradient clipped to norm 1 at lr(number of updates so far); a step with
    an inf gradient changes no weight, moment or update count, and halves the loss scale."""
    net = LinearLoss()
    params = net.trainable_params()
    schedule = WarmupPolynomialDecay(0.05, warmup_steps=2, decay_steps=5, end_learning_rate=0.01)
    optimizer = build_optimizer(name, params, schedule, weight_decay=0.1)
    step = TrainStep(net, optimizer, max_grad_norm=1.0, loss_scale=DynamicLossScale(init_scale=1024.0))
    expected = {p.name: p.asnumpy().astype(np.float64) for p in params}
    state, updates, scale = {}, 0, 1024.0
    rng = np.random.default_rng(6)
    for i in range(7):
        grads = {p.name: 3.0 * rng.normal(size=p.shape) for p in params}  # norm ~10: clipping is active
        overflow = i in (1, 4)
        if overflow:
            grads["dense.weight"][0, 0] = np.inf
        before = [p.asnumpy().copy() for p in optimizer.get_parameters()]  # weights, moments, global_step
        out = step.step(*(grads[p.name].astype(np.float32) for p in params))
        assert out.overflow == overflow
        if overflow:
            scale /= 2
            for p, b in zip(optimizer.get_parameters(), before):
                np.testing.assert_array_equal(p.asnumpy(), b, err_msg=p.name)
        else:
            norm = np.sqrt(sum((g * g).sum() for g in grads.values()))
            clipped = {k: g * min(1.0, 1.0 / norm) for k, g in grads.items()}
            reference_step(name, expected, clipped, state, schedule.value(updates), 0.1, updates + 1)
            updates += 1
        assert out.loss_scale == scale
        assert int(optimizer.global_step.asnumpy()[0]) == updates
    assert updates == 5
    for p in params:
        np.testing.assert_allclose(p.asnumpy(), expected[p.name], rtol=1e-5, atol=2e-5, err_msg=p.name)


def test_bias_add_gradient():
    from smallbert.model import BiasAdd

    x = Tensor(np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32))
    bias = Tensor(np.array([0.1, 0.2, 0.3], np.float32))
    weights = Tensor(np.arange(15, dtype=np.float32).reshape(5, 3))
    dx, dbias = ms.grad(lambda x, b: (BiasAdd()(x, b) * weights).sum(), grad_position=(0, 1))(x, bias)
    np.testing.assert_allclose(dx.asnumpy(), weights.asnumpy())
    np.testing.assert_allclose(dbias.asnumpy(), weights.asnumpy().sum(0))


def test_dynamic_loss_scale_grows_after_window():
    scale = DynamicLossScale(init_scale=8.0, factor=2.0, window=2)
    no = Tensor(False)
    assert float(scale.update(no).asnumpy()) == 8.0
    assert float(scale.update(no).asnumpy()) == 16.0
    assert float(scale.update(Tensor(True)).asnumpy()) == 8.0
    tiny = DynamicLossScale(init_scale=1.0)
    assert float(tiny.update(Tensor(True)).asnumpy()) == 1.0  # never below 1


def test_masked_lm_loss_ignores_padded_predictions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
    ids = rng.integers(0, 11, (2, 5)).astype(np.int32)
    weights = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], np.float32)
    loss = float(masked_lm_loss(Tensor(logits), Tensor(ids), Tensor(weights)).asnumpy())
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, ids[..., None], -1)[..., 0]
    assert loss == pytest.approx((nll * weights).sum() / (weights.sum() + 1e-5), rel=1e-5)
    # Garbage logits and ids in the padded slots change nothing.
    logits[weights == 0] = 1e4
    ids[weights == 0] = 3
    again = float(masked_lm_loss(Tensor(logits), Tensor(ids), Tensor(weights)).asnumpy())
    assert again == pytest.approx(loss, rel=1e-6)


def test_eval_perplexity_is_exp_of_the_mean_nll_over_real_predictions(tiny_config):
    """evaluate()'s perplexity against NumPy from the model's own logits: exp of the nll averaged over the
    predictions with weight 1, over all batches (not a mean of per-batch means); padded slots hold garbage ids."""
    ms.set_seed(3)
    model = BertForPreTraining(tiny_config)
    model.set_train(False)
    rng = np.random.default_rng(5)
    batches = [synthetic_batch(rng, 3, real_predictions=[4, 1, 2]), synthetic_batch(rng, 2, real_predictions=[3, 0])]
    for batch in batches:
        batch[4][batch[5] == 0] = 7  # masked_lm_ids of padded slots: must count for nothing
    result = evaluate(BertPreTrainingMetrics(model), batches)

    nll, weight = 0.0, 0.0
    for ids, mask, segments, positions, labels, weights, _ in batches:
        logits = model(Tensor(ids), Tensor(segments), Tensor(mask), Tensor(positions))[0].asnumpy().astype(np.float64)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll += (-np.take_along_axis(log_probs, labels[..., None], -1)[..., 0] * weights).sum()
        weight += weights.sum()
    assert weight == 10
    assert result["eval_mlm_loss"] == pytest.approx(nll / weight, rel=1e-5)
    assert result["eval_perplexity"] == pytest.approx(np.exp(nll / weight), rel=1e-5)
