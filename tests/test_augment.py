"""The transfer-set augmentation (Tang et al. 2019): each rule's rate and shape, pairs, repeats, determinism."""
from __future__ import annotations

from collections import Counter

import pytest

from smallbert.finetune.augment import Augmentation, augment

WORDS = [f"w{i}" for i in range(20)]
SENTENCES = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(20)]  # 20 rotations: every word once per sentence


def test_dropped_words_come_at_their_rate():
    copies, _ = augment(SENTENCES, None, Augmentation(200, p_drop=0.3, p_replace=0.0, p_ngram=0.0))
    kept = sum(len(c.split()) for c in copies) / (20 * len(copies))
    assert abs(kept - 0.7) < 0.01, kept
    for copy in copies:  # what is left keeps its order: a subsequence of some rotation
        words = copy.split()
        start = WORDS.index(words[0])
        rotation = WORDS[start:] + WORDS[:start]
        assert words == [w for w in rotation if w in set(words)]


def test_replacements_follow_the_word_frequencies():
    text = [" ".join(["a"] * 32 + ["b"] * 4 + ["c"] * 4)]  # a: 80% of the words; 40 words: no copy repeats
    copies, _ = augment(text, None, Augmentation(200, p_drop=0.0, p_replace=1.0, p_ngram=0.0))
    assert len(copies) == 200
    counts = Counter(w for c in copies for w in c.split())
    assert set(counts) == {"a", "b", "c"}
    assert abs(counts["a"] / 8000 - 0.8) < 0.015 and abs(counts["b"] / 8000 - 0.1) < 0.01, counts


def test_ngrams_are_contiguous_and_at_most_max_ngram_long():
    copies, _ = augment(SENTENCES, None, Augmentation(50, p_drop=0.0, p_replace=0.0, p_ngram=1.0, max_ngram=5))
    lengths = Counter(len(c.split()) for c in copies)
    assert set(lengths) == {1, 2, 3, 4, 5}
    double = " ".join(WORDS + WORDS)
    assert all(f" {c} " in f" {double} " for c in copies)
    assert len(copies) == len(set(copies))


def test_copies_are_new_nonempty_and_deterministic():
    text = ["x", "x y", "good film", "a good film , really"]
    how = Augmentation(30, p_drop=0.5, p_replace=0.2)
    copies, _ = augment(text, None, how)
    assert copies == augment(text, None, how)[0]
    assert copies != augment(text, None, Augmentation(30, p_drop=0.5, p_replace=0.2, seed=1))[0]
    assert len(copies) == len(set(copies)) and not set(copies) & set(text)
    assert all(c.strip() == c and c for c in copies)
    assert len(copies) < 4 * 30  # short texts: many tries repeat a copy already made, or lose every word


def test_pairs_are_perturbed_side_by_side():
    a = ["the cat sat on the mat today", "dogs bark loudly at night"]
    b = ["a cat was sitting", "the night is loud"]
    copies_a, copies_b = augment(a, b, Augmentation(10))
    assert len(copies_a) == len(copies_b) > 10
    assert all(x and y for x, y in zip(copies_a, copies_b))
    assert not set(zip(copies_a, copies_b)) & set(zip(a, b))
    assert augment(a, None, Augmentation(10))[1] is None


def test_digest_changes_with_every_setting():
    digests = {Augmentation(2).digest("t"), Augmentation(3).digest("t"), Augmentation(2, seed=1).digest("t"),
               Augmentation(2, p_drop=0.2).digest("t"), Augmentation(2).digest("u")}
    assert len(digests) == 5


@pytest.mark.parametrize("copies", [0, 1])
def test_no_copies_without_words(copies):
    assert augment([], None, Augmentation(copies)) == ([], None)
