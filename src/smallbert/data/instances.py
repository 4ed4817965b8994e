"""Google BERT's pretraining instances (`create_pretraining_data.py`), built on token ids.

The steps, random draws and their order are Google's, so that for the same documents, vocab and
`random.Random` state the instances are the ones Google's script makes:
  * documents are shuffled, then each is visited `dupe_factor` times;
  * per visit, a target length: `max_seq_length - 3`, or with probability `short_seq_prob` a
    random length in [2, max_seq_length - 3];
  * sentences are gathered until the target is reached; a random number of them form A;
    B is the rest (actual next) or, half the time or when there is one sentence, text from a
    random other document (random next), in which case the unused sentences are put back;
  * `truncate_seq_pair` trims the longer side, front or back at random, to `max_seq_length - 3`;
  * `[CLS] A [SEP] B [SEP]`, segment ids 0 up to the first `[SEP]`, 1 after;
  * `min(max_predictions, max(1, round(len * masked_lm_prob)))` positions are masked, chosen among
    shuffled candidates (whole words when `do_whole_word_mask`): 80% `[MASK]`, 10% a random vocab
    word, 10% unchanged; positions are sorted;
  * all instances are shuffled.
The only difference is scale: the caller hands in a window of documents (see `pipeline.py`), not
the whole corpus.

`mlm_only` selects another layout, for masked-LM training without NSP (RoBERTa-style, UER's
`--target mlm`): `create_packed_instances` packs the text as one stream, across sentence and document
boundaries, into single segments `[CLS] tokens [SEP]` of exactly `max_seq_length` tokens, then masks
them as above. It is built in Python only; Google's layout keeps its C++ builder.

`create_instance_arrays` runs the same steps in C++ (`instances.cc`, compiled on first use like the CPU
kernels, see `native.py`), drawing from the `random.Random`'s own MT19937 state with CPython's
`random()`, `_randbelow` and `shuffle`, so its arrays and the generator's final state are those of
the Python code here; without a compiler (or with `SMALLBERT_NATIVE_DATA=0`) it runs the Python.
"""
from __future__ import annotations

import ctypes
import functools
import os
import random
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

import numpy as np

from smallbert import native
from smallbert.errors import SmallBertError

Document = list[list[int]]  # sentences of token ids
# Ids at or above this mark a token that continues the previous token's word although it is no
# "##" piece (Chinese characters of one segmented word): id + WORD_CONTINUATION. Masking groups
# them like "##" pieces; `pack_instances` turns them back into the real ids.
WORD_CONTINUATION = 1 << 24


@dataclass(frozen=True)
class TokenIds:
    """The vocab facts the algorithm needs.

    cls, sep, mask: ids of "[CLS]", "[SEP]", "[MASK]".
    words: every vocab id in file order (Google's random replacement draws an index into this).
    continuation: ids of "##" pieces, joined to the previous token by whole-word masking.
    """

    cls: int
    sep: int
    mask: int
    words: tuple[int, ...]
    continuation: frozenset[int]

    @classmethod
    def from_vocab(cls, vocab: dict[str, int], vocab_file: str = "vocab") -> "TokenIds":
        missing = [t for t in ("[CLS]", "[SEP]", "[MASK]") if t not in vocab]
        if missing:
            raise SmallBertError(f"{vocab_file}: vocab lacks {', '.join(missing)}")
        return cls(cls=vocab["[CLS]"], sep=vocab["[SEP]"], mask=vocab["[MASK]"], words=tuple(vocab.values()),
                   continuation=frozenset(i for t, i in vocab.items() if t.startswith("##")))

    @functools.cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(words int32 [V], continuation uint8 [max id + 1]: 1 for "##" pieces), for the C++ builder."""
        continuation = np.zeros(max(self.continuation, default=-1) + 1, np.uint8)
        continuation[list(self.continuation)] = 1
        return np.asarray(self.words, np.int32), continuation


@dataclass(frozen=True)
class InstanceConfig:
    """Google's flags for building instances (same names and meaning)."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 10
    do_whole_word_mask: bool = False
    dynamic_masking: bool = False  # store unmasked instances; the loader masks every epoch
    mlm_only: bool = False  # packed single segments, no NSP pairs (`create_packed_instances`)

    def validate(self) -> None:
        """Raises SmallBertError naming the flag that cannot work."""
        if self.max_seq_length < 5:
            raise SmallBertError(f"--max_seq_length={self.max_seq_length}: must be at least 5 "
                                 "([CLS] A [SEP] B [SEP] with A and B of at least one token)")
        if not 1 <= self.max_predictions_per_seq <= self.max_seq_length:
            raise SmallBertError(f"--max_predictions_per_seq={self.max_predictions_per_seq}: "
                                 f"must be in [1, max_seq_length={self.max_seq_length}]")
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise SmallBertError(f"--masked_lm_prob={self.masked_lm_prob}: must be in (0, 1)")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise SmallBertError(f"--short_seq_prob={self.short_seq_prob}: must be in [0, 1]")
        if self.dupe_factor < 1:
            raise SmallBertError(f"--dupe_factor={self.dupe_factor}: must be at least 1")


class TrainingInstance(NamedTuple):
    """One sentence pair. `input_ids` is `[CLS] A [SEP] B [SEP]` (masked unless dynamic masking);
    `segment_b_start` is the index of B's first token; `masked_lm_labels` are the original ids at
    the sorted `masked_lm_positions`."""

    input_ids: list[int]
    segment_b_start: int
    masked_lm_positions: list[int]
    masked_lm_labels: list[int]
    is_random_next: bool


def shuffle(items: list, rng: random.Random) -> None:
    """`rng.shuffle(items)`, same result and same draws, ~1.5x faster: CPython's Fisher-Yates with
    its `_randbelow` (rejection sampling on `getrandbits`) inlined. Masking shuffles ~120
    candidates per instance, the largest single cost of building instances."""
    getrandbits = rng.getrandbits
    for i in range(len(items) - 1, 0, -1):
        n = i + 1
        bits = n.bit_length()
        j = getrandbits(bits)
        while j >= n:
            j = getrandbits(bits)
        items[i], items[j] = items[j], items[i]


def create_masked_lm_predictions(tokens: list[int], masked_lm_prob: float, max_predictions_per_seq: int,
                                 ids: TokenIds, do_whole_word_mask: bool,
                                 rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    """Google's masking of one `[CLS] A [SEP] B [SEP]` sequence.

    Returns (masked tokens, sorted masked positions, original ids at those positions).
    """
    # Candidates: single positions, or whole words (a head and its "##" pieces).
    special = (ids.cls, ids.sep)
    if do_whole_word_mask:
        candidates: list = []
        for i, token in enumerate(tokens):
            if token in special:
                continue
            if candidates and (token in ids.continuation or token >= WORD_CONTINUATION):
                candidates[-1].append(i)
            else:
                candidates.append([i])
    else:
        cls, sep = special
        candidates = [i for i, token in enumerate(tokens) if token != cls and token != sep]
    shuffle(candidates, rng)

    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    if do_whole_word_mask:
        # A word must fit entirely, else it is skipped. Candidate sets are disjoint, so Google's
        # "already covered" check never fires and is not repeated here.
        masked: list[int] = []
        for word in candidates:
            if len(masked) >= num_to_predict:
                break
            if len(masked) + len(word) <= num_to_predict:
                masked.extend(word)
    else:
        masked = candidates[:num_to_predict]
    output = list(tokens)
    for index in masked:  # in candidate order: the draws come in Google's order
        if rng.random() < 0.8:
            output[index] = ids.mask
        elif rng.random() < 0.5:
            pass  # 10%: keep the original token
        else:
            output[index] = ids.words[rng.randint(0, len(ids.words) - 1)]
    masked.sort()
    return output, masked, [tokens[i] for i in masked]


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                      rng: random.Random) -> tuple[list[int], list[int]]:
    """Google's truncation: drop one token at a time from the longer side (B on ties), from the
    front or the back with equal probability. Returns the truncated (A, B)."""
    a_lo, a_hi, b_lo, b_hi = 0, len(tokens_a), 0, len(tokens_b)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
        front = rng.random() < 0.5
        if a_hi - a_lo > b_hi - b_lo:
            a_lo, a_hi = (a_lo + 1, a_hi) if front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if front else (b_lo, b_hi - 1)
    return tokens_a[a_lo:a_hi], tokens_b[b_lo:b_hi]


def create_instances_from_document(all_documents: list[Document], document_index: int, config: InstanceConfig,
                                   ids: TokenIds, rng: random.Random) -> list[TrainingInstance]:
    """Google's `create_instances_from_document`: the instances of one visit of one document."""
    document = all_documents[document_index]
    max_num_tokens = config.max_seq_length - 3  # room for [CLS], [SEP], [SEP]
    target_seq_length = max_num_tokens
    if rng.random() < config.short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances = []
    current_chunk: list[list[int]] = []
    current_length = 0
    i = 0
    while i < len(document):
        current_chunk.append(document[i])
        current_length += len(document[i])
        if i == len(document) - 1 or current_length >= target_seq_length:
            a_end = 1
            if len(current_chunk) >= 2:
                a_end = rng.randint(1, len(current_chunk) - 1)
            tokens_a = [t for sentence in current_chunk[:a_end] for t in sentence]

            tokens_b: list[int] = []
            is_random_next = len(current_chunk) == 1 or rng.random() < 0.5
            if is_random_next:
                target_b_length = target_seq_length - len(tokens_a)
                for _ in range(10):  # try to pick another document
                    random_document_index = rng.randint(0, len(all_documents) - 1)
                    if random_document_index != document_index:
                        break
                random_document = all_documents[random_document_index]
                random_start = rng.randint(0, len(random_document) - 1)
                for sentence in random_document[random_start:]:
                    tokens_b.extend(sentence)
                    if len(tokens_b) >= target_b_length:
                        break
                i -= len(current_chunk) - a_end  # put the unused sentences back
            else:
                tokens_b = [t for sentence in current_chunk[a_end:] for t in sentence]
            tokens_a, tokens_b = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)

            tokens = [ids.cls, *tokens_a, ids.sep, *tokens_b, ids.sep]
            instances.append(masked_instance(tokens, len(tokens_a) + 2, is_random_next, config, ids, rng))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def masked_instance(tokens: list[int], segment_a_length: int, is_random_next: bool, config: InstanceConfig,
                    ids: TokenIds, rng: random.Random) -> TrainingInstance:
    """The instance of `tokens` (`[CLS] a [SEP] [b [SEP]]` ids), masked now with Google's procedure (drawing from
    `rng`) unless `config.dynamic_masking` leaves masking to the reader."""
    positions: list[int] = []
    labels: list[int] = []
    if not config.dynamic_masking:
        tokens, positions, labels = create_masked_lm_predictions(
            tokens, config.masked_lm_prob, config.max_predictions_per_seq, ids, config.do_whole_word_mask, rng)
    return TrainingInstance(tokens, segment_a_length, positions, labels, is_random_next)


def pack_segments(documents: list[Document], max_num_tokens: int, sep: int) -> list[list[int]]:
    """Packs documents, in their order, into segments of exactly `max_num_tokens` tokens (the last one shorter).

    The documents' sentences form one stream, cut every `max_num_tokens` tokens wherever that falls, as Hugging
    Face's run_mlm `group_texts` does; a `sep` token marks each document boundary inside a segment (never at a
    segment's start) and counts towards the length. Returns the segments' token ids, without [CLS] and [SEP].
    """
    stream: list[int] = []
    for document in documents:
        if len(stream) % max_num_tokens:  # a boundary inside a segment
            stream.append(sep)
        for sentence in document:
            stream.extend(sentence)
    return [stream[i:i + max_num_tokens] for i in range(0, len(stream), max_num_tokens)]


def create_packed_instances(documents: list[Document], config: InstanceConfig, ids: TokenIds,
                            rng: random.Random) -> list[TrainingInstance]:
    """The `mlm_only` layout: `dupe_factor` passes, each over the documents in a new random order packed by
    `pack_segments` into `[CLS] segment [SEP]` of `max_seq_length` tokens (the pass's last one shorter; segment
    id 0 throughout, no NSP label), masked with Google's procedure unless `dynamic_masking`; then all instances
    are shuffled. `short_seq_prob` is not used: every segment is full.
    """
    documents = [d for d in documents if d]
    instances = []
    for _ in range(config.dupe_factor):
        rng.shuffle(documents)
        for segment in pack_segments(documents, config.max_seq_length - 2, ids.sep):
            tokens = [ids.cls, *segment, ids.sep]
            instances.append(masked_instance(tokens, len(tokens), False, config, ids, rng))
    rng.shuffle(instances)
    return instances


def create_training_instances(documents: list[Document], config: InstanceConfig, ids: TokenIds,
                              rng: random.Random) -> list[TrainingInstance]:
    """Google's `create_training_instances` after tokenization: drop empty documents, shuffle,
    visit every document `dupe_factor` times, shuffle the instances."""
    documents = [d for d in documents if d]
    rng.shuffle(documents)
    instances = []
    for _ in range(config.dupe_factor):
        for document_index in range(len(documents)):
            instances.extend(create_instances_from_document(documents, document_index, config, ids, rng))
    rng.shuffle(instances)
    return instances


def pack_instances(instances: list[TrainingInstance], max_seq_length: int,
                   max_predictions_per_seq: int) -> dict[str, np.ndarray]:
    """Google's features, zero-padded, as arrays with one row per instance:
    input_ids, input_mask, segment_ids int32 [N, max_seq_length]; masked_lm_positions,
    masked_lm_ids int32 [N, max_predictions_per_seq]; masked_lm_weights float32
    [N, max_predictions_per_seq]; next_sentence_labels int32 [N, 1] (1 = random next)."""
    n = len(instances)

    def padded(rows: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.fromiter(map(len, rows), np.int64, n)
        filled = np.arange(width) < lengths[:, None]
        values = np.fromiter(chain.from_iterable(rows), np.int64, int(lengths.sum()))
        out = np.zeros((n, width), np.int32)
        out[filled] = values % WORD_CONTINUATION  # row-major fill; continuation marks removed
        return out, filled

    input_ids, input_mask = padded([inst.input_ids for inst in instances], max_seq_length)
    positions, weights = padded([inst.masked_lm_positions for inst in instances], max_predictions_per_seq)
    labels, _ = padded([inst.masked_lm_labels for inst in instances], max_predictions_per_seq)
    b_starts = np.fromiter((inst.segment_b_start for inst in instances), np.int64, n)
    return {
        "input_ids": input_ids,
        "input_mask": input_mask.astype(np.int32),
        "segment_ids": ((np.arange(max_seq_length) >= b_starts[:, None]) & input_mask).astype(np.int32),
        "masked_lm_positions": positions,
        "masked_lm_ids": labels,
        "masked_lm_weights": weights.astype(np.float32),
        "next_sentence_labels": np.fromiter((inst.is_random_next for inst in instances), np.int32, n).reshape(n, 1),
    }


_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instances.cc")
_FALLBACK = "building instances in Python (the same instances, several times slower)"


@functools.lru_cache(maxsize=None)
def native_library() -> ctypes.CDLL | None:
    """The compiled instance builder, built on first call; None if switched off or it can't be built."""
    lib = native.load_data_library(_SOURCE, "native instance builder", _FALLBACK)
    if lib is None:
        return None
    p = ctypes.c_void_p
    lib.sb_create_instances.restype = p
    lib.sb_create_instances.argtypes = [p, p, p, ctypes.c_int64, p, ctypes.c_double, ctypes.c_double, p, p,
                                        ctypes.c_int64, p, ctypes.c_int64, p, p]
    lib.sb_pack.restype = None
    lib.sb_pack.argtypes = [p, ctypes.c_int64, ctypes.c_int64, p, p, p, p, p, p, p]
    lib.sb_draw.restype = None
    lib.sb_draw.argtypes = [p, ctypes.c_int, ctypes.c_uint64, ctypes.c_int64, p, p]
    return lib


def _pointer(array: np.ndarray) -> int:
    return array.ctypes.data


def create_instance_arrays(documents: list[Document], config: InstanceConfig, ids: TokenIds,
                           rng: random.Random) -> dict[str, np.ndarray]:
    """`pack_instances(create_training_instances(...))` (or of `create_packed_instances` with `mlm_only`): the same
    arrays, and `rng` left in the same state, computed in C++ when the library is available, `rng` is a plain
    `random.Random` and the layout is Google's."""
    if config.mlm_only:  # the packed layout has no C++ twin
        instances = create_packed_instances(documents, config, ids, rng)
        return pack_instances(instances, config.max_seq_length, config.max_predictions_per_seq)
    lib = native_library()
    if lib is None or type(rng) is not random.Random or len(ids.words) >= 1 << 31:
        instances = create_training_instances(documents, config, ids, rng)
        return pack_instances(instances, config.max_seq_length, config.max_predictions_per_seq)
    documents = [d for d in documents if d]
    tokens = np.fromiter(chain.from_iterable(chain.from_iterable(documents)), np.int32)
    sentence_start = np.zeros(sum(map(len, documents)) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, chain.from_iterable(documents)), np.int64, len(sentence_start) - 1),
              out=sentence_start[1:])
    document_start = np.zeros(len(documents) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, documents), np.int64, len(documents)), out=document_start[1:])
    options = np.array([config.max_seq_length, config.max_predictions_per_seq, config.dupe_factor,
                        config.do_whole_word_mask, config.dynamic_masking], np.int64)
    special = np.array([ids.cls, ids.sep, ids.mask], np.int32)
    words, continuation = ids.arrays
    version, state, gauss_next = rng.getstate()
    state = np.array(state, np.uint32)
    count = np.zeros(1, np.int64)
    handle = lib.sb_create_instances(
        _pointer(tokens), _pointer(sentence_start), _pointer(document_start), len(documents), _pointer(options),
        config.masked_lm_prob, config.short_seq_prob, _pointer(special), _pointer(words), len(words),
        _pointer(continuation), len(continuation), _pointer(state), _pointer(count))
    rng.setstate((version, tuple(state.tolist()), gauss_next))
    n, seq, pred = int(count[0]), config.max_seq_length, config.max_predictions_per_seq
    arrays = {"input_ids": np.zeros((n, seq), np.int32), "input_mask": np.zeros((n, seq), np.int32),
              "segment_ids": np.zeros((n, seq), np.int32), "masked_lm_positions": np.zeros((n, pred), np.int32),
              "masked_lm_ids": np.zeros((n, pred), np.int32), "masked_lm_weights": np.zeros((n, pred), np.float32),
              "next_sentence_labels": np.zeros((n, 1), np.int32)}
    lib.sb_pack(handle, seq, pred, *(_pointer(arrays[k]) for k in (
        "input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights",
        "next_sentence_labels")))
    return arrays
