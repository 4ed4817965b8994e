"""Checkpoint interop: Google TF → ours, Hugging Face → ours → Hugging Face, ours → transformers' classes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from smallbert import BertForPreTraining, BertForSequenceClassification, BertModel, SmallBertError
from smallbert.convert import convert
from smallbert.convert.google import google_to_ours

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

ROOT = os.path.join(os.path.dirname(__file__), "..")
TF_REASON = 'TensorFlow is not installed (pip install -e ".[tf]"): Google TF checkpoints cannot be written or read'
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path, size: int) -> str:
    tokens = SPECIALS + [f"w{i}" for i in range(size - len(SPECIALS) - 1)] + ["##s"]
    path.write_text("\n".join(tokens) + "\n")
    return str(path)


def torch_outputs(model, ids, types, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(types, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long))


@pytest.fixture(scope="module")
def reference(tiny_config):
    """A transformers BertForPreTraining with every parameter random (biases and LayerNorms too), eval mode."""
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(**tiny_config.to_hf_dict())).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param) * 0.1 + (1.0 if "LayerNorm.weight" in name else 0.0))
    return model


def google_variables(state: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """The variables of Google's BERT checkpoint holding transformers weights `state`, names spelled out by hand."""
    variables = {"global_step": np.int64(1000)}

    def dense(scope: str, name: str) -> None:
        variables[f"{scope}/kernel"] = state[f"{name}.weight"].T  # Google stores kernels [in, out]
        variables[f"{scope}/bias"] = state[f"{name}.bias"]

    def layer_norm(scope: str, name: str) -> None:
        variables[f"{scope}/gamma"] = state[f"{name}.weight"]
        variables[f"{scope}/beta"] = state[f"{name}.bias"]

    for table in ("word", "position", "token_type"):
        variables[f"bert/embeddings/{table}_embeddings"] = state[f"bert.embeddings.{table}_embeddings.weight"]
    layer_norm("bert/embeddings/LayerNorm", "bert.embeddings.LayerNorm")
    for i in range(num_layers):
        scope, name = f"bert/encoder/layer_{i}", f"bert.encoder.layer.{i}"
        for part in ("query", "key", "value"):
            dense(f"{scope}/attention/self/{part}", f"{name}.attention.self.{part}")
        dense(f"{scope}/attention/output/dense", f"{name}.attention.output.dense")
        layer_norm(f"{scope}/attention/output/LayerNorm", f"{name}.attention.output.LayerNorm")
        dense(f"{scope}/intermediate/dense", f"{name}.intermediate.dense")
        dense(f"{scope}/output/dense", f"{name}.output.dense")
        layer_norm(f"{scope}/output/LayerNorm", f"{name}.output.LayerNorm")
    dense("bert/pooler/dense", "bert.pooler.dense")
    dense("cls/predictions/transform/dense", "cls.predictions.transform.dense")
    layer_norm("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm")
    variables["cls/predictions/output_bias"] = state["cls.predictions.bias"]
    variables["cls/seq_relationship/output_weights"] = state["cls.seq_relationship.weight"]  # [2, H], not transposed
    variables["cls/seq_relationship/output_bias"] = state["cls.seq_relationship.bias"]
    variables["bert/pooler/dense/kernel/adam_m"] = np.zeros_like(variables["bert/pooler/dense/kernel"])
    return variables


def write_tf_checkpoint(prefix: str, variables: dict[str, np.ndarray]) -> None:
    """Saves `variables` as Google did: TF1 variables in a graph, `tf.compat.v1.train.Saver`."""
    tf = pytest.importorskip("tensorflow", reason=TF_REASON)
    with tf.Graph().as_default():
        tf_vars = [tf.compat.v1.get_variable(name, initializer=tf.constant(value)) for name, value in variables.items()]
        saver = tf.compat.v1.train.Saver(tf_vars)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False)


def assert_pretraining_logits_match(ours: BertForPreTraining, hf_model, batch) -> None:
    ids, types, mask, positions = batch
    mlm, nsp = ours(*(ms.Tensor(a) for a in batch))
    out = torch_outputs(hf_model, ids, types, mask)
    ref_mlm = np.take_along_axis(out.prediction_logits.numpy(), positions[:, :, None].astype(np.int64), axis=1)
    assert np.abs(mlm.asnumpy() - ref_mlm).max() <= 1e-4
    assert np.abs(nsp.asnumpy() - out.seq_relationship_logits.numpy()).max() <= 1e-4


def test_google_names_map_to_ours():
    assert google_to_ours("bert/encoder/layer_11/attention/self/query/kernel") == \
        "bert.encoder.layer.11.attention.self.query.weight"
    assert google_to_ours("bert/encoder/layer_0/output/LayerNorm/beta") == "bert.encoder.layer.0.output.LayerNorm.bias"
    assert google_to_ours("bert/embeddings/token_type_embeddings") == "bert.embeddings.token_type_embeddings.weight"
    assert google_to_ours("cls/predictions/output_bias") == "cls.predictions.bias"
    assert google_to_ours("output_weights") == "classifier.weight"
    assert google_to_ours("bert/pooler/dense/kernel/adam_v") is None and google_to_ours("global_step") is None


def test_google_tf_checkpoint_to_ours_and_hf(tmp_path, tiny_config, reference, pretraining_batch):
    """A Google-layout TF checkpoint of known weights converts to ours and to HF with the reference's logits."""
    state = {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()}
    release = tmp_path / "uncased_L-2_H-32_A-2"
    release.mkdir()
    write_tf_checkpoint(str(release / "bert_model.ckpt"), google_variables(state, tiny_config.num_hidden_layers))
    (release / "bert_config.json").write_text(json.dumps(tiny_config.to_dict()))
    write_vocab(release / "vocab.txt", tiny_config.vocab_size)

    convert("google", "smallbert", str(release), str(tmp_path / "ours"))
    assert sorted(os.listdir(tmp_path / "ours")) == ["config.json", "model.ckpt", "tokenizer_config.json", "vocab.txt"]
    assert json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())["do_lower_case"] is True
    ours = BertForPreTraining.from_pretrained(str(tmp_path / "ours"))
    assert ours.load_report.missing == [] and ours.load_report.unexpected == []
    assert_pretraining_logits_match(ours, reference, pretraining_batch)

    convert("google", "hf", str(release / "bert_model.ckpt"), str(tmp_path / "hf"))
    hf_model, info = transformers.BertForPreTraining.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, value in hf_model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[name], err_msg=name)


def test_minilm_round_trip_hf_ours_hf(tmp_path, minilm_dir):
    """HF → ours → HF on the real MiniLM: transformers loads the result cleanly, same outputs and tokenizer."""
    convert("hf", "smallbert", minilm_dir, str(tmp_path / "ours"))
    convert("smallbert", "hf", str(tmp_path / "ours"), str(tmp_path / "hf"))
    original = transformers.BertModel.from_pretrained(minilm_dir).eval()
    again, info = transformers.BertModel.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    sentences = ["The quick brown fox jumps over the lazy dog.", "Naïve café owners serve crème brûlée!"]
    tokens = transformers.AutoTokenizer.from_pretrained(minilm_dir)(sentences, padding=True, return_tensors="np")
    tokens_again = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))(sentences, padding=True,
                                                                                    return_tensors="np")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(tokens[key], tokens_again[key])
    inputs = [tokens[k] for k in ("input_ids", "token_type_ids", "attention_mask")]
    ref = torch_outputs(original, *inputs)
    out = torch_outputs(again.eval(), *inputs)
    assert np.abs(out.last_hidden_state.numpy() - ref.last_hidden_state.numpy()).max() <= 1e-4
    assert np.abs(out.pooler_output.numpy() - ref.pooler_output.numpy()).max() <= 1e-4
    ours = BertModel.from_pretrained(str(tmp_path / "ours"))
    sequence, pooled = ours(*(ms.Tensor(a.astype(np.int32)) for a in inputs))
    assert np.abs(sequence.asnumpy() - ref.last_hidden_state.numpy()).max() <= 1e-4
    assert np.abs(pooled.asnumpy() - ref.pooler_output.numpy()).max() <= 1e-4


def randomise(model) -> None:
    """Every parameter random (our init leaves biases 0 and LayerNorm 1, which would hide a bias/gain mix-up)."""
    rng = np.random.default_rng(2)
    for param in model.weights():
        param.set_data(ms.Tensor(rng.normal(0.0, 0.1, param.shape).astype(np.float32)))
    model.set_train(False)


def test_our_pretraining_checkpoint_to_hf(tmp_path, tiny_config, pretraining_batch):
    ours = BertForPreTraining(tiny_config)
    randomise(ours)
    ours.save_pretrained(str(tmp_path / "ours"), vocab_file=write_vocab(tmp_path / "vocab.txt", tiny_config.vocab_size))
    convert("smallbert", "hf", str(tmp_path / "ours"), str(tmp_path / "hf"))
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                                   "tokenizer_config.json", "vocab.txt"]
    hf_model, info = transformers.BertForPreTraining.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_pretraining_logits_match(ours, hf_model.eval(), pretraining_batch)


def test_our_classifier_checkpoint_to_hf(tmp_path, tiny_config, pretraining_batch):
    ours = BertForSequenceClassification(tiny_config, num_labels=3)
    randomise(ours)
    ours.save_pretrained(str(tmp_path / "ours"))
    model = convert("smallbert", "hf", str(tmp_path / "ours"), str(tmp_path / "hf"))
    assert isinstance(model, BertForSequenceClassification) and model.num_labels == 3
    hf_model, info = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "hf"),
                                                                                 output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf_model.config.num_labels == 3
    ids, types, mask, _ = pretraining_batch
    logits = ours(*(ms.Tensor(a) for a in (ids, types, mask))).asnumpy()
    assert np.abs(logits - torch_outputs(hf_model.eval(), ids, types, mask).logits.numpy()).max() <= 1e-4


def test_lower_casing_is_read_off_the_vocabulary(tmp_path):
    from smallbert.convert.hf import vocab_is_lower_case

    (tmp_path / "uncased.txt").write_text("[PAD]\n[UNK]\n[CLS]\nthe\n##s\nzürich\n")
    (tmp_path / "cased.txt").write_text("[PAD]\n[UNK]\n[CLS]\nthe\n##s\nZürich\n")
    assert vocab_is_lower_case(str(tmp_path / "uncased.txt"))
    assert not vocab_is_lower_case(str(tmp_path / "cased.txt"))


def test_without_tensorflow_the_error_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "bert_model.ckpt.index").write_bytes(b"")
    (tmp_path / "bert_config.json").write_text('{"vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1, '
                                               '"num_attention_heads": 1}')
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` raise ImportError
    with pytest.raises(SmallBertError, match=r'needs TensorFlow: pip install tensorflow-cpu .*pip install -e "\.\[tf\]"'):
        convert("google", "smallbert", str(tmp_path), str(tmp_path / "out"))


def test_weights_of_a_smaller_model_are_refused(tmp_path, tiny_config):
    BertModel(tiny_config).save_pretrained(str(tmp_path / "m"))
    deeper = {**tiny_config.to_dict(), "num_hidden_layers": 3}
    (tmp_path / "m" / "config.json").write_text(json.dumps(deeper))
    with pytest.raises(SmallBertError, match=r"model\.ckpt: not a BERT checkpoint .* encoder\.layer\.2\."):
        convert("smallbert", "hf", str(tmp_path / "m"), str(tmp_path / "hf"))
    assert not (tmp_path / "hf").exists()


def test_same_format_is_refused():
    with pytest.raises(SmallBertError, match="--from and --to are both 'hf': nothing to convert"):
        convert("hf", "hf", ".", "out")


def test_wrong_source_format_names_the_right_one(tmp_path, tiny_config, minilm_dir):
    """Our checkpoint read as "hf" used to convert without a word; every mismatch now says which --from to use."""
    BertModel(tiny_config).save_pretrained(str(tmp_path / "ours"))
    (tmp_path / "empty").mkdir()
    cases = [("hf", tmp_path / "ours", r"is a smallbert checkpoint \(model\.ckpt\); use --from smallbert"),
             ("google", tmp_path / "ours", r"is a smallbert checkpoint \(model\.ckpt\); use --from smallbert"),
             ("google", minilm_dir, r"is a hf checkpoint \(model\.safetensors\); use --from hf"),
             ("smallbert", minilm_dir, r"is a hf checkpoint \(model\.safetensors\); use --from hf"),
             ("google", tmp_path / "empty", r"--input: .*empty: not a checkpoint")]
    for source, path, message in cases:
        with pytest.raises(SmallBertError, match=message):
            convert(source, "hf" if source != "hf" else "smallbert", str(path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_cli_error_is_one_line_naming_the_real_path():
    script = os.path.join(ROOT, "tools", "convert_checkpoint.py")
    result = subprocess.run([sys.executable, script, "--from", "google", "--to", "smallbert", "--input", "missing_dir",
                             "--output", "out"], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"error: --input: {os.path.abspath('missing_dir')}: no such checkpoint file or directory"
