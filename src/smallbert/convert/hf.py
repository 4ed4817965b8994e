"""Our models → a Hugging Face `transformers` model directory.

Our parameter names are Hugging Face's and our Dense weights are [out, in] as in PyTorch, so the weights go into
`model.safetensors` unchanged. Like transformers' own `save_pretrained`, the tied MLM decoder
(`cls.predictions.decoder.*`) is not written: with `tie_word_embeddings` BertForPreTraining rebuilds it from the
word embeddings and `cls.predictions.bias`. Reading Hugging Face directories is `smallbert.weights`' job.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import numpy as np

from ..config import BertConfig
from ..fileio import write_json
from ..model import BertForSequenceClassification, BertPreTrainedModel
from ..tokenization import load_vocab
from ..weights import staged_directory

logger = logging.getLogger("smallbert")

SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}


def hf_config(model: BertPreTrainedModel) -> dict[str, Any]:
    """`config.json` for transformers: our config with HF keys, the architecture and, for classifiers, the labels."""
    values = model.config.to_hf_dict()
    values["architectures"] = [type(model).__name__]  # our class names are transformers' class names
    values["tie_word_embeddings"] = True
    if isinstance(model, BertForSequenceClassification) and "id2label" not in values:
        values.update(BertConfig.label_keys(BertConfig.placeholder_labels(model.num_labels)))
    return values


def vocab_is_lower_case(vocab_file: str) -> bool:
    """True when no ordinary token (outside `[...]` specials) has an upper-case letter: an uncased vocabulary."""
    return not any(token != token.lower() for token in load_vocab(vocab_file)
                   if not (token.startswith("[") and token.endswith("]")))


def tokenizer_config(model: BertPreTrainedModel, vocab_file: str) -> dict[str, Any]:
    """`tokenizer_config.json` for transformers' BertTokenizer, lower-casing inferred from the vocabulary."""
    return {"tokenizer_class": "BertTokenizer", "do_lower_case": vocab_is_lower_case(vocab_file),
            "model_max_length": model.config.max_position_embeddings, **SPECIAL_TOKENS}


def hf_state_dict(model: BertPreTrainedModel) -> dict[str, np.ndarray]:
    """{Hugging Face name: float32 array} of every parameter of `model`."""
    return {p.name: np.ascontiguousarray(p.asnumpy(), dtype=np.float32) for p in model.weights()}


def save_hf(model: BertPreTrainedModel, directory: str, vocab_file: str | None = None) -> None:
    """Writes `config.json`, `model.safetensors` and, with a vocabulary, `vocab.txt`, `tokenizer_config.json` and
    `special_tokens_map.json` into `directory`, loadable by `transformers.<same class name>.from_pretrained`.
    """
    from safetensors.numpy import save_file

    vocab_file = vocab_file or model.vocab_file
    with staged_directory(directory) as staging:
        write_json(os.path.join(staging, "config.json"), hf_config(model), sort_keys=True)
        save_file(hf_state_dict(model), os.path.join(staging, "model.safetensors"), metadata={"format": "pt"})
        if vocab_file:
            shutil.copyfile(vocab_file, os.path.join(staging, "vocab.txt"))
            write_json(os.path.join(staging, "tokenizer_config.json"), tokenizer_config(model, vocab_file),
                       sort_keys=True)
            write_json(os.path.join(staging, "special_tokens_map.json"), SPECIAL_TOKENS, sort_keys=True)
        else:
            logger.warning("%s: no vocab.txt to copy; the Hugging Face directory has no tokenizer files", directory)
