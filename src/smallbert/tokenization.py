"""Google BERT's tokenizer (BasicTokenizer + greedy WordPiece), with WordPiece in Rust `tokenizers`.

Google's `tokenization.py` does, per input text:
  1. clean: drop NUL, U+FFFD and control characters (categories Cc/Cf except \\t \\n \\r), map
     whitespace to " ";
  2. put spaces around CJK ideographs;
  3. split on whitespace; when lower-casing, lower each word with Python's `str.lower()` (which
     knows the Greek final sigma) and strip accents (NFD, then drop category Mn);
  4. split off every punctuation character (ASCII non-alphanumerics and categories P*);
  5. greedy longest-match-first WordPiece with "##" continuations; a word longer than
     `max_input_chars_per_word` characters, or one that cannot be covered, becomes "[UNK]".

`tokenizers.normalizers.BertNormalizer` / `BertPreTokenizer` do the same steps with other
tables: measured over every code point, they drop private-use characters (Google keeps them, as
"[UNK]"), use other Unicode versions for controls, punctuation, marks and CJK ranges, and lower
character by character (no final sigma). So here steps 1-3 run in Python with Google's own
calls (`str.split`, `str.lower`, `unicodedata`) and steps 4-5 in Rust, with the punctuation and
CJK class computed from this interpreter's `unicodedata`. Everything after step 1 happens inside
one whitespace-separated word, so each distinct word goes through steps 2-5 once and its ids are
remembered: natural text repeats most words, which makes this several times faster than running
every occurrence through Rust. Tested equal to Google's tokens over every code point.

Unlike `transformers`' Python port, text is not NFC-normalized first, and special tokens such as
"[MASK]" written in the text are split like any other text ("[", "mask", "]"), as Google does.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import re
import sys
import unicodedata
from itertools import chain
from typing import Iterable, Sequence

from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from smallbert import native
from smallbert.errors import SmallBertError
from smallbert.fileio import write_json

UNK_TOKEN = "[UNK]"
CJK_RANGES = (  # Google's `_is_chinese_char`: the CJK Unified Ideographs blocks.
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def load_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Reads a BERT `vocab.txt` (one token a line, id = line number) into {token: id}.

    Like Google's loader, each line is stripped of surrounding whitespace.
    Raises SmallBertError naming the file if it is missing, unreadable, not UTF-8 or empty.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise SmallBertError(f"{path}: vocab file not found") from None
    except UnicodeDecodeError as err:
        raise SmallBertError(f"{path}: vocab file is not UTF-8 ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise SmallBertError(f"{path}: cannot read vocab file ({err.strerror})") from None
    vocab = {line.strip(): index for index, line in enumerate(lines)}
    if not lines or vocab.keys() == {""}:
        raise SmallBertError(f"{path}: vocab file is empty")
    return vocab


def load_wordpiece_vocab(path: str | os.PathLike) -> dict[str, int]:
    """`load_vocab`, requiring the "[UNK]" token WordPiece falls back to (SmallBertError naming the file)."""
    vocab = load_vocab(path)
    if UNK_TOKEN not in vocab:
        raise SmallBertError(f"{path}: vocab has no {UNK_TOKEN} token")
    return vocab


def _ranges(chars: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged ranges [(first, last), ...] covering exactly the code points `chars`."""
    ranges: list[list[int]] = []
    for cp in sorted(chars):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return [(a, b) for a, b in ranges]


@functools.lru_cache(maxsize=None)
def _unicode_classes() -> tuple[re.Pattern, str]:
    """Google's character classes from this interpreter's `unicodedata`: the Python regex of what
    `_clean_text` drops (NUL, U+FFFD, Cc and Cf except \\t \\n \\r), and the Oniguruma (Rust) class
    of characters that become words of their own (punctuation and CJK ideographs).

    Scanning every code point takes ~0.2 s, in every process that tokenizes (the data tool's workers): the two
    classes are kept in the cache directory, keyed by the Unicode version and the scanning code.
    """
    key = hashlib.sha256(f"{unicodedata.unidata_version} {sys.maxunicode} {inspect.getsource(_scan_unicode_classes)}"
                         .encode()).hexdigest()[:16]
    path = os.path.join(native.cache_dir(), f"unicode-classes-{key}.json")
    try:
        with open(path, encoding="utf-8") as f:
            python_class, rust_class = json.load(f)
    except (OSError, ValueError):
        python_class, rust_class = _scan_unicode_classes()
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_json(path, [python_class, rust_class])
        except OSError:  # a read-only cache only costs the scan again
            pass
    return re.compile(python_class), rust_class


def _scan_unicode_classes() -> tuple[str, str]:
    """`_unicode_classes`' two classes, as pattern strings, from a scan of every code point."""
    remove, split = {0, 0xFFFD}, {cp for a, b in CJK_RANGES for cp in range(a, b + 1)}
    split.update(cp for a, b in ((33, 47), (58, 64), (91, 96), (123, 126)) for cp in range(a, b + 1))
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat[0] == "P":
            split.add(cp)
        elif cat in ("Cc", "Cf") and cp not in (9, 10, 13):
            remove.add(cp)
    python_class = "".join(f"\\U{a:08X}-\\U{b:08X}" for a, b in _ranges(remove))
    rust_class = "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in _ranges(split))
    return f"[{python_class}]", f"[{rust_class}]"


def _strip_accents(word: str) -> str:
    """Google's `_run_strip_accents`: NFD, then drop nonspacing marks."""
    if word.isascii():
        return word
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


class FullTokenizer:
    """Google's `FullTokenizer`: text -> WordPiece tokens -> ids.

    Args:
      vocab_file: BERT `vocab.txt`; must contain "[UNK]".
      do_lower_case: True for uncased models (lower-case and strip accents).
      max_input_chars_per_word: longer words become "[UNK]" (Google: 200).
      cache_size: how many distinct words to remember (then the memory starts afresh).
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True,
                 max_input_chars_per_word: int = 200, cache_size: int = 1 << 18):
        self.vocab = load_wordpiece_vocab(vocab_file)
        self.inv_vocab = {index: token for token, index in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self._remove, split_class = _unicode_classes()
        self._wordpiece = Tokenizer(models.WordPiece(self.vocab, unk_token=UNK_TOKEN, continuing_subword_prefix="##",
                                                     max_input_chars_per_word=max_input_chars_per_word))
        self._wordpiece.pre_tokenizer = pre_tokenizers.Split(Regex(split_class), behavior="isolated")
        self._cache: dict[str, tuple[int, ...]] = {}
        self._cache_size = cache_size

    def tokenize(self, text: str) -> list[str]:
        """Returns the WordPiece tokens of one text."""
        return self.tokenize_batch([text])[0]

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokenizes many texts at once (one call into Rust for all their new words)."""
        inv = self.inv_vocab
        return [[inv[i] for i in ids] for ids in self.encode_batch(texts)]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Like `tokenize_batch` but returns token ids (what the data pipeline stores)."""
        # Step 1: drop controls; Google's whitespace (Zs, \\t \\n \\r) is all str.isspace(), so split()
        # does its mapping to " " and its whitespace_tokenize at once.
        # Printable ASCII has nothing to drop: two C scans instead of the regex for most English text.
        remove = self._remove.sub
        words = [(text if text.isascii() and text.isprintable() else remove("", text)).split() for text in texts]
        if len(self._cache) > self._cache_size:
            self._cache.clear()
        cache = self._cache
        new = list({w for ws in words for w in ws if w not in cache})  # all unseen words: one call into Rust
        if new:
            normalized = [_strip_accents(w.lower()) for w in new] if self.do_lower_case else new
            for word, encoding in zip(new, self._wordpiece.encode_batch(normalized, add_special_tokens=False)):
                cache[word] = tuple(encoding.ids)
        get = cache.__getitem__
        return [list(chain.from_iterable(map(get, ws))) for ws in words]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """Maps tokens to ids; an unknown token raises KeyError, as in Google's code."""
        return [self.vocab[t] for t in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Maps ids back to tokens."""
        return [self.inv_vocab[int(i)] for i in ids]
