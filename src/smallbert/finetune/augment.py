"""A larger transfer set from the task's own train text (Tang et al. 2019, "Distilling Task-Specific Knowledge from
BERT into Simple Neural Networks", section 3.3).

A distilled student learns the teacher's function only where the transfer set has text. When that set is the
labelled train set itself, the soft targets add little over the labels; perturbed copies of each train example,
labelled by the teacher alone, show the student the teacher's answers around every example. Each copy is made
word by word, as Tang et al. do, then cut to an n-gram:
  - each word is dropped with probability `p_drop` (Tang et al. write [MASK]; Google's tokenizer reads "[MASK]" in
    text as three tokens, so the word leaves instead),
  - else replaced, with probability `p_replace`, by a word drawn from the train text's word frequencies (Tang et
    al. draw one of the same part of speech; no tagger here),
  - then, with probability `p_ngram`, only a random n-gram of n = 1..`max_ngram` words is kept.
Words are whitespace-separated tokens (GLUE's files are tokenized so). Copies that repeat an example or an
earlier copy, or lose every word, are not kept. The draws come from `random.Random(seed)`: the same train text and
settings give the same copies, so the teacher's cached logits for them are found again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections import Counter


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """How many perturbed copies of each train example to try, and Tang et al.'s probabilities (their defaults)."""

    copies: int
    p_drop: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    max_ngram: int = 5
    seed: int = 0

    def digest(self, text_digest: str) -> str:
        """A cache key for the copies of the text whose digest is `text_digest`: they depend on nothing else."""
        return hashlib.sha1(f"{text_digest}|{dataclasses.astuple(self)}".encode()).hexdigest()


def augment(text_a: list[str], text_b: list[str] | None, how: Augmentation) -> tuple[list[str], list[str] | None]:
    """Up to `how.copies` new examples per example, in example order; returns (text_a, text_b) of the copies.

    text_a, text_b: N examples (text_b None for single sentences; a pair's two texts are perturbed separately).
    """
    rng = random.Random(how.seed)
    counts = Counter(word for text in itertools.chain(text_a, text_b or ()) for word in text.split())
    words = list(counts)
    cumulative = list(itertools.accumulate(counts[w] for w in words))

    def perturb(text: str) -> str:
        kept = []
        for word in text.split():
            r = rng.random()
            if r < how.p_drop:
                continue
            kept.append(rng.choices(words, cum_weights=cumulative)[0] if r < how.p_drop + how.p_replace else word)
        if len(kept) > 1 and rng.random() < how.p_ngram:
            n = rng.randint(1, min(how.max_ngram, len(kept)))
            start = rng.randrange(len(kept) - n + 1)
            kept = kept[start:start + n]
        return " ".join(kept)

    pairs = list(zip(text_a, text_b)) if text_b is not None else [(a, None) for a in text_a]
    seen = {(" ".join(a.split()), b and " ".join(b.split())) for a, b in pairs}
    new_a, new_b = [], []
    for a, b in pairs:
        for _ in range(how.copies):
            copy = (perturb(a), b if b is None else perturb(b))
            if copy in seen or not copy[0] or copy[1] == "":
                continue
            seen.add(copy)
            new_a.append(copy[0])
            new_b.append(copy[1])
    return new_a, (new_b if text_b is not None else None)
