"""The model is the real BERT: logit parity with transformers on a real checkpoint, shapes, heads, parameter counts."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

import mindspore as ms
from smallbert import BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel, SmallBertError

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "config")
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT models are pretrained on Wikipedia with masked language modelling and next sentence prediction.",
    "Short one",
    "Naïve café owners in Zürich serve crème brûlée; 東京 is far away!",
]


@pytest.fixture(scope="module")
def minilm_batch(minilm_dir):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    tokenizer = transformers.BertTokenizer.from_pretrained(minilm_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    reference = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        out = reference(**{k: torch.tensor(v) for k, v in batch.items()})
    inputs = [ms.Tensor(batch[k].astype(np.int32)) for k in ("input_ids", "token_type_ids", "attention_mask")]
    return inputs, batch["attention_mask"].astype(bool), out.last_hidden_state.numpy(), out.pooler_output.numpy()


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return BertModel.from_pretrained(minilm_dir)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_minilm_parity_with_transformers(minilm, minilm_batch, mode):
    inputs, real, ref_sequence, ref_pooled = minilm_batch
    assert not minilm.load_report.missing and not minilm.load_report.unexpected
    forward = minilm if mode == "pynative" else ms.jit(minilm.construct)
    sequence, pooled = (t.asnumpy() for t in forward(*inputs))
    assert sequence.shape == ref_sequence.shape and pooled.shape == ref_pooled.shape
    assert np.abs(sequence - ref_sequence).max() <= 1e-4
    assert np.abs(sequence[real] - ref_sequence[real]).max() <= 1e-5
    assert np.abs(pooled - ref_pooled).max() <= 1e-4


def test_pretraining_heads_match_transformers(tmp_path, tiny_config, pretraining_batch):
    """Our MLM (gathered, tied decoder) and NSP heads give transformers' logits for the same weights."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    ref = transformers.BertForPreTraining(transformers.BertConfig(**tiny_config.to_hf_dict())).eval()
    state = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    state["cls.predictions.bias"] = np.random.default_rng(0).normal(size=tiny_config.vocab_size).astype(np.float32)
    ref.cls.predictions.bias.data = torch.tensor(state["cls.predictions.bias"])
    save_file({k: v for k, v in state.items() if k != "cls.predictions.decoder.bias"}, str(tmp_path / "model.safetensors"))
    tiny_config.to_json_file(tmp_path / "config.json")

    model = BertForPreTraining.from_pretrained(str(tmp_path))
    assert model.load_report.missing == []
    ids, types, mask, positions = pretraining_batch
    mlm, nsp = model(*(ms.Tensor(a) for a in (ids, types, mask, positions)))
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(types, dtype=torch.long),
                  attention_mask=torch.tensor(mask, dtype=torch.long))
    ref_mlm = np.take_along_axis(out.prediction_logits.numpy(), positions[:, :, None].astype(np.int64), axis=1)
    assert mlm.shape == (3, 3, tiny_config.vocab_size)
    np.testing.assert_allclose(mlm.asnumpy(), ref_mlm, atol=1e-5)
    np.testing.assert_allclose(nsp.asnumpy(), out.seq_relationship_logits.numpy(), atol=1e-5)


def test_save_and_reload_is_exact(tmp_path, tiny_config):
    model = BertForSequenceClassification(tiny_config, num_labels=3)
    model.set_train(False)
    model.save_pretrained(str(tmp_path / "clf"))
    assert sorted(os.listdir(tmp_path / "clf")) == ["config.json", "model.ckpt"]
    again = BertForSequenceClassification.from_pretrained(str(tmp_path / "clf"), num_labels=3)
    ids = ms.Tensor(np.arange(20, dtype=np.int32).reshape(2, 10))
    zeros, ones = ms.ops.zeros_like(ids), ms.ops.ones_like(ids)
    np.testing.assert_array_equal(model(ids, zeros, ones).asnumpy(), again(ids, zeros, ones).asnumpy())


def test_missing_head_is_initialised_and_reported(tmp_path, tiny_config, caplog):
    BertModel(tiny_config).save_pretrained(str(tmp_path / "body"))
    with caplog.at_level("WARNING", logger="smallbert"):
        model = BertForSequenceClassification.from_pretrained(str(tmp_path / "body"))
    assert model.load_report.missing == ["classifier.weight", "classifier.bias"]
    assert "freshly initialised" in caplog.text and "classifier.weight" in caplog.text


def test_initialisation_is_truncated_normal(tiny_config):
    config = BertConfig(**{**tiny_config.to_dict(), "vocab_size": 2000, "initializer_range": 0.05})
    weights = BertModel(config).embeddings.word_embeddings.weight.asnumpy()
    assert abs(weights.std() - 0.05 * 0.88) < 0.005  # a N(0, σ²) truncated at ±2σ has std 0.88σ
    assert np.abs(weights).max() <= 2 * 0.05 + 1e-7


def expected_parameter_count(L: int, H: int, I: int, V: int = 30522, P: int = 512, T: int = 2) -> int:
    """Written out independently of BertConfig.num_parameters."""
    embeddings = V * H + P * H + T * H + 2 * H
    attention = 3 * (H * H + H) + (H * H + H) + 2 * H
    ffn = (H * I + I) + (I * H + H) + 2 * H
    return embeddings + L * (attention + ffn) + (H * H + H)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIG_DIR, "*.json"))), ids=os.path.basename)
def test_config_files(path):
    config = BertConfig.from_json_file(path)
    name = os.path.basename(path)
    if name.startswith("bert_L"):
        L, H = (int(part[1:]) for part in name[len("bert_"):-len(".json")].split("_"))
        assert (config.num_hidden_layers, config.hidden_size) == (L, H)
        assert config.num_attention_heads == H // 64 and config.intermediate_size == 4 * H
    assert config.num_parameters() == expected_parameter_count(
        config.num_hidden_layers, config.hidden_size, config.intermediate_size)


def test_config_counts_match_built_models(tiny_config):
    assert sum(p.size for p in BertModel(tiny_config).weights()) == tiny_config.num_parameters()
    assert (sum(p.size for p in BertForPreTraining(tiny_config).weights())
            == tiny_config.num_parameters(with_heads=True))


def test_all_small_bert_sizes_are_shipped():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, "*.json"))}
    for L in (2, 4, 6, 8, 10, 12):
        for H in (128, 256, 512, 768):
            assert f"bert_L{L}_H{H}.json" in names
    assert {"bert_base.json", "bert_large.json"} <= names


def test_reads_hugging_face_config(minilm_dir):
    config = BertConfig.from_json_file(minilm_dir)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (6, 384, 12)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"vocab_size": 10, "hidden_size": 30, "num_hidden_layers": 2, "num_attention_heads": 4}', "not a multiple"),
    ('{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}', "missing required key(s) vocab_size"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_config_files(tmp_path, content, message):
    path = tmp_path / "bert_config.json"
    path.write_text(content)
    with pytest.raises(SmallBertError, match=r"bert_config\.json") as err:
        BertConfig.from_json_file(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_config_and_weights(tmp_path, tiny_config):
    with pytest.raises(SmallBertError, match="config file not found"):
        BertConfig.from_json_file(tmp_path / "nope.json")
    tiny_config.to_json_file(tmp_path / "config.json")
    with pytest.raises(SmallBertError, match="no weights file found"):
        BertModel.from_pretrained(str(tmp_path))


def test_weights_that_do_not_fit_the_config(tmp_path, tiny_config):
    BertModel(tiny_config).save_pretrained(str(tmp_path / "m"))
    bigger = {**tiny_config.to_dict(), "vocab_size": tiny_config.vocab_size + 1}
    (tmp_path / "m" / "config.json").write_text(json.dumps(bigger))
    with pytest.raises(SmallBertError, match=r"model\.ckpt: embeddings\.word_embeddings\.weight has shape \(128, 32\)"):
        BertModel.from_pretrained(str(tmp_path / "m"))


def test_reads_pytorch_bin_without_torch_import(tmp_path):
    torch = pytest.importorskip("torch")
    from smallbert.weights import read_torch_zip

    state = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),  # non-contiguous
             "b": torch.tensor([1.5], dtype=torch.float16), "c": torch.tensor([2.0], dtype=torch.bfloat16)}
    torch.save(state, tmp_path / "pytorch_model.bin")
    read = read_torch_zip(str(tmp_path / "pytorch_model.bin"))
    np.testing.assert_array_equal(read["a.weight"], np.arange(6, dtype=np.float32).reshape(2, 3).T)
    assert read["b"].dtype == np.float16 and read["b"][0] == 1.5 and read["c"][0] == 2.0


def test_float16_compute_keeps_float32_parameters_and_outputs(tiny_config):
    """Mixed precision: matmuls in float16, parameters/LayerNorm/logits in float32, results close to float32."""
    from mindspore.common import dtype as mstype

    full = BertForPreTraining(tiny_config)
    half = BertForPreTraining(tiny_config, compute_dtype=mstype.float16)
    ms.load_param_into_net(half, {p.name: p for p in full.get_parameters()})
    full.set_train(False)
    half.set_train(False)
    assert all(p.dtype == mstype.float32 for p in half.weights())
    ids = ms.Tensor(np.arange(24, dtype=np.int32).reshape(2, 12) % tiny_config.vocab_size)
    positions = ms.Tensor(np.array([[1, 2], [3, 4]], np.int32))
    args = (ids, ms.ops.zeros_like(ids), ms.ops.ones_like(ids), positions)
    (mlm32, nsp32), (mlm16, nsp16) = full(*args), half(*args)
    assert mlm16.dtype == mstype.float32 and nsp16.dtype == mstype.float32
    np.testing.assert_allclose(mlm16.asnumpy(), mlm32.asnumpy(), atol=2e-2)
    np.testing.assert_allclose(nsp16.asnumpy(), nsp32.asnumpy(), atol=2e-2)
    assert not np.array_equal(mlm16.asnumpy(), mlm32.asnumpy())


def test_loading_reaches_a_graph_that_has_already_run(tmp_path, tiny_config):
    from smallbert.weights import load_weights

    source = BertModel(tiny_config)
    source.set_train(False)
    source.save_pretrained(str(tmp_path / "source"))
    model = BertModel(tiny_config)
    model.set_train(False)
    forward = ms.jit(model.construct)
    ids = ms.Tensor(np.arange(16, dtype=np.int32).reshape(2, 8))
    zeros, ones = ms.ops.zeros_like(ids), ms.ops.ones_like(ids)
    before = forward(ids, zeros, ones)[1].asnumpy()
    load_weights(model, str(tmp_path / "source"))
    after = forward(ids, zeros, ones)[1].asnumpy()
    expected = source(ids, zeros, ones)[1].asnumpy()
    assert not np.allclose(before, expected)
    np.testing.assert_allclose(after, expected, atol=1e-6)
