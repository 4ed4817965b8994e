"""Checkpoint conversion: Google TF and Hugging Face checkpoints into ours, ours into Hugging Face.

Every conversion goes through our model: read (config, {name: array}, vocab) from the source, pick the model class
from the names (`classifier.*` → BertForSequenceClassification, `cls.*` → BertForPreTraining, otherwise the bare
BertModel), assign the arrays with shape checks, then write the target. So a checkpoint that converts also loads.
"""
from __future__ import annotations

import fnmatch
import os
from typing import TYPE_CHECKING

import numpy as np

from ..config import BertConfig
from ..errors import SmallBertError
from ..weights import CKPT_NAME, CONFIG_NAME, VOCAB_NAME, find_weights_file, load_state_dict, read_state_dict

if TYPE_CHECKING:
    from ..model import BertPreTrainedModel

SOURCES = ("google", "hf", "smallbert")
TARGETS = ("smallbert", "hf")
# The files that mark each source format, tried in this order (a directory's weights as `find_weights_file` picks).
FORMAT_FILES = {"google": ("*.index",), "smallbert": (CKPT_NAME, "*.ckpt"),
                "hf": ("model.safetensors", "pytorch_model.bin", "*.safetensors", "*.bin")}


def detect_format(path: str) -> tuple[str, str] | None:
    """(format, the file that tells it) of the checkpoint at `path`: a directory, a weights file, or a TF checkpoint
    prefix. None when nothing there is a checkpoint."""
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
    elif os.path.isfile(path + ".index"):  # a TF prefix such as uncased_L-2_H-128_A-2/bert_model.ckpt
        names = [os.path.basename(path) + ".index"]
    else:
        names = [os.path.basename(path)] if os.path.isfile(path) else []
    for source, patterns in FORMAT_FILES.items():
        for pattern in patterns:
            for name in names:
                if fnmatch.fnmatch(name, pattern):
                    return source, name
    return None


def check_source_format(source_format: str, path: str) -> None:
    """Raises SmallBertError (one line: what `path` is, and the --from to use) unless it holds a `source_format`
    checkpoint: reading ours as "hf" would otherwise succeed and write a mislabelled conversion."""
    found = detect_format(path)
    if found is None:
        if not os.path.exists(path) and not os.path.isfile(path + ".index"):
            raise SmallBertError(f"--input: {path}: no such checkpoint file or directory")
        raise SmallBertError(f"--input: {path}: not a checkpoint (no TF *.index, {CKPT_NAME}, model.safetensors "
                             f"or pytorch_model.bin)")
    detected, evidence = found
    if detected != source_format:
        raise SmallBertError(f"--from {source_format}: {path} is a {detected} checkpoint ({evidence}); "
                             f"use --from {detected}")


def model_for(config: BertConfig, state: dict[str, np.ndarray], source: str) -> BertPreTrainedModel:
    """Builds the model class the checkpoint's names call for and loads `state` into it (eval mode).

    Missing head weights are freshly initialised with a warning (e.g. a masked-LM-only checkpoint has no NSP head);
    missing embedding or encoder weights raise SmallBertError naming `source`.
    """
    # Imported here, not at the top: tools/convert_checkpoint.py reads SOURCES for its --help without MindSpore.
    from ..model import BertForPreTraining, BertForSequenceClassification, BertModel

    if "classifier.weight" in state:
        model = BertForSequenceClassification(config, num_labels=int(state["classifier.weight"].shape[0]))
    elif any(name.startswith("cls.") for name in state):
        model = BertForPreTraining(config)
    else:
        model = BertModel(config)
    report = load_state_dict(model, state, source)
    body_missing = [name for name in report.missing if "embeddings." in name or "encoder." in name]
    if body_missing:
        raise SmallBertError(f"{source}: not a BERT checkpoint for its config: {len(body_missing)} embedding/encoder "
                             f"weight(s) missing, e.g. {body_missing[0]}")
    model.load_report = report
    model.set_train(False)
    return model


def read_checkpoint(source_format: str, path: str) -> tuple[BertConfig, dict[str, np.ndarray], str | None, str]:
    """Reads a checkpoint: "google" (TF checkpoint + bert_config.json), or "hf" / "smallbert" (a directory with
    config.json and model.safetensors, pytorch_model.bin or model.ckpt, told apart by file name).

    Returns (config, {name: array}, vocab.txt path or None, the file read, for messages).
    """
    if source_format == "google":
        from .google import read_google

        return read_google(path)
    if source_format not in SOURCES:
        raise SmallBertError(f"--from: unknown format {source_format!r}, expected one of {', '.join(SOURCES)}")
    weights_file = find_weights_file(path)
    directory = os.path.dirname(os.path.abspath(weights_file))
    config = BertConfig.from_json_file(os.path.join(directory, CONFIG_NAME))
    vocab_file = os.path.join(directory, VOCAB_NAME)
    return config, read_state_dict(weights_file), (vocab_file if os.path.isfile(vocab_file) else None), weights_file


def load_model(path: str, source_format: str = "smallbert") -> BertPreTrainedModel:
    """Loads a checkpoint (see `read_checkpoint`) into the model class its weight names call for, in eval mode."""
    config, state, vocab_file, source = read_checkpoint(source_format, path)
    model = model_for(config, state, source)
    model.vocab_file = vocab_file
    return model


def convert(source_format: str, target_format: str, input_path: str, output_dir: str) -> BertPreTrainedModel:
    """Converts the checkpoint at `input_path` into `output_dir`; returns the model that was written.

    source_format: "google" (TF checkpoint + bert_config.json), "hf" (config.json + model.safetensors or
    pytorch_model.bin) or "smallbert" (config.json + model.ckpt). target_format: "smallbert" (config.json,
    model.ckpt, vocab.txt, tokenizer_config.json) or "hf" (see `hf.save_hf`).
    """
    if target_format not in TARGETS:
        raise SmallBertError(f"--to: unknown format {target_format!r}, expected one of {', '.join(TARGETS)}")
    if source_format == target_format:
        raise SmallBertError(f"--from and --to are both {source_format!r}: nothing to convert")
    check_source_format(source_format, input_path)
    from ..fileio import write_json
    from .hf import save_hf, tokenizer_config

    model = load_model(input_path, source_format)
    if target_format == "hf":
        save_hf(model, output_dir)
    else:
        model.save_pretrained(output_dir)
        if model.vocab_file:  # tells fine-tuning whether to lower-case, as transformers' tokenizer config does
            write_json(os.path.join(output_dir, "tokenizer_config.json"), tokenizer_config(model, model.vocab_file),
                       sort_keys=True)
    return model
