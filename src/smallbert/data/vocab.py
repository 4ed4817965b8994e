"""WordPiece vocabularies: train one on a corpus in Google's `vocab.txt` layout, and check that a file is one.

Training reads the corpus with the same readers as create_pretraining_data (`extract.read_documents`: a
Wikipedia dump, Google's text format or plain text, one sentence a line), cuts it into words exactly as
`FullTokenizer` does (Google's cleaning, whitespace split, lower-casing and accent stripping in Python; the
split of punctuation and CJK ideographs in Rust with the class computed from this interpreter's
`unicodedata`) and counts them with the `tokenizers` WordPiece trainer. The corpus streams through: memory
holds the distinct words and their counts, never the text. Every `1 / held_out`-th sentence (at most
MAX_HELD_OUT_SENTENCES) is kept out of training to measure the built vocab: the share of words that become
"[UNK]" and the WordPieces per word.

The written layout is Google's: "[PAD]", `num_unused` "[unusedN]" slots, "[UNK]", "[CLS]", "[SEP]", "[MASK]"
(ids 0, 1.., 100-103 with the default 99 slots, as in Google's vocabs), then the single characters, their
"##" continuations and the learned pieces in the order the trainer learned them; a corpus too small to fill
`vocab_size` gets more "[unusedN]" slots at the end, so the file always has exactly `vocab_size` lines.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from smallbert.data.extract import expand_inputs, is_wiki_dump, read_documents
from smallbert.errors import SmallBertError
from smallbert.tokenization import UNK_TOKEN, FullTokenizer, _strip_accents, _unicode_classes, load_vocab

REQUIRED_TOKENS = (UNK_TOKEN, "[CLS]", "[SEP]", "[MASK]")
MAX_HELD_OUT_SENTENCES = 20_000


def read_vocab_tokens(path: str | os.PathLike) -> list[str]:
    """The tokens of a BERT `vocab.txt` in id order, after checking it is a vocabulary.

    Raises SmallBertError (one line, naming the file and line) for a missing, unreadable, non-UTF-8 or empty
    file, an empty line, a token listed twice, or a missing "[UNK]", "[CLS]", "[SEP]" or "[MASK]".
    """
    load_vocab(path)  # its errors: missing, unreadable, not UTF-8, empty
    with open(path, encoding="utf-8") as f:
        tokens = [line.strip() for line in f.read().splitlines()]
    first_line: dict[str, int] = {}
    for line, token in enumerate(tokens, 1):
        if not token:
            raise SmallBertError(f"{path}:{line}: empty line in vocab file (one token per line)")
        if token in first_line:
            raise SmallBertError(f"{path}:{line}: duplicate token {token!r} (also on line {first_line[token]})")
        first_line[token] = line
    missing = [t for t in REQUIRED_TOKENS if t not in first_line]
    if missing:
        raise SmallBertError(f"{path}: vocab lacks {', '.join(missing)}")
    return tokens


@dataclass(frozen=True)
class VocabConfig:
    """Flags of tools/build_vocab.py."""

    input_files: tuple[str, ...]
    output: str
    vocab_size: int
    do_lower_case: bool = True
    min_frequency: int = 2
    limit_alphabet: int | None = 1000
    num_unused: int = 99
    held_out: float = 0.01
    processes: int = 1
    language: str = "en"

    def validate(self) -> None:
        if self.vocab_size < 1:
            raise SmallBertError(f"--vocab_size={self.vocab_size}: must be positive")
        if self.num_unused < 0:
            raise SmallBertError(f"--num_unused={self.num_unused}: must be >= 0")
        if self.vocab_size <= self.num_unused + 5:
            raise SmallBertError(f"--vocab_size={self.vocab_size}: leaves no room for pieces after the 5 special "
                                 f"tokens and --num_unused={self.num_unused} slots")
        if self.min_frequency < 1:
            raise SmallBertError(f"--min_frequency={self.min_frequency}: must be at least 1")
        if self.limit_alphabet is not None and self.limit_alphabet < 1:
            raise SmallBertError(f"--limit_alphabet={self.limit_alphabet}: must be at least 1")
        if not 0.0 <= self.held_out < 0.5:
            raise SmallBertError(f"--held_out={self.held_out}: must be in [0, 0.5)")
        if self.processes < 1:
            raise SmallBertError(f"--processes={self.processes}: must be at least 1")
        if os.path.isdir(self.output):
            raise SmallBertError(f"--output={self.output}: is a directory; give the vocab.txt path")


class BasicWords:
    """Google's basic tokenization, as `FullTokenizer` runs it: `normalize` does the Python part (drop
    controls, whitespace split, lower-case and strip accents per word) and returns the words joined by single
    spaces; `pre_tokenizer` (Rust) splits that at the spaces and around punctuation and CJK ideographs."""

    def __init__(self, do_lower_case: bool, cache_size: int = 1 << 18):
        self._remove, split_class = _unicode_classes()
        self.do_lower_case = do_lower_case
        self.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="removed"),
                                                      pre_tokenizers.Split(Regex(split_class), behavior="isolated")])
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    def normalize(self, text: str) -> str:
        words = self._remove.sub("", text).split()
        if not self.do_lower_case:
            return " ".join(words)
        if len(self._cache) > self._cache_size:
            self._cache.clear()
        cache = self._cache
        out = []
        for word in words:
            lowered = cache.get(word)
            if lowered is None:
                lowered = cache[word] = _strip_accents(word.lower())
            out.append(lowered)
        return " ".join(out)

    def words(self, text: str) -> list[str]:
        """The words of `text` that WordPiece sees (Google's `BasicTokenizer.tokenize`)."""
        return [w for w, _ in self.pre_tokenizer.pre_tokenize_str(self.normalize(text))]


def reserved_tokens(num_unused: int) -> list[str]:
    """Google's head of the vocab: [PAD], [unused0..num_unused-1], [UNK], [CLS], [SEP], [MASK]."""
    return ["[PAD]", *(f"[unused{i}]" for i in range(num_unused)), UNK_TOKEN, "[CLS]", "[SEP]", "[MASK]"]


def google_layout(learned: dict[str, int], vocab_size: int, num_unused: int) -> tuple[list[str], int]:
    """Orders the trainer's {token: id} in Google's layout with exactly `vocab_size` tokens.

    Returns (tokens, extra unused slots appended because the corpus gave too few pieces). Raises
    SmallBertError if the alphabet alone does not fit.
    """
    head = reserved_tokens(num_unused)
    by_id = sorted(learned, key=learned.__getitem__)
    # The trainer numbers the alphabet in hash order: sort it, so that the file is the same every run.
    chars = sorted(t for t in by_id if len(t) == 1)
    continuations = sorted(t for t in by_id if len(t) == 3 and t.startswith("##"))
    alphabet = set(chars) | set(continuations)
    pieces = [t for t in by_id if t not in alphabet]
    room = vocab_size - len(head)
    if len(chars) + len(continuations) > room:
        raise SmallBertError(f"--vocab_size={vocab_size}: the corpus's {len(chars)} characters and their "
                             f"{len(continuations)} '##' forms need {len(head) + len(chars) + len(continuations)} "
                             f"lines with the special tokens; raise --vocab_size or lower --limit_alphabet")
    tokens = head + chars + continuations + pieces[:room - len(chars) - len(continuations)]
    extra = vocab_size - len(tokens)
    tokens += [f"[unused{num_unused + i}]" for i in range(extra)]
    return tokens, extra


def held_out_statistics(vocab_file: str, do_lower_case: bool, sentences: list[str]) -> dict[str, float]:
    """UNK rate (share of words that become "[UNK]": WordPiece maps an uncoverable word to one "[UNK]") and
    WordPieces per word of `sentences` under the vocab."""
    tokenizer, basic = FullTokenizer(vocab_file, do_lower_case), BasicWords(do_lower_case)
    tokens = tokenizer.tokenize_batch(sentences)
    words = sum(len(basic.words(s)) for s in sentences)
    pieces = sum(len(t) for t in tokens)
    unknown = sum(t.count(UNK_TOKEN) for t in tokens)
    return {"held_out_sentences": len(sentences), "held_out_words": words, "held_out_wordpieces": pieces,
            "unk_rate": unknown / max(words, 1), "wordpieces_per_word": pieces / max(words, 1)}


class _Progress:
    """A bar over input bytes (text files) or documents (a dump's size says little about its articles)."""

    def __init__(self, files: list[str], counts: Counter):
        from tqdm import tqdm

        self.by_bytes, self.counts = not any(is_wiki_dump(f) for f in files), counts
        self.bar = tqdm(desc="build_vocab: counting words", total=sum(os.path.getsize(f) for f in files)
                        if self.by_bytes else None, unit="B" if self.by_bytes else " docs",
                        unit_scale=self.by_bytes, dynamic_ncols=True)

    def update(self) -> None:
        self.bar.update(self.counts["input_bytes_read"] - self.bar.n if self.by_bytes else 1)

    def close(self) -> None:
        self.bar.close()


def _training_batches(config: VocabConfig, files: list[str], counts: Counter, basic: BasicWords,
                      held_out: list[str]) -> Iterator[list[str]]:
    """Normalized sentences, one list per document, for the trainer; every `1/held_out`-th sentence goes to
    `held_out` instead (until MAX_HELD_OUT_SENTENCES)."""
    every = round(1 / config.held_out) if config.held_out else 0
    progress = _Progress(files, counts)
    try:
        for document in read_documents(files, counts, config.language, config.processes):
            batch = []
            for sentence in document:
                counts["sentences"] += 1
                if every and counts["sentences"] % every == 0 and len(held_out) < MAX_HELD_OUT_SENTENCES:
                    held_out.append(sentence)
                else:
                    batch.append(basic.normalize(sentence))
            counts["characters"] += sum(len(s) for s in batch)
            progress.update()
            yield batch
    finally:
        progress.close()


def build_vocab(config: VocabConfig) -> dict:
    """Trains a WordPiece vocab on the corpus and writes it to `config.output` (a temp name, then renamed).

    Returns a report: counts, tokens learned and written, extra unused slots, and the held-out statistics
    (absent when nothing was held out).
    """
    config.validate()
    files = expand_inputs(list(config.input_files))
    # The trainer's Rust thread pool is sized once, at first use.
    os.environ.setdefault("RAYON_RS_NUM_CPUS", str(config.processes))
    basic = BasicWords(config.do_lower_case)
    reserved = reserved_tokens(config.num_unused)
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, continuing_subword_prefix="##"))
    tokenizer.pre_tokenizer = basic.pre_tokenizer
    trainer = trainers.WordPieceTrainer(vocab_size=config.vocab_size - len(reserved),
                                        min_frequency=config.min_frequency, limit_alphabet=config.limit_alphabet,
                                        special_tokens=[], continuing_subword_prefix="##", show_progress=False)
    counts: Counter = Counter()
    held_out: list[str] = []
    start = time.time()
    tokenizer.train_from_iterator(_training_batches(config, files, counts, basic, held_out), trainer)
    learned = tokenizer.get_vocab()
    if not learned:
        raise SmallBertError(f"--input_file: no words in {len(files)} file(s) ({counts['sentences']} sentences"
                             f"{', all held out' if counts['sentences'] else ''})")
    tokens, extra = google_layout(learned, config.vocab_size, config.num_unused)
    tmp = config.output + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(config.output)), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    os.replace(tmp, config.output)
    read_vocab_tokens(config.output)  # what we wrote must load as a vocab
    report = {"output": config.output, "vocab_size": len(tokens), "learned_tokens": len(learned),
              "extra_unused_slots": extra, "seconds": round(time.time() - start, 1), **dict(sorted(counts.items()))}
    if held_out:
        report.update(held_out_statistics(config.output, config.do_lower_case, held_out))
    return report
