"""The fused CPU kernels give MindSpore's own ops' (or float64 NumPy's) values and gradients; the fused dropout draws
masks that depend only on (seed, site, step), and so does the fused residual block end; and the model falls back to
MindSpore's ops when the kernels can't be built or are switched off."""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn, ops
from smallbert import BertForPreTraining, cpu_kernels
from smallbert.pretrain import token_nll
from smallbert.train import global_norm
from smallbert.weights import assign

needs_kernels = pytest.mark.skipif(cpu_kernels.library() is None, reason="no C++ compiler to build the kernels")


class Backward(nn.Cell):
    """(inputs..., sens) → (output, gradients of sum(output * sens) w.r.t. every input)."""

    def __init__(self, net: nn.Cell):
        super().__init__()
        self.net = net
        self.grad = ops.GradOperation(get_all=True, sens_param=True)

    def construct(self, *args):
        return self.net(*args[:-1]), self.grad(self.net)(*args)


class FirstOutput(nn.Cell):
    def __init__(self, layer_norm):
        super().__init__()
        self.layer_norm = layer_norm

    def construct(self, x, gamma, beta):
        return self.layer_norm(x, gamma, beta)[0]


@needs_kernels
@pytest.mark.parametrize("shape", [(3, 5, 37), (300, 256)])  # odd H; enough rows to split over threads
def test_layer_norm_matches_mindspore(shape):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal(shape, dtype=np.float32) * 3 + 1)
    gamma = Tensor(rng.standard_normal(shape[-1:], dtype=np.float32))
    beta = Tensor(rng.standard_normal(shape[-1:], dtype=np.float32))
    sens = Tensor(rng.standard_normal(shape, dtype=np.float32))
    results = []
    for layer_norm in (cpu_kernels.FusedLayerNorm(1e-12), ops.LayerNorm(-1, -1, 1e-12)):
        y, grads = Backward(FirstOutput(layer_norm))(x, gamma, beta, sens)
        results.append([y.asnumpy()] + [g.asnumpy() for g in grads])
    for fused, stock, name in zip(*results, ("y", "dx", "dgamma", "dbeta")):
        scale = max(1.0, float(np.abs(stock).max()))
        np.testing.assert_allclose(fused, stock, rtol=0, atol=2e-6 * scale, err_msg=name)


@needs_kernels
@pytest.mark.parametrize("rows", [7, 150])  # below and above the threading threshold
def test_bias_gelu_matches_the_erf_formula(rows):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, 1001)).astype(np.float32) * 3
    x[0, :6] = [0.0, -0.0, 12.0, -12.0, 1e-20, -40.0]
    bias = rng.standard_normal(1001).astype(np.float32)
    bias[:6] = 0.0
    sens = rng.standard_normal(x.shape).astype(np.float32)
    y, (dx, dbias) = Backward(cpu_kernels.FusedBiasGelu())(Tensor(x), Tensor(bias), Tensor(sens))
    v = x.astype(np.float64) + bias
    cdf = 0.5 * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))
    pdf = np.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)
    expected_dx = sens * (cdf + v * pdf)
    assert (np.abs(y.asnumpy() - v * cdf) / np.maximum(1, np.abs(v))).max() <= 1e-6
    assert (np.abs(dx.asnumpy() - expected_dx) / np.maximum(1, np.abs(sens))).max() <= 1e-6
    np.testing.assert_allclose(dbias.asnumpy(), expected_dx.sum(0), rtol=0, atol=1e-5 * math.sqrt(rows))


class ResidualBlockEnd(nn.Cell):
    """LayerNorm(dropout(h + bias) + residual) from the separate kernels, or fused (the two paths of
    `model.BertResidualOutput`), sharing one dropout layer's stream and step counter."""

    def __init__(self, fused: bool, p: float):
        super().__init__()
        self.dropout = cpu_kernels.FusedDropout(p)
        self.layer_norm = cpu_kernels.FusedLayerNorm(1e-12)
        self.fused = cpu_kernels.FusedResidualLayerNorm(1e-12) if fused else None

    def construct(self, h, bias, residual, gamma, beta):
        if self.fused is None:
            return self.layer_norm(self.dropout(ops.bias_add(h, bias)) + residual, gamma, beta)[0]
        keep = self.dropout.keep_prob if self.training else ops.ones_like(self.dropout.keep_prob)
        y = self.fused(h, bias, residual, gamma, beta, self.dropout.stream, self.dropout.step, keep)[0]
        if self.training:
            y = self.dropout.counted(y)
        return y


@needs_kernels
@pytest.mark.parametrize("train", [True, False])
def test_residual_layer_norm_is_the_separate_kernels_fused(train):
    """Same masks (element for element), the same forward to the bit, the same gradients to float rounding; the
    step counter advances only in training."""
    rng = np.random.default_rng(2)
    shape = (300, 96)
    h, residual, sens = (Tensor(rng.standard_normal(shape, dtype=np.float32)) for _ in range(3))
    bias, gamma, beta = (Tensor(rng.standard_normal(shape[-1:], dtype=np.float32)) for _ in range(3))
    results = []
    for fused in (True, False):
        ms.set_seed(5)
        cell = ResidualBlockEnd(fused, 0.3)
        cell.set_train(train)
        y, grads = Backward(cell)(h, bias, residual, gamma, beta, sens)
        assert int(cell.dropout.step.asnumpy()[0]) == 2 * train  # Backward runs the cell twice
        results.append([y.asnumpy()] + [g.asnumpy() for g in grads])
    np.testing.assert_array_equal(results[0][0], results[1][0])
    dropped = results[0][1] == 0
    assert (0.2 < dropped.mean() < 0.4) if train else not dropped.any()
    for fused, separate, name in zip(results[0][1:], results[1][1:], ("dh", "dbias", "dresidual", "dgamma", "dbeta")):
        np.testing.assert_allclose(fused, separate, rtol=0, atol=1e-5 * max(1.0, np.abs(separate).max()),
                                   err_msg=name)


class AttentionProbs(nn.Cell):
    """dropout(softmax(scale · scores + bias)) from the separate kernels, or fused (the two training paths of
    `model.BertSelfAttention`), sharing one dropout layer's stream and step counter."""

    def __init__(self, fused: bool, p: float):
        super().__init__()
        self.dropout = cpu_kernels.FusedDropout(p)
        self.softmax = cpu_kernels.FusedMaskedSoftmax()
        self.fused = cpu_kernels.FusedMaskedSoftmaxDropout() if fused else None
        self.scale = Tensor([0.125], ms.float32)

    def construct(self, scores, bias):
        if self.fused is None:
            return self.dropout(self.softmax(scores, bias, self.scale))
        drop = self.dropout
        return drop.counted(self.fused(scores, bias, self.scale, drop.stream, drop.step, drop.keep_prob)[0])


@needs_kernels
def test_masked_softmax_dropout_is_the_separate_kernels_fused():
    """Same masks (element for element) and the same forward and gradient to the bit; the step counts each call."""
    rng = np.random.default_rng(6)
    shape = (3, 4, 40, 40)  # 480 rows: split over threads
    scores, sens = (Tensor(rng.standard_normal(shape).astype(np.float32) * 4) for _ in range(2))
    bias = np.zeros((3, 1, 1, 40), np.float32)
    bias[1, ..., -5:] = -10000.0
    results = []
    for fused in (True, False):
        ms.set_seed(5)
        cell = AttentionProbs(fused, 0.3)
        cell.set_train(True)
        y, (dscores, _) = Backward(cell)(scores, Tensor(bias), sens)
        assert int(cell.dropout.step.asnumpy()[0]) == 2  # Backward runs the cell twice
        results.append((y.asnumpy(), dscores.asnumpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert 0.2 < (results[0][0] == 0).mean() < 0.4


@needs_kernels
def test_attention_heads_in_and_out_are_bias_adds_and_transposes():
    """QkvHeads: q, k, v = the projection's three slices plus their biases, as [B, A, S, D]; its backward moves the
    gradients back and sums them for the biases. MergeHeads: [B, A, S, D] → [B, S, A, D] and back."""
    rng = np.random.default_rng(3)
    b, s, a, d = 3, 40, 4, 8  # 120 rows: split over threads
    x = rng.standard_normal((b, s, 3, a, d), dtype=np.float32)
    bias = rng.standard_normal((3, a, d), dtype=np.float32)
    sens = [rng.standard_normal((b, a, s, d), dtype=np.float32) for _ in range(3)]

    class Weighted(nn.Cell):  # sum of each head tensor times its sens, so one backward reaches all three
        def __init__(self):
            super().__init__()
            self.heads = cpu_kernels.FusedQkvHeads()

        def construct(self, x, bias, sq, sk, sv):
            q, k, v = self.heads(x, bias)
            return (q * sq).sum() + (k * sk).sum() + (v * sv).sum(), q, k, v

    inputs = [Tensor(x), Tensor(bias)] + [Tensor(t) for t in sens]
    (_, *heads), (dx, dbias) = ms.value_and_grad(Weighted(), (0, 1), has_aux=True)(*inputs)
    for t, head in enumerate(heads):
        np.testing.assert_array_equal(head.asnumpy(), (x[:, :, t] + bias[t]).transpose(0, 2, 1, 3))
    expected_dx = np.stack([g.transpose(0, 2, 1, 3) for g in sens], axis=2)
    np.testing.assert_array_equal(dx.asnumpy(), expected_dx)
    np.testing.assert_allclose(dbias.asnumpy(), expected_dx.sum((0, 1)), rtol=1e-5, atol=1e-5)

    context = rng.standard_normal((b, a, s, d), dtype=np.float32)
    sens_rows = rng.standard_normal((b, s, a, d), dtype=np.float32)
    y, (dcontext,) = Backward(cpu_kernels.FusedMergeHeads())(Tensor(context), Tensor(sens_rows))
    np.testing.assert_array_equal(y.asnumpy(), context.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(dcontext.asnumpy(), sens_rows.transpose(0, 2, 1, 3))


@needs_kernels
def test_release_freed_heap_runs_in_a_graph_and_returns_done():
    """The op trims the heap once per process; every call (in graph mode, as TrainStep runs it) returns done = 1."""
    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.release = cpu_kernels.release_freed_heap()

        @ms.jit
        def construct(self, x):
            return ops.depend(x * 2, self.release(x)), self.release(x)

    net = Net()
    for _ in range(2):
        y, done = net(Tensor(np.ones((2, 3), np.int32)))
        np.testing.assert_array_equal(y.asnumpy(), np.full((2, 3), 2))
        np.testing.assert_array_equal(done.asnumpy(), [1.0])


class WeightedNll(nn.Cell):
    """sum(w · nll) of logits + bias through `softmax_nll`: a FusedSoftmaxNll, or None for MindSpore's
    log_softmax + gather."""

    def __init__(self, softmax_nll):
        super().__init__()
        self.softmax_nll = softmax_nll

    def construct(self, logits, bias, labels, weights):
        return (token_nll(logits, labels, self.softmax_nll, bias) * weights).sum()


@needs_kernels
@pytest.mark.parametrize("shape", [(5, 2), (64, 30522)])  # NSP's two classes; MLM rows over BERT's vocabulary
def test_softmax_nll_matches_float64_and_its_gradient_rows_sum_to_zero(shape):
    """Loss and gradients (logits and bias) against float64 NumPy. Each gradient row, w·(softmax - onehot), must sum
    to ~0: with MindSpore's float32 log_softmax the rows sum to ~3e-7 on average at V=30522 (measured), all of one
    sign."""
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal(shape) * 3).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    labels = rng.integers(0, shape[1], shape[0]).astype(np.int32)
    weights = rng.random(shape[0]).astype(np.float32)
    loss, (dlogits, dbias) = ms.value_and_grad(WeightedNll(cpu_kernels.FusedSoftmaxNll()), (0, 1))(
        Tensor(logits), Tensor(bias), Tensor(labels), Tensor(weights))
    x = logits.astype(np.float32) + bias  # the kernel adds the bias in float32, as a BiasAdd would
    x = x.astype(np.float64)
    lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
    rows = np.arange(shape[0])
    expected_loss = ((lse - x[rows, labels]) * weights).sum()
    expected = np.exp(x - lse[:, None])
    expected[rows, labels] -= 1
    expected *= weights[:, None]
    assert abs(float(loss.asnumpy()) - expected_loss) <= 1e-6 * expected_loss
    gradient = dlogits.asnumpy().astype(np.float64)
    np.testing.assert_allclose(gradient, expected, rtol=0, atol=1e-7)
    assert abs(gradient.sum(1).mean()) < 2e-8 and np.abs(gradient.sum(1)).max() < 1e-7
    np.testing.assert_allclose(dbias.asnumpy(), expected.sum(0), rtol=0, atol=1e-6)
    # summed in float32, the bias gradient's columns lost -1.0e-6 at V=30522; in double only their last roundings
    assert abs(float(dbias.asnumpy().astype(np.float64).sum())) < 5e-7


class StockMaskedSoftmax(nn.Cell):
    def construct(self, scores, bias, scale):
        return ops.softmax(scores * scale + bias, axis=-1)


@needs_kernels
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (8, 4, 64, 64)])  # odd sizes; enough rows to split over threads
def test_masked_softmax_matches_mindspore(shape):
    rng = np.random.default_rng(4)
    scores = Tensor(rng.standard_normal(shape).astype(np.float32) * 4)
    bias = np.zeros((shape[0], 1, 1, shape[3]), np.float32)
    bias[:, :, :, -2:] = -10000.0  # masked keys
    scale = Tensor([0.125], ms.float32)
    sens = Tensor(rng.standard_normal(shape).astype(np.float32))
    results = [Backward(net)(scores, Tensor(bias), scale, sens)
               for net in (cpu_kernels.FusedMaskedSoftmax(), StockMaskedSoftmax())]
    (fused, (fused_grad, *_)), (stock, (stock_grad, *_)) = results
    np.testing.assert_allclose(fused.asnumpy(), stock.asnumpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fused_grad.asnumpy(), stock_grad.asnumpy(), rtol=0, atol=1e-6)
    assert float(np.abs(fused.asnumpy()[..., -2:]).max()) == 0.0


@needs_kernels
@pytest.mark.parametrize("size", [1001, 300_000])  # below and above the threading threshold
def test_squared_sum_matches_float64(size):
    x = np.random.default_rng(3).standard_normal(size).astype(np.float32) * 100
    assert float(cpu_kernels.squared_sum()(Tensor(x)).asnumpy()[0]) == pytest.approx(
        float((x.astype(np.float64) ** 2).sum()), rel=1e-7)
    x16 = Tensor(np.full((64,), 300.0, np.float16))  # squares above float16's max: global_norm casts first
    assert float(global_norm([x16, x16], cpu_kernels.squared_sum()).asnumpy()) == pytest.approx(
        300.0 * np.sqrt(128), rel=1e-6)


@needs_kernels
def test_softmax_nll_refuses_a_label_outside_the_classes():
    nll, _ = cpu_kernels.FusedSoftmaxNll()(Tensor(np.zeros((2, 3), np.float32)), Tensor(np.zeros(3, np.float32)),
                                           Tensor(np.array([0, 3], np.int32)))
    with pytest.raises(RuntimeError, match="SoftmaxNllForward"):
        nll.asnumpy()


@needs_kernels
def test_model_gives_the_same_loss_and_gradients_without_the_kernels(tiny_config, pretraining_batch, monkeypatch):
    from smallbert.pretrain import BertPreTrainingWithLoss

    ids, types, mask, positions = pretraining_batch
    batch = [Tensor(x) for x in (ids, mask, types, positions, np.take_along_axis(ids, positions, 1),
                                 np.array([[1, 1, 0], [1, 1, 1], [1, 0, 1]], np.float32),
                                 np.array([[0], [1], [1]], np.int32))]

    def loss_and_grads(model):
        model.set_train(False)  # no dropout: the two models must see identical computations
        net = BertPreTrainingWithLoss(model)
        grad = ops.value_and_grad(lambda *b: net(*b)[0], None, net.trainable_params())
        loss, grads = grad(*batch)
        return float(loss), {p.name: g.asnumpy() for p, g in zip(net.trainable_params(), grads)}

    fused = BertForPreTraining(tiny_config)
    assert isinstance(fused.bert.embeddings.LayerNorm.layer_norm, cpu_kernels.FusedLayerNorm)
    monkeypatch.setenv("SMALLBERT_FUSED_KERNELS", "0")
    stock = BertForPreTraining(tiny_config)
    assert isinstance(stock.bert.embeddings.LayerNorm.layer_norm, ops.LayerNorm)
    weights = fused.parameters_dict()
    for name, param in stock.parameters_dict().items():
        assign(param, weights[name].asnumpy())
    fused_loss, fused_grads = loss_and_grads(fused)
    stock_loss, stock_grads = loss_and_grads(stock)
    assert abs(fused_loss - stock_loss) <= 1e-5
    assert fused_grads.keys() == stock_grads.keys()
    for name, g in stock_grads.items():
        np.testing.assert_allclose(fused_grads[name], g, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("env", [{"CXX": "no-such-compiler"}, {"CXX": "false"},
                                 {"MS_CUSTOM_AOT_WHITE_LIST": "/somewhere/else"}])
def test_falls_back_when_the_kernels_cannot_be_built(tmp_path, monkeypatch, caplog, env):
    """No compiler, one that fails, or MindSpore would refuse the library: a warning, and MindSpore's ops."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SMALLBERT_CACHE_DIR", str(tmp_path / "cache"))
    cpu_kernels.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="smallbert"):
            assert cpu_kernels.library() is None
            assert not cpu_kernels.enabled()
        assert cpu_kernels.FALLBACK in caplog.text
        assert not list((tmp_path / "cache").glob("*")), "no half-written library is left behind"
    finally:
        monkeypatch.undo()
        cpu_kernels.library.cache_clear()


def test_switched_off_inside_disabled():
    with cpu_kernels.disabled():
        assert not cpu_kernels.enabled()


def dropout_call(cell, x):
    """One forward and backward through the cell: y, and the gradient of sum(y · sens) for sens = 1 + index."""
    sens = Tensor(np.arange(1, x.size + 1, dtype=np.float32).reshape(x.shape))

    def forward(inputs):
        y = cell(inputs)
        return (y * sens).sum(), y

    (_, y), dx = ms.value_and_grad(forward, has_aux=True)(Tensor(x))
    return y.asnumpy(), dx.asnumpy(), sens.asnumpy()


@needs_kernels
@pytest.mark.parametrize("size", [1000, 200_000])  # below and above the threading threshold
def test_dropout_is_a_function_of_seed_site_and_step(size):
    ms.set_seed(11)
    cell = cpu_kernels.FusedDropout(0.25)
    cell.set_train(True)
    x = np.full(size, 2.0, np.float32)
    y, dx, sens = dropout_call(cell, x)
    kept = y != 0
    tolerance = 0.05 if size < 10_000 else 0.005  # >= 3.5 standard deviations of a proportion
    assert abs(1 - kept.mean() - 0.25) < tolerance
    np.testing.assert_allclose(y[kept], 2.0 / 0.75, rtol=1e-6)
    np.testing.assert_allclose(dx, sens * kept / 0.75, rtol=1e-6)  # the backward applies the forward's mask
    assert int(cell.step.asnumpy()[0]) == 1
    again, _, _ = dropout_call(cell, x)
    assert not np.array_equal(again != 0, kept), "each step draws a new mask"

    twin = cpu_kernels.FusedDropout(0.25)  # same seed and site: the same sequence of masks
    twin.set_train(True)
    assert np.array_equal(dropout_call(twin, x)[0], y)
    assign(cell.step, np.zeros(1, np.int32))  # a restored step replays its masks: what resume relies on
    assert np.array_equal(dropout_call(cell, x)[0], y)
    other = cpu_kernels.FusedDropout(0.25)
    other.set_train(True)
    other.set_site(1)
    agree = (dropout_call(other, x)[0] != 0) == kept
    assert abs(agree.mean() - (0.75 ** 2 + 0.25 ** 2)) < tolerance, "sites are independent"

    cell.set_train(False)
    before = cell.step.asnumpy().copy()
    assert np.array_equal(dropout_call(cell, x)[0], x) and np.array_equal(cell.step.asnumpy(), before)


@needs_kernels
def test_dropout_counters_are_run_state_not_weights(tmp_path, tiny_config):
    model = BertForPreTraining(tiny_config)
    counters = {p.name for p in cpu_kernels.rng_state(model)}
    assert len(counters) == 1 + 3 * tiny_config.num_hidden_layers  # embeddings; attention, its output, FFN output
    streams = [tuple(c.stream.asnumpy()) for _, c in model.cells_and_names()
               if isinstance(c, cpu_kernels.FusedDropout)]
    assert len(set(streams)) == len(streams), "every dropout layer draws its own stream"
    assert not counters & {p.name for p in model.weights()}
    model.save_pretrained(str(tmp_path / "saved"))
    assert not counters & set(ms.load_checkpoint(str(tmp_path / "saved" / "model.ckpt")))
    assert not BertForPreTraining.from_pretrained(str(tmp_path / "saved")).load_report.missing


@pytest.mark.parametrize("fused", [pytest.param(True, marks=needs_kernels), False])
def test_data_parallel_ranks_share_weights_but_not_dropout_masks(monkeypatch, tiny_config, fused):
    """Two simulated ranks with one seed: identical initial weights, different masks (same rank: same masks).
    fused=False is the path GPU, Ascend and float16 take (MindSpore's dropout, seeded per rank)."""
    if not fused:
        monkeypatch.setenv("SMALLBERT_FUSED_KERNELS", "0")
    x = Tensor(np.ones((8, 64), np.float32))

    def rank_model(rank):
        monkeypatch.setattr(cpu_kernels, "_rank", lambda: rank)
        ms.set_seed(7)
        model = BertForPreTraining(dataclasses.replace(tiny_config, hidden_dropout_prob=0.5))
        model.set_train(True)
        cells = [c for _, c in model.cells_and_names() if isinstance(c, cpu_kernels.SeededDropout)]
        assert len(cells) == 1 + 3 * tiny_config.num_hidden_layers
        assert isinstance(cells[0], cpu_kernels.FusedDropout) is fused
        return {p.name: p.asnumpy() for p in model.weights()}, cells[0](x).asnumpy() != 0

    weights_0, mask_0 = rank_model(0)
    weights_1, mask_1 = rank_model(1)
    for name, value in weights_0.items():
        np.testing.assert_array_equal(weights_1[name], value, err_msg=name)
    assert not np.array_equal(mask_0, mask_1)
    assert np.array_equal(rank_model(0)[1], mask_0)
