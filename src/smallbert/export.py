"""MindIR export for serving with MindSpore Lite or `mindspore.load`.

The checkpoint's weight names pick the model (see `smallbert.convert.load_model`), which is traced in eval mode
with fixed shapes. The exported graph takes int32 inputs, in this order:
    input_ids, token_type_ids, attention_mask   [B, S]
    masked_lm_positions                         [B, P]   (pretraining checkpoints only)
and returns what the model's `construct` returns:
    BertForSequenceClassification   logits [B, num_labels]
    BertForPreTraining              mlm_logits [B, P, V], nsp_logits [B, 2]
    BertModel                       sequence_output [B, S, H], pooled_output [B, H]
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .convert import load_model
from .errors import SmallBertError

if TYPE_CHECKING:
    from .model import BertPreTrainedModel

# MindSpore and the model are imported where they are used: tools/export.py reads FORMATS and `export`'s
# defaults for its --help, which must not wait for MindSpore.
FORMATS = ("MINDIR",)
MINDIR_SUFFIX = ".mindir"  # `mindspore.export` appends it to a file name without it, and `mindspore.load` requires it


def example_inputs(model: BertPreTrainedModel, batch_size: int, seq_length: int,
                   max_predictions_per_seq: int) -> list:
    """Int32 tensors of the exported input shapes: zero ids and token types [B,S], a mask of ones, positions [B,P]."""
    import mindspore as ms

    from .model import BertForPreTraining

    ids = ms.Tensor(np.zeros((batch_size, seq_length), np.int32))
    inputs = [ids, ids, ms.Tensor(np.ones((batch_size, seq_length), np.int32))]
    if isinstance(model, BertForPreTraining):
        inputs.append(ms.Tensor(np.zeros((batch_size, max_predictions_per_seq), np.int32)))
    return inputs


def check_shapes(model: BertPreTrainedModel, batch_size: int, seq_length: int, max_predictions_per_seq: int) -> None:
    """Raises SmallBertError naming the flag when a shape cannot be exported for this model."""
    from .model import BertForPreTraining

    if batch_size < 1:
        raise SmallBertError(f"--batch_size: must be at least 1, got {batch_size}")
    if not 1 <= seq_length <= model.config.max_position_embeddings:
        raise SmallBertError(f"--seq_length: must be in [1, {model.config.max_position_embeddings}] "
                             f"(the model's max_position_embeddings), got {seq_length}")
    if isinstance(model, BertForPreTraining) and not 1 <= max_predictions_per_seq <= seq_length:
        raise SmallBertError(f"--max_predictions_per_seq: must be in [1, --seq_length {seq_length}], "
                             f"got {max_predictions_per_seq}")


def export(checkpoint: str, output: str | None = None, file_format: str = "MINDIR", batch_size: int = 1,
           seq_length: int = 128, max_predictions_per_seq: int = 20) -> tuple[str, BertPreTrainedModel]:
    """Exports the model in `checkpoint` (our or a Hugging Face directory) to `output` (default
    `<checkpoint>/model.mindir`). As `mindspore.export` does, ".mindir" is appended to an `output` not ending in
    it, since `mindspore.load` refuses any other name. Returns (the written path, the exported model).
    """
    import mindspore as ms

    from . import cpu_kernels

    if file_format.upper() not in FORMATS:
        raise SmallBertError(f"--format: {file_format!r} is not supported, expected one of {', '.join(FORMATS)}")
    with cpu_kernels.disabled():  # the exported graph must not depend on our compiled library
        model = load_model(checkpoint)
    check_shapes(model, batch_size, seq_length, max_predictions_per_seq)
    if output is None:
        directory = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))
        output = os.path.join(directory, "model.mindir")
    if not output.endswith(MINDIR_SUFFIX):
        output += MINDIR_SUFFIX
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    name = os.path.basename(output).removesuffix(MINDIR_SUFFIX)
    stem = os.path.join(os.path.dirname(os.path.abspath(output)), f".tmp-{os.getpid()}-{name}")
    try:
        ms.export(model, *example_inputs(model, batch_size, seq_length, max_predictions_per_seq),
                  file_name=stem, file_format="MINDIR")
        os.replace(stem + MINDIR_SUFFIX, output)
    finally:
        if os.path.exists(stem + MINDIR_SUFFIX):
            os.remove(stem + MINDIR_SUFFIX)
    return output, model
