"""MindIR export: the exported graph, loaded back with mindspore.load, gives the checkpoint's logits."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn
from smallbert import BertForPreTraining, BertForSequenceClassification, SmallBertError
from smallbert.export import export

ROOT = os.path.join(os.path.dirname(__file__), "..")
BATCH, SEQ, PREDICTIONS = 2, 16, 4


@pytest.fixture(scope="module")
def inputs(tiny_config):
    """input_ids, token_type_ids, attention_mask int32 [2,16] (second row padded) and masked_lm_positions [2,4]."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, tiny_config.vocab_size, size=(BATCH, SEQ)).astype(np.int32)
    types = (np.arange(SEQ) >= SEQ // 2).astype(np.int32)[None].repeat(BATCH, 0)
    mask = np.ones((BATCH, SEQ), np.int32)
    mask[1, 11:] = 0
    positions = np.array([[1, 5, 9, 0], [2, 3, 10, 0]], np.int32)
    return [ms.Tensor(a) for a in (ids, types, mask, positions)]


def test_classifier_exported_by_the_cli_gives_the_same_logits(tmp_path, tiny_config, inputs):
    """`--output served/model` writes served/model.mindir, as mindspore.export names it, and prints that path:
    mindspore.load refuses a MindIR file named without the suffix."""
    BertForSequenceClassification(tiny_config, num_labels=3).save_pretrained(str(tmp_path / "clf"))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export.py"), "--checkpoint",
                             str(tmp_path / "clf"), "--format", "MINDIR", "--seq_length", str(SEQ),
                             "--batch_size", str(BATCH), "--output", str(tmp_path / "served" / "model")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "served" / "model.mindir"
    assert result.stdout.startswith(f"wrote {written}: BertForSequenceClassification"), result.stdout
    assert os.listdir(tmp_path / "served") == ["model.mindir"]
    graph = nn.GraphCell(ms.load(str(written)))
    expected = BertForSequenceClassification.from_pretrained(str(tmp_path / "clf"), num_labels=3)(*inputs[:3])
    logits = graph(*inputs[:3])
    assert logits.shape == (BATCH, 3)
    np.testing.assert_allclose(logits.asnumpy(), expected.asnumpy(), rtol=1e-5, atol=1e-6)


def test_pretraining_export_gives_the_same_logits(tmp_path, tiny_config, inputs):
    BertForPreTraining(tiny_config).save_pretrained(str(tmp_path / "pt"))
    path, model = export(str(tmp_path / "pt"), batch_size=BATCH, seq_length=SEQ,
                         max_predictions_per_seq=PREDICTIONS)
    assert path == str(tmp_path / "pt" / "model.mindir")  # the default beside the checkpoint
    assert [n for n in os.listdir(tmp_path / "pt") if "mindir" in n] == ["model.mindir"]
    assert isinstance(model, BertForPreTraining)
    with open(path, "rb") as f:
        assert b"cpu_kernels" not in f.read(), "the exported graph must run without our compiled CPU kernels"
    mlm, nsp = nn.GraphCell(ms.load(path))(*inputs)
    expected_mlm, expected_nsp = BertForPreTraining.from_pretrained(str(tmp_path / "pt"))(*inputs)
    assert mlm.shape == (BATCH, PREDICTIONS, tiny_config.vocab_size) and nsp.shape == (BATCH, 2)
    np.testing.assert_allclose(mlm.asnumpy(), expected_mlm.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nsp.asnumpy(), expected_nsp.asnumpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"seq_length": 65}, r"--seq_length: must be in \[1, 64\]"),
    ({"seq_length": 8, "max_predictions_per_seq": 9}, r"--max_predictions_per_seq: must be in \[1, --seq_length 8\]"),
    ({"file_format": "ONNX"}, "--format: 'ONNX' is not supported"),
])
def test_bad_shapes_are_refused_before_compiling(tmp_path, tiny_config, kwargs, message):
    BertForPreTraining(tiny_config).save_pretrained(str(tmp_path / "pt"))
    with pytest.raises(SmallBertError, match=message):
        export(str(tmp_path / "pt"), **kwargs)
    assert not [n for n in os.listdir(tmp_path / "pt") if "mindir" in n]
