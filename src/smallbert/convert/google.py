"""Google's TF BERT checkpoints (`bert_model.ckpt.*` + `bert_config.json` + `vocab.txt`) → our parameter names.

Google's variables are named by TF scope and store Dense kernels [in, out]; ours are Hugging Face's names with
weights [out, in]. The map is mechanical:

    bert/encoder/layer_0/attention/self/query/kernel  →  bert.encoder.layer.0.attention.self.query.weight (transposed)
    .../LayerNorm/gamma, beta                          →  .../LayerNorm.weight, bias
    bert/embeddings/word_embeddings                    →  bert.embeddings.word_embeddings.weight
    cls/predictions/output_bias                        →  cls.predictions.bias
    cls/seq_relationship/output_weights [2, H]         →  cls.seq_relationship.weight (already [out, in])
    output_weights, output_bias (run_classifier.py)    →  classifier.weight, classifier.bias

Optimizer slots (`*/adam_m`, `*/adam_v`) and `global_step` are dropped. Reading the checkpoint needs TensorFlow,
an optional extra imported only here.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
from typing import Iterator

import numpy as np

from ..config import BertConfig
from ..errors import SmallBertError

TF_INSTALL_HINT = 'pip install tensorflow-cpu  (or, in the smallbert checkout: pip install -e ".[tf]")'
CONFIG_NAME = "bert_config.json"
VOCAB_NAME = "vocab.txt"

# Variables whose name does not follow the scope → dotted-name rule.
SPECIAL_NAMES = {
    "cls/predictions/output_bias": "cls.predictions.bias",
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
    "output_weights": "classifier.weight",
    "output_bias": "classifier.bias",
}
LEAF_NAMES = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}
SKIPPED_LEAVES = ("adam_m", "adam_v", "global_step")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Sends file descriptor 2 to /dev/null: TF's C++ start-up logs bypass Python and TF_CPP_MIN_LOG_LEVEL,
    and would bury our one-line messages. TF's failures still reach us as Python exceptions."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Returns the `tensorflow` module, or raises SmallBertError saying exactly what to install."""
    try:
        with native_stderr_silenced():
            import tensorflow as tf
    except ImportError:
        raise SmallBertError(f"reading a Google TF checkpoint needs TensorFlow: {TF_INSTALL_HINT}") from None
    return tf


def google_to_ours(name: str) -> str | None:
    """Our parameter name for a Google TF variable name, or None for optimizer state and the step counter.

    Names outside Google's scheme come back dotted, so the loader reports them as unexpected.
    """
    if name in SPECIAL_NAMES:
        return SPECIAL_NAMES[name]
    parts = name.split("/")
    if parts[-1] in SKIPPED_LEAVES:
        return None
    parts = [re.sub(r"^layer_(\d+)$", r"layer.\1", part) for part in parts]
    if parts[-1] in LEAF_NAMES:
        parts[-1] = LEAF_NAMES[parts[-1]]
    elif parts[-1].endswith("_embeddings"):  # embedding tables are bare variables
        parts.append("weight")
    return ".".join(parts)


def convert_state(tf_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{Google TF name: array} → {our name: float32 array}, Dense kernels transposed to [out, in]."""
    state = {}
    for name, value in tf_state.items():
        ours = google_to_ours(name)
        if ours is None:
            continue
        value = np.asarray(value, dtype=np.float32)
        state[ours] = np.ascontiguousarray(value.T) if name.endswith("/kernel") else value
    return state


def find_checkpoint(path: str) -> str:
    """The checkpoint prefix (`.../bert_model.ckpt`) for a prefix or a directory holding one checkpoint."""
    if os.path.isfile(path + ".index"):
        return path
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if not os.path.isdir(path):
        raise SmallBertError(f"{path}: no TF checkpoint (expected a directory or a prefix such as "
                             f"uncased_L-2_H-128_A-2/bert_model.ckpt with a .index file beside it)")
    prefixes = sorted(p[: -len(".index")] for p in glob.glob(os.path.join(path, "*.index")))
    if len(prefixes) == 1:
        return prefixes[0]
    if not prefixes:
        raise SmallBertError(f"{path}: no TF checkpoint (*.index) in this directory")
    names = ", ".join(os.path.basename(p) for p in prefixes)
    raise SmallBertError(f"{path}: several TF checkpoints ({names}); pass the prefix of one as --input")


def read_tf_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """Every variable of the TF checkpoint at `prefix` as {name: array}."""
    tf = import_tensorflow()
    try:
        with native_stderr_silenced():
            reader = tf.train.load_checkpoint(prefix)
            return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except Exception as err:  # TF raises its own error types for corrupt or foreign files
        raise SmallBertError(f"{prefix}: cannot read TF checkpoint ({type(err).__name__}: {err})") from None


def read_google(path: str) -> tuple[BertConfig, dict[str, np.ndarray], str | None, str]:
    """Reads a Google release directory (or checkpoint prefix) with `bert_config.json` beside it.

    Returns (config, {our name: array}, vocab.txt path or None, checkpoint prefix).
    """
    prefix = find_checkpoint(path)
    directory = os.path.dirname(os.path.abspath(prefix))
    config_file = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(config_file):
        raise SmallBertError(f"{directory}: no {CONFIG_NAME} beside the checkpoint {os.path.basename(prefix)}")
    config = BertConfig.from_json_file(config_file)
    vocab_file = os.path.join(directory, VOCAB_NAME)
    return config, convert_state(read_tf_checkpoint(prefix)), (vocab_file if os.path.isfile(vocab_file) else None), prefix
