"""Loading a checkpoint under another vocabulary: its embedding rows follow the tokens, not the ids.

When `--vocab_file` differs from the `vocab.txt` beside the checkpoint's weights (extended, reordered or trimmed),
the vocabulary-sized weights are rebuilt in the new order: the word embeddings [V,H] (the MLM decoder is tied to
them) and the MLM output bias [V]. A token of both vocabs keeps its row bit for bit; a new token starts as the mean
of the rows of the old pieces that spell it (greedy WordPiece with the old vocab, "##" tokens spelled as word
continuations); a token the old vocab cannot spell, or a bracketed special such as "[unused7]", gets a row drawn
from normal(0, initializer_range) and bias 0, as a fresh BERT does. Old tokens absent from the new vocab are
dropped. Without a vocab change nothing is touched.

Pretraining adapts whenever --vocab_file differs; fine-tuning and distillation only with --adapt_vocab (there a
different vocab is more often a mistake than a plan). Either way:
    config = config_for_vocab(config, checkpoint, vocab_file)   # vocab_size follows the vocab
    model = SomeBertModel(config, ...)
    load_weights_for_vocab(model, checkpoint, vocab_file, seed)
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from .config import BertConfig
from .data.vocab import read_vocab_tokens
from .weights import VOCAB_NAME, LoadReport, find_weights_file, load_state_dict, normalise_names, read_state_dict

VOCAB_ROWS = ("bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight", "cls.predictions.bias")


@dataclasses.dataclass
class VocabChange:
    """How the rows of the new vocab were filled: kept (shared tokens), new (spelled + random), dropped."""

    kept: int
    spelled: int
    random: int
    dropped: int

    @property
    def new(self) -> int:
        return self.spelled + self.random

    def __str__(self) -> str:
        return (f"{self.kept} rows kept, {self.new} new ({self.spelled} from the mean of their old pieces, "
                f"{self.random} random), {self.dropped} dropped")


def vocab_change(checkpoint: str, vocab_file: str | None) -> tuple[list[str], list[str]] | None:
    """(old tokens, new tokens) if `vocab_file` differs from the vocab.txt beside `checkpoint`'s weights, else None
    (no `vocab_file`, no vocab.txt beside the weights, or the same tokens in the same order). Both files are
    checked to be vocabs (SmallBertError otherwise)."""
    if not vocab_file:
        return None
    old_file = os.path.join(os.path.dirname(find_weights_file(checkpoint)), VOCAB_NAME)
    new = read_vocab_tokens(vocab_file)
    if not os.path.isfile(old_file):
        return None
    old = read_vocab_tokens(old_file)
    return None if old == new else (old, new)


def config_for_vocab(config: BertConfig, checkpoint: str | None, vocab_file: str | None) -> BertConfig:
    """`config` with vocab_size = len(new vocab) when `load_weights_for_vocab` will adapt the rows; else `config`."""
    change = vocab_change(checkpoint, vocab_file) if checkpoint else None
    return config if change is None else dataclasses.replace(config, vocab_size=len(change[1]))


def spell(token: str, old_index: dict[str, int]) -> list[int] | None:
    """Old ids of the greedy longest-match WordPiece spelling of `token` ("##x" as a continuation), or None if the
    old vocab cannot spell it or it is a bracketed special token."""
    if token.startswith("[") and token.endswith("]"):
        return None
    text, prefix = (token[2:], "##") if token.startswith("##") else (token, "")
    ids, start = [], 0
    while start < len(text):
        for end in range(len(text), start, -1):
            piece = prefix + text[start:end]
            if piece in old_index:
                ids.append(old_index[piece])
                break
        else:
            return None
        start, prefix = end, "##"
    return ids or None


def adapt_rows(state: dict[str, np.ndarray], old: list[str], new: list[str], initializer_range: float,
               seed: int = 0) -> tuple[dict[str, np.ndarray], VocabChange]:
    """Rebuilds the vocabulary-sized arrays of `state` ({name: array}, our names) for the `new` token order.

    Returns (a new state dict, what was done). Rows past the end of the old vocab's tokens are ignored.
    """
    names = [n for n in VOCAB_ROWS if n in state]
    rows = min(state[n].shape[0] for n in names) if names else len(old)
    old_index = {t: i for i, t in enumerate(old[:rows])}
    kept = [(j, old_index[t]) for j, t in enumerate(new) if t in old_index]
    spelled, unspelled = [], []
    for j, token in enumerate(new):
        if token not in old_index:
            pieces = spell(token, old_index)
            (spelled if pieces else unspelled).append((j, pieces))
    rng = np.random.default_rng(seed)
    out = dict(state)
    for name in names:
        source = state[name]
        target = np.zeros((len(new),) + source.shape[1:], source.dtype)
        if kept:
            target[[j for j, _ in kept]] = source[[i for _, i in kept]]
        for j, pieces in spelled:
            target[j] = source[pieces].mean(axis=0)
        if name != "cls.predictions.bias" and unspelled:
            target[[j for j, _ in unspelled]] = rng.normal(
                0.0, initializer_range, (len(unspelled),) + source.shape[1:]).astype(source.dtype)
        out[name] = target
    return out, VocabChange(kept=len(kept), spelled=len(spelled), random=len(unspelled), dropped=rows - len(kept))


def adapted_state(model, checkpoint: str, vocab_file: str | None,
                  seed: int = 0) -> tuple[str, dict[str, np.ndarray], VocabChange | None]:
    """(weights file, state dict, VocabChange or None) of `checkpoint`, its vocabulary rows rebuilt for
    `vocab_file` when that differs from the checkpoint's vocab.txt (printing the kept/new/dropped counts); the names
    are `model`'s when rows were rebuilt."""
    weights_file = find_weights_file(checkpoint)
    state = read_state_dict(weights_file)
    change, done = vocab_change(checkpoint, vocab_file), None
    if change is not None:
        state = normalise_names(state, {p.name for p in model.weights()})
        state, done = adapt_rows(state, *change, model.config.initializer_range, seed)
        print(f"{weights_file}: vocabulary changed to {vocab_file} ({len(change[1])} tokens): {done}")
    return weights_file, state, done


def load_weights_for_vocab(model, checkpoint: str, vocab_file: str | None,
                           seed: int = 0) -> tuple[LoadReport, VocabChange | None]:
    """Loads `checkpoint` into `model` (built with `config_for_vocab`) through `adapted_state`.

    Returns (the LoadReport, the VocabChange or None when the vocab did not change)."""
    weights_file, state, done = adapted_state(model, checkpoint, vocab_file, seed)
    return load_state_dict(model, state, weights_file), done
