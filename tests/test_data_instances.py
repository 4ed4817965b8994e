"""Google's instance algorithm: a hand-checked example, identity with a plain rendering of Google's
script (bench/google_reference.py), whole-word masking and packing; the C++ builder against the Python
one and its random primitives against Python's `random`; the --mlm_only packed layout."""
from __future__ import annotations

import importlib.util
import os
import random

import logging

import numpy as np
import pytest

from smallbert.data import instances as instances_module
from smallbert.data.instances import (InstanceConfig, TokenIds, TrainingInstance, create_instance_arrays,
                                      create_instances_from_document, create_training_instances, native_library,
                                      pack_instances, pack_segments, shuffle, truncate_seq_pair)
from smallbert.errors import SmallBertError
from smallbert.tokenization import FullTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = TokenIds(cls=2, sep=3, mask=4, words=tuple(range(11)), continuation=frozenset({10}))


class ScriptedRandom:
    """Returns scripted draws; `getrandbits` is always 0, so `shuffle` rotates a list left by one."""

    def __init__(self, random=(), randint=()):
        self.randoms, self.randints = list(random), list(randint)

    def random(self):
        return self.randoms.pop(0)

    def randint(self, a, b):
        value = self.randints.pop(0)
        assert a <= value <= b
        return value

    def getrandbits(self, k):
        return 0


def test_hand_checked_example():
    # vocab: 2 [CLS], 3 [SEP], 4 [MASK]; words 5..9 = a b c d e
    documents = [[[5, 6], [7], [8, 9]], [[9, 9, 9]]]
    config = InstanceConfig(max_seq_length=8, max_predictions_per_seq=2, masked_lm_prob=0.25, short_seq_prob=0.0)
    # Document 0: target 5 tokens; A = 2 sentences (randint 2); actual next (random 0.7): B = [d e].
    # Candidates 1,2,3,5,6 rotate to 2,3,5,6,1; round(8 * 0.25) = 2 predictions:
    # position 2 -> [MASK] (0.1 < 0.8), position 3 kept (0.85, then 0.3 < 0.5).
    rng = ScriptedRandom(random=[0.9, 0.7, 0.1, 0.85, 0.3], randint=[2])
    (inst,) = create_instances_from_document(documents, 0, config, TOY, rng)
    assert inst == TrainingInstance([2, 5, 4, 7, 3, 8, 9, 3], 5, [2, 3], [6, 7], False)
    assert not rng.randoms and not rng.randints
    # Document 1 has one sentence: always a random next, from document 0 (randint 0) starting at its
    # sentence 1 (randint 1): B = [c d e] until 2 tokens are reached; 6 > 5 tokens, the tie trims B's
    # front (0.2 < 0.5). Dynamic masking: no masking draws.
    rng = ScriptedRandom(random=[0.9, 0.2], randint=[0, 1])
    (inst,) = create_instances_from_document(documents, 1, InstanceConfig(max_seq_length=8, short_seq_prob=0.0,
                                                                          dynamic_masking=True), TOY, rng)
    assert inst == TrainingInstance([2, 9, 9, 9, 3, 8, 9, 3], 5, [], [], True)
    assert not rng.randoms and not rng.randints


def test_pack_instances_pads_exactly():
    arrays = pack_instances([TrainingInstance([2, 5, 4, 7, 3, 8, 3], 5, [2, 3], [6, 7], True)], 9, 3)
    assert arrays["input_ids"].tolist() == [[2, 5, 4, 7, 3, 8, 3, 0, 0]]
    assert arrays["input_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 1, 0, 0]]
    assert arrays["segment_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 0, 0]]
    assert arrays["masked_lm_positions"].tolist() == [[2, 3, 0]]
    assert arrays["masked_lm_ids"].tolist() == [[6, 7, 0]]
    assert arrays["masked_lm_weights"].tolist() == [[1.0, 1.0, 0.0]]
    assert arrays["next_sentence_labels"].tolist() == [[1]]
    assert {a.dtype.name for a in arrays.values()} == {"int32", "float32"}


def test_truncate_and_shuffle_match_python():
    rng = random.Random(3)
    a, b = truncate_seq_pair(list(range(10)), list(range(100, 104)), 6, rng)
    assert len(a) + len(b) == 6 and len(b) == 3  # A shrinks to a tie (4), then B loses the tie
    for n in (0, 1, 2, 7, 130, 1000):
        ours, theirs = list(range(n)), list(range(n))
        rng_ours, rng_theirs = random.Random(n), random.Random(n)
        shuffle(ours, rng_ours)
        rng_theirs.shuffle(theirs)
        assert ours == theirs and rng_ours.random() == rng_theirs.random()


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return FullTokenizer(os.path.join(minilm_dir, "vocab.txt"))


def _corpus(tokenizer, num_documents: int, seed: int) -> list[list[list[int]]]:
    rng = random.Random(seed)
    words = [w for w in list(tokenizer.vocab)[2000:6000] if w.isalpha()]
    words += [a + b for a, b in zip(words[::7], words[3::7])]  # made-up compounds: several WordPieces
    texts = [[" ".join(rng.choices(words, k=rng.randint(1, 25))) for _ in range(rng.randint(1, 12))]
             for _ in range(num_documents)]
    return [[tokenizer.encode_batch([s])[0] for s in doc] for doc in texts]


@pytest.mark.parametrize("native", [False, True], ids=["python", "native"])
@pytest.mark.parametrize("whole_word", [False, True])
def test_identical_to_google_reference(tokenizer, whole_word, native):
    spec = importlib.util.spec_from_file_location("google_reference", os.path.join(REPO, "bench", "google_reference.py"))
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    documents = _corpus(tokenizer, 60, seed=1)
    config = InstanceConfig(max_seq_length=48, max_predictions_per_seq=7, dupe_factor=2, short_seq_prob=0.2,
                            do_whole_word_mask=whole_word)
    ids = TokenIds.from_vocab(tokenizer.vocab)
    if native:
        if native_library() is None:
            pytest.skip("no C++ compiler for the native instance builder")
        ours = _unpack(create_instance_arrays(documents, config, ids, random.Random(7)))
    else:
        ours = create_training_instances(documents, config, ids, random.Random(7))
    theirs = reference.create_instances([[tokenizer.convert_ids_to_tokens(s) for s in d] for d in documents],
                                        {"max_seq_length": 48, "max_predictions_per_seq": 7, "masked_lm_prob": 0.15,
                                         "short_seq_prob": 0.2, "dupe_factor": 2, "do_whole_word_mask": whole_word},
                                        list(tokenizer.vocab), seed=7)
    assert len(ours) == len(theirs) > 100
    for mine, google in zip(ours, theirs):
        assert tokenizer.convert_ids_to_tokens(mine.input_ids) == google["tokens"]
        assert [0] * mine.segment_b_start + [1] * (len(mine.input_ids) - mine.segment_b_start) == google["segment_ids"]
        assert mine.masked_lm_positions == google["masked_lm_positions"]
        assert tokenizer.convert_ids_to_tokens(mine.masked_lm_labels) == google["masked_lm_labels"]
        assert mine.is_random_next == google["is_random_next"]


def test_whole_word_masking_never_splits_a_word(tokenizer):
    ids = TokenIds.from_vocab(tokenizer.vocab)
    config = InstanceConfig(max_seq_length=64, max_predictions_per_seq=10, dupe_factor=3, do_whole_word_mask=True)
    instances = create_training_instances(_corpus(tokenizer, 80, seed=2), config, ids, random.Random(0))
    continuation_masked = 0
    for inst in instances:
        original = list(inst.input_ids)
        for position, label in zip(inst.masked_lm_positions, inst.masked_lm_labels):
            original[position] = label
        masked = set(inst.masked_lm_positions)
        word: list[int] = []
        for position, token in enumerate(original + [ids.cls]):
            if token in ids.continuation and word:
                word.append(position)
                continue
            assert len(masked.intersection(word)) in (0, len(word)), (original, word, masked)
            continuation_masked += len(word) > 1 and word[0] in masked
            word = [] if token in (ids.cls, ids.sep) else [position]
    assert continuation_masked > 10  # multi-piece words were masked (whole)


def test_bad_settings_and_vocab():
    with pytest.raises(SmallBertError, match="--max_seq_length=4"):
        InstanceConfig(max_seq_length=4).validate()
    with pytest.raises(SmallBertError, match="--max_predictions_per_seq=0"):
        InstanceConfig(max_predictions_per_seq=0).validate()
    with pytest.raises(SmallBertError, match=r"v.txt: vocab lacks \[CLS\], \[MASK\]"):
        TokenIds.from_vocab({"[SEP]": 0, "a": 1}, "v.txt")


def test_chinese_whole_word_mask(tmp_path):
    rjieba = pytest.importorskip("rjieba")
    from smallbert.data.instances import WORD_CONTINUATION
    from smallbert.data.pipeline import PipelineConfig, _Worker

    words = ["北京", "天安门", "我们", "喜欢", "学习", "中国", "人民", "的", "了", "中华人民共和国"]
    chars = sorted(set("".join(words)))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "，", "。", "!", "also", "una", "##ffa",
                                "##ble", *chars]) + "\n", encoding="utf-8")
    tokenizer = FullTokenizer(vocab)
    config = PipelineConfig(input_files=(), output_dir=str(tmp_path), vocab_file=str(vocab),
                            chinese_whole_word_mask=True, instances=InstanceConfig(do_whole_word_mask=True))
    worker = _Worker(config)
    sentence = "我们喜欢北京天安门，also 中华人民共和国 unaffable!"
    (marked,) = worker._encode_chinese_words([sentence])
    assert [i % WORD_CONTINUATION for i in marked] == tokenizer.encode_batch([sentence])[0]
    segmented = rjieba.cut("我们喜欢北京天安门") + rjieba.cut("中华人民共和国")
    assert [i < WORD_CONTINUATION for i in marked if tokenizer.inv_vocab[i % WORD_CONTINUATION] in chars] == \
        [k == 0 for word in segmented for k in range(len(word))]  # a head per jieba word, the rest continue it
    assert any(len(word) > 1 for word in segmented)

    rng = random.Random(0)
    texts = ["".join(rng.choices(words, k=12)) + "。" for _ in range(200)]
    docs = [worker._encode_chinese_words(texts[k:k + 5]) for k in range(0, 200, 5)]
    instances = create_training_instances(docs, InstanceConfig(max_seq_length=40, max_predictions_per_seq=6,
                                                               do_whole_word_mask=True, dupe_factor=2),
                                          TokenIds.from_vocab(tokenizer.vocab), rng)
    arrays = pack_instances(instances, 40, 6)
    assert arrays["input_ids"].max() < len(tokenizer.vocab) and arrays["masked_lm_ids"].max() < len(tokenizer.vocab)
    whole = 0
    for inst in instances:
        original = list(inst.input_ids)
        for position, label in zip(inst.masked_lm_positions, inst.masked_lm_labels):
            original[position] = label
        masked = set(inst.masked_lm_positions)
        groups: list[list[int]] = []  # words as masking sees them: [CLS]/[SEP] are skipped, not boundaries
        for position, token in enumerate(original):
            if token in (2, 3):
                continue
            if token >= WORD_CONTINUATION and groups:
                groups[-1].append(position)
            else:
                groups.append([position])
        for group in groups:
            assert len(masked.intersection(group)) in (0, len(group))
            whole += len(group) > 1 and group[0] in masked
    assert whole > 20


def _unpack(arrays: dict[str, np.ndarray]) -> list[TrainingInstance]:
    """The instances of `pack_instances` arrays (continuation marks are gone)."""
    out = []
    for k, length in enumerate(arrays["input_mask"].sum(axis=1)):
        count = int(arrays["masked_lm_weights"][k].sum())
        out.append(TrainingInstance(arrays["input_ids"][k, :length].tolist(), int(length - arrays["segment_ids"][k].sum()),
                                    arrays["masked_lm_positions"][k, :count].tolist(),
                                    arrays["masked_lm_ids"][k, :count].tolist(), bool(arrays["next_sentence_labels"][k, 0])))
    return out


needs_native = pytest.mark.skipif(native_library() is None, reason="no C++ compiler for the native instance builder")


def _draw(rng: random.Random, kind: int, bound: int = 0, count: int = 0, items: np.ndarray | None = None):
    """One `sb_draw` call on `rng`'s state; returns the draws and leaves `rng` advanced as the C++ left it."""
    version, state, gauss = rng.getstate()
    state = np.array(state, np.uint32)
    out = np.zeros(max(count, 1), np.float64)
    items = np.zeros(1, np.int64) if items is None else items
    native_library().sb_draw(state.ctypes.data, kind, bound, len(items) if kind == 2 else count, out.ctypes.data,
                             items.ctypes.data)
    rng.setstate((version, tuple(state.tolist()), gauss))
    return out[:count]


@needs_native
def test_native_random_primitives_match_python():
    """random(), _randbelow (hence randint) and shuffle: the same values and the same state after, across seeds,
    bounds at and around powers of two, and runs crossing the 624-word regeneration."""
    bounds = [1, 2, 3, 4, 5, 7, 8, 9, 127, 128, 129, 30522, (1 << 31) - 1, 1 << 31, (1 << 32) - 1]
    for seed in [0, 1, 7, 12345, 12345 + (3 << 32), 2 ** 70 + 5, -3, *range(100, 140)]:
        ours, theirs = random.Random(seed), random.Random(seed)
        assert _draw(ours, 0, count=700).tolist() == [theirs.random() for _ in range(700)]
        for bound in bounds:
            assert _draw(ours, 1, bound, 50).astype(np.int64).tolist() == [theirs._randbelow(bound) for _ in range(50)]
            assert ours.getstate() == theirs.getstate()
        for n in (0, 1, 2, 3, 130, 2000):
            items = np.arange(n, dtype=np.int64)
            _draw(ours, 2, items=items)
            expected = list(range(n))
            theirs.shuffle(expected)
            assert items.tolist() == expected
        assert ours.getstate() == theirs.getstate() and ours.random() == theirs.random()


def _toy_corpus(rng: random.Random) -> list[list[list[int]]]:
    """Small documents over ids 2..11 of TOY: [CLS]/[SEP] ids inside the text, "##" pieces (10) and marked word
    continuations anywhere, one-sentence documents, empty sentences and documents."""
    tokens = [2, 3, 5, 6, 7, 8, 9, 10, 10, 11, 5 + instances_module.WORD_CONTINUATION]
    return [[[rng.choice(tokens) for _ in range(rng.choice([0, 1, 1, 2, 3, 5, 9, 20]))]
             for _ in range(rng.choice([0, 1, 1, 2, 3, 6]))] for _ in range(rng.randint(1, 12))]


@needs_native
def test_native_builder_matches_python_on_edge_cases():
    """Random small corpora and settings: the C++ arrays and final generator state equal the Python path's."""
    toy = TokenIds(cls=2, sep=3, mask=4, words=tuple(range(12)), continuation=frozenset({10}))
    cases = random.Random(0)
    for case in range(300):
        documents = _toy_corpus(cases)
        config = InstanceConfig(max_seq_length=cases.randint(5, 24), max_predictions_per_seq=cases.randint(1, 5),
                                masked_lm_prob=cases.choice([0.15, 0.5, 0.1875]), short_seq_prob=cases.random(),
                                dupe_factor=cases.randint(1, 3), do_whole_word_mask=cases.random() < 0.5,
                                dynamic_masking=cases.random() < 0.2)
        config = InstanceConfig(**{**config.__dict__,
                                   "max_predictions_per_seq": min(config.max_predictions_per_seq, config.max_seq_length)})
        python_rng, native_rng = random.Random(case), random.Random(case)
        expected = pack_instances(create_training_instances(documents, config, toy, python_rng),
                                  config.max_seq_length, config.max_predictions_per_seq)
        got = create_instance_arrays(documents, config, toy, native_rng)
        for name, array in expected.items():
            assert got[name].dtype == array.dtype and np.array_equal(got[name], array), (case, name, config)
        assert native_rng.getstate() == python_rng.getstate(), case


def test_without_a_compiler_the_python_path_runs(tmp_path, monkeypatch, caplog, tokenizer):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("SMALLBERT_CACHE_DIR", str(tmp_path / "cache"))
    native_library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="smallbert"):
            assert native_library() is None
        assert "native instance builder: no C++ compiler" in caplog.text
        documents = _corpus(tokenizer, 20, seed=3)
        config = InstanceConfig(max_seq_length=32, max_predictions_per_seq=5, dupe_factor=2)
        ids = TokenIds.from_vocab(tokenizer.vocab)
        got = create_instance_arrays(documents, config, ids, random.Random(1))
        expected = pack_instances(create_training_instances(documents, config, ids, random.Random(1)), 32, 5)
        assert all(np.array_equal(got[k], expected[k]) for k in expected) and len(got["input_ids"]) > 10
    finally:
        monkeypatch.undo()
        native_library.cache_clear()


def test_pack_segments_hand_checked():
    # 4 tokens per segment, [SEP] = 3 between documents: a boundary inside a segment is marked, one that falls
    # on a segment's start is not (doc 1 ends segment 2 exactly); sentences are cut wherever a segment fills.
    documents = [[[5, 6], [7]], [[10, 11, 12, 13, 14]], [[15], [16, 17]]]
    assert pack_segments(documents, 4, 3) == [[5, 6, 7, 3], [10, 11, 12, 13], [14, 3, 15, 16], [17]]
    assert pack_segments([[[5, 6, 7, 8]], [[9]]], 4, 3) == [[5, 6, 7, 8], [9]]


def test_packed_segments_keep_every_token_in_order_at_full_length(tokenizer):
    documents = _corpus(tokenizer, 40, seed=4)
    max_num_tokens, sep = 46, tokenizer.vocab["[SEP]"]
    segments = pack_segments(documents, max_num_tokens, sep)
    stream = [t for d in documents for s in d for t in s]
    assert sep not in stream
    assert [t for seg in segments for t in seg if t != sep] == stream
    assert 0 < sum(t == sep for seg in segments for t in seg) <= len(documents) - 1  # one mark per boundary
    assert all(seg[0] != sep for seg in segments)
    assert [len(seg) for seg in segments[:-1]] == [max_num_tokens] * (len(segments) - 1)
    assert 0 < len(segments[-1]) <= max_num_tokens


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_mlm_only_instances(tokenizer, dynamic):
    documents = _corpus(tokenizer, 40, seed=5)
    ids = TokenIds.from_vocab(tokenizer.vocab)
    config = InstanceConfig(max_seq_length=48, max_predictions_per_seq=7, dupe_factor=2, mlm_only=True,
                            dynamic_masking=dynamic)
    arrays = create_instance_arrays(documents, config, ids, random.Random(3))
    lengths = arrays["input_mask"].sum(1)
    assert arrays["input_mask"].tolist() == (np.arange(48) < lengths[:, None]).astype(int).tolist()
    assert not arrays["segment_ids"].any() and not arrays["next_sentence_labels"].any()
    original = arrays["input_ids"].copy()
    rows = np.arange(len(original))[:, None]
    weights = arrays["masked_lm_weights"] > 0
    original[rows, arrays["masked_lm_positions"]] = np.where(weights, arrays["masked_lm_ids"],
                                                             original[rows, arrays["masked_lm_positions"]])
    assert (original[:, 0] == ids.cls).all() and (original[rows[:, 0], lengths - 1] == ids.sep).all()
    # Every token of the corpus, dupe_factor times: nothing lost or repeated by the packing.
    body = [t for row, n in zip(original, lengths) for t in row[1:n - 1] if t != ids.sep]
    corpus = [t for d in documents for s in d for t in s]
    assert sorted(body) == sorted(corpus * 2)
    assert (lengths < 48).sum() <= 2  # full, but for the last segment of each of the dupe_factor passes
    if dynamic:
        assert not weights.any()
        return
    expected = np.minimum(7, np.maximum(1, np.round(lengths * 0.15)))
    assert weights.sum(1).tolist() == expected.tolist()
    masked_positions = np.where(weights, arrays["masked_lm_positions"], 1)
    assert all((np.diff(p[w]) > 0).all() for p, w in zip(arrays["masked_lm_positions"], weights))  # sorted
    at = original[rows, masked_positions]
    assert not np.isin(at, [ids.cls, ids.sep]).any()  # [CLS], [SEP] and boundary marks are never masked
