"""Examples → token ids (single sentences or pairs, cached on disk) → length-bucketed batches."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os

import numpy as np

from .. import native
from ..tokenization import FullTokenizer
from .tasks import Split

logger = logging.getLogger("smallbert")

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]")
CACHE_VERSION = 2
BUCKETS = (16, 32, 64, 128, 256)


def default_cache_dir() -> str:
    """`finetune/` in the package's cache directory (`native.cache_dir`: $SMALLBERT_CACHE_DIR, else
    $XDG_CACHE_HOME/smallbert, else ~/.cache/smallbert): never inside the data directory, which may be read-only
    or a checkout."""
    return os.path.join(native.cache_dir(), "finetune")


@dataclasses.dataclass
class Encoded:
    """A split's token ids, N rows.

    input_ids int32 [N, max_length]: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, then [PAD].
    lengths int32 [N]: tokens before the padding. segment_starts int32 [N]: where segment B (token type 1) begins,
    = lengths for a single sentence.
    """

    input_ids: np.ndarray
    lengths: np.ndarray
    segment_starts: np.ndarray


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_tokens: int) -> None:
    """Shortens the pair in place to at most `max_tokens` in total, one token at a time from the end of the longer
    (as Google's run_classifier does: a short sentence keeps all its tokens while the long one is cut)."""
    while len(tokens_a) + len(tokens_b) > max_tokens:
        (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()


def encode_sentences(text_a: list[str], text_b: list[str] | None, tokenizer: FullTokenizer,
                     max_length: int) -> Encoded:
    """Tokenizes single sentences into `[CLS] a [SEP]` or pairs into `[CLS] a [SEP] b [SEP]` (segment ids 0 then
    1), truncated to `max_length` tokens in all (pairs with `truncate_seq_pair`)."""
    cls_id, sep_id, pad_id = (tokenizer.vocab[t] for t in SPECIAL_TOKENS)
    input_ids = np.full((len(text_a), max_length), pad_id, np.int32)
    lengths = np.empty(len(text_a), np.int32)
    segment_starts = np.empty(len(text_a), np.int32)
    firsts = tokenizer.encode_batch(text_a)  # one call into Rust per side
    seconds = tokenizer.encode_batch(text_b) if text_b is not None else None
    for row, a in enumerate(firsts):
        if seconds is None:
            ids = [cls_id] + a[:max_length - 2] + [sep_id]
            segment_starts[row] = len(ids)
        else:
            b = seconds[row]
            truncate_seq_pair(a, b, max_length - 3)
            segment_starts[row] = len(a) + 2
            ids = [cls_id] + a + [sep_id] + b + [sep_id]
        input_ids[row, :len(ids)] = ids
        lengths[row] = len(ids)
    return Encoded(input_ids, lengths, segment_starts)


def encode_split(split: Split, tokenizer: FullTokenizer, vocab_file: str, max_length: int,
                 cache_dir: str | None) -> Encoded:
    """`encode_sentences` for a split, reusing `cache_dir/<name>-<key>.npz` when one matches.

    The key hashes the TSV's bytes and the columns read, the vocab's bytes, do_lower_case and max_length, so any
    change re-encodes. A cache that cannot be written only costs a warning.
    """
    key_text = f"{CACHE_VERSION}|{split.digest}|{file_digest(vocab_file)}|{tokenizer.do_lower_case}|{max_length}"
    path = os.path.join(cache_dir, f"{split.name}-{hashlib.sha1(key_text.encode()).hexdigest()[:16]}.npz") \
        if cache_dir else None
    if path and os.path.isfile(path):
        with np.load(path) as cached:
            encoded = Encoded(cached["input_ids"], cached["lengths"], cached["segment_starts"])
        if len(encoded.lengths) == len(split):
            logger.info("%s: %d examples from cache %s", split.path, len(encoded.lengths), path)
            return encoded
    encoded = encode_sentences(split.text_a, split.text_b, tokenizer, max_length)
    truncated = int(np.sum(encoded.lengths == max_length))
    logger.info("%s: %d examples encoded, %d reach --max_length %d", split.path, len(encoded.lengths), truncated,
                max_length)
    if path:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}.npz"
            np.savez(tmp, **dataclasses.asdict(encoded))
            os.replace(tmp, path)
        except OSError as err:
            logger.warning("%s: cannot write the encoding cache (%s); continuing without it", cache_dir,
                           err.strerror)
    return encoded


# ---------------------------------------------------------------------------------------------------------------
# Batches


def bucket_lengths(max_length: int, pad_to_max_length: bool) -> tuple[int, ...]:
    """The padded sequence lengths batches may take: 16, 32, ... below max_length, then max_length itself."""
    if pad_to_max_length:
        return (max_length,)
    return tuple(b for b in BUCKETS if b < max_length) + (max_length,)


def batch_rows(lengths: np.ndarray, batch_size: int, buckets: tuple[int, ...],
               rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Groups row numbers into batches whose rows share a bucket.

    Evaluation (rng None): rows in order within each bucket; the last batch of a bucket may be short.
    Training (rng given): rows shuffled within buckets; full batches from each bucket, then the buckets' leftovers
    pooled into full batches (padded to their longest row); fewer than `batch_size` rows are left out, different
    ones each epoch. That makes exactly len(lengths) // batch_size batches, in random order.
    """
    bucket_of = np.searchsorted(np.asarray(buckets), lengths)
    batches, leftovers = [], []
    for b in range(len(buckets)):
        rows = np.flatnonzero(bucket_of == b)
        if rng is not None:
            rows = rng.permutation(rows)
        full = len(rows) - len(rows) % batch_size if rng is not None else len(rows)
        batches += [rows[i:i + batch_size] for i in range(0, full, batch_size)]
        leftovers.append(rows[full:])
    if rng is not None:
        pooled = np.concatenate(leftovers)
        batches += [pooled[i:i + batch_size] for i in range(0, len(pooled) - batch_size + 1, batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def make_batch(encoded: Encoded, rows: np.ndarray, buckets: tuple[int, ...], batch_size: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """input_ids, token_type_ids, attention_mask, each int32 [batch_size, S] for `rows`.

    S is the smallest bucket holding the longest row. A short batch is filled up to `batch_size` by repeating its
    first row, so every batch of a bucket has one shape (one compiled graph); callers drop the extra outputs.
    """
    seq_length = buckets[int(np.searchsorted(np.asarray(buckets), encoded.lengths[rows].max()))]
    if len(rows) < batch_size:
        rows = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
    input_ids = encoded.input_ids[rows, :seq_length]
    positions = np.arange(seq_length)[None, :]
    attention_mask = positions < encoded.lengths[rows][:, None]
    token_type_ids = (positions >= encoded.segment_starts[rows][:, None]) & attention_mask
    return input_ids, token_type_ids.astype(np.int32), attention_mask.astype(np.int32)

