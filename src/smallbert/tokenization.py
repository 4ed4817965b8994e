"""Google BERT's tokenizer (BasicTokenizer + greedy WordPiece), run by the Rust `tokenizers` library.

Google's `tokenization.py` does, per input text:
  1. clean: drop NUL, U+FFFD and control characters (categories Cc/Cf except \\t \\n \\r), map
     whitespace to " ";
  2. put spaces around CJK ideographs;
  3. split on whitespace; when lower-casing, lower each word with Python's `str.lower()` (which
     knows the Greek final sigma) and strip accents (NFD, then drop category Mn);
  4. split off every punctuation character (ASCII non-alphanumerics and categories P*);
  5. greedy longest-match-first WordPiece with "##" continuations; a word longer than
     `max_input_chars_per_word` characters, or one that cannot be covered, becomes "[UNK]".

`tokenizers.normalizers.BertNormalizer` / `BertPreTokenizer` implement the same steps but not the
same tables: they drop private-use characters (Google keeps them: "[UNK]"), use other Unicode
versions for controls, punctuation, marks and the CJK ranges, and lower-case character by
character (no final sigma). So the pipeline here is assembled from generic `tokenizers` parts
whose character classes are computed from Python's own `unicodedata`, i.e. the tables Google's
code consults on this interpreter. Measured over every code point (in "a?b" context) and on
mixed-script text, the tokens equal Google's, except for the ~55 characters that were
unassigned in this Python's Unicode database and that Rust's newer tables lower-case or
decompose; they become "[UNK]" either way unless the vocabulary holds them.

Unlike `transformers`' Python port, text is not NFC-normalized first, and special tokens such as
"[MASK]" written in the text are split like any other text ("[", "mask", "]"), as Google does.
"""
from __future__ import annotations

import functools
import os
import sys
import unicodedata
from typing import Iterable, Sequence

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from smallbert.errors import SmallBertError

UNK_TOKEN = "[UNK]"
_CJK_RANGES = (  # Google's `_is_chinese_char`: the CJK Unified Ideographs blocks.
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
# Case-ignorable characters allowed between a cased letter and a final sigma. Python allows any
# number; Oniguruma's look-behind needs a bound, and real text has at most a few combining marks.
_MAX_IGNORABLE_BEFORE_SIGMA = 4


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


def _char_class(chars: Iterable[str]) -> str:
    """An Oniguruma character class `[...]` matching exactly `chars` (as code point ranges)."""
    points = sorted(ord(c) for c in chars)
    ranges: list[list[int]] = []
    for cp in points:
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    parts = [f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


@functools.lru_cache(maxsize=None)
def _unicode_classes() -> dict[str, str]:
    """Character classes of Google's tokenizer, from this interpreter's `unicodedata`.

    Returns regex classes for: "remove" (cleaned away), "space" (word separators),
    "split" (punctuation and CJK ideographs: each its own word), "mark" (Mn, stripped with
    accents), and the final-sigma context of Python's `str.lower()`: "cased" and "ignorable".
    """
    remove, space, split, mark, assigned = [], [], [], [], []
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        cat = unicodedata.category(char)
        if cp == 0 or cp == 0xFFFD or (cat in ("Cc", "Cf") and char not in "\t\n\r"):
            remove.append(char)
        elif char.isspace() or cat == "Zs":  # Google's _is_whitespace, then str.split()
            space.append(char)
        elif (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
              or cat.startswith("P") or any(a <= cp <= b for a, b in _CJK_RANGES)):
            split.append(char)
        if cat == "Mn":
            mark.append(char)
        if cat not in ("Cn", "Co", "Cs"):
            assigned.append(char)
    # Python lowers U+03A3 to final sigma when a cased letter precedes it (skipping case-ignorable
    # characters) and none follows; probe that rule to learn both properties for every character.
    cased = [c for c in assigned if (c + "\u03a3").lower()[-1] == "\u03c2"]
    cased_set = set(cased)
    ignorable = [c for c in assigned
                 if c not in cased_set and ("\u0391" + c + "\u03a3").lower()[-1] == "\u03c2"]
    return {"remove": _char_class(remove), "space": _char_class(space), "split": _char_class(split),
            "mark": _char_class(mark), "cased": _char_class(cased), "ignorable": _char_class(ignorable)}


def _build_backend(vocab: dict[str, int], do_lower_case: bool, max_input_chars_per_word: int) -> Tokenizer:
    """The Rust tokenizer reproducing Google's steps 1-5 (see the module docstring)."""
    classes = _unicode_classes()
    steps = [normalizers.Replace(Regex(classes["remove"]), ""),
             normalizers.Replace(Regex(classes["space"]), " ")]
    if do_lower_case:
        cased, ign = classes["cased"], classes["ignorable"]
        behind = "|".join(cased + ign * n for n in range(_MAX_IGNORABLE_BEFORE_SIGMA + 1))
        final_sigma = f"(?<={behind})\u03a3(?!{ign}*{cased})"
        steps += [normalizers.Replace(Regex(final_sigma), "\u03c2"), normalizers.Lowercase(),
                  normalizers.NFD(), normalizers.Replace(Regex(classes["mark"]), "")]
    backend = Tokenizer(models.WordPiece(vocab, unk_token=UNK_TOKEN, continuing_subword_prefix="##",
                                         max_input_chars_per_word=max_input_chars_per_word))
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(classes["split"]), behavior="isolated"),
    ])
    return backend


class FullTokenizer:
    """Google's `FullTokenizer`: text -> WordPiece tokens -> ids.

    Args:
      vocab_file: BERT `vocab.txt`; must contain "[UNK]".
      do_lower_case: True for uncased models (lower-case and strip accents).
      max_input_chars_per_word: longer words become "[UNK]" (Google: 200).
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True,
                 max_input_chars_per_word: int = 200):
        self.vocab = load_vocab(vocab_file)
        if UNK_TOKEN not in self.vocab:
            raise SmallBertError(f"{vocab_file}: vocab has no {UNK_TOKEN} token")
        self.inv_vocab = {index: token for token, index in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self._backend = _build_backend(self.vocab, do_lower_case, max_input_chars_per_word)

    def tokenize(self, text: str) -> list[str]:
        """Returns the WordPiece tokens of one text."""
        return self._backend.encode(text, add_special_tokens=False).tokens

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokenizes many texts in one call into Rust (the data pipeline's fast path)."""
        return [e.tokens for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Like `tokenize_batch` but returns token ids (what the data pipeline stores)."""
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """Maps tokens to ids; an unknown token raises KeyError, as in Google's code."""
        return [self.vocab[t] for t in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Maps ids back to tokens."""
        return [self.inv_vocab[int(i)] for i in ids]
