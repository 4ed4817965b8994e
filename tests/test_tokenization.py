"""FullTokenizer gives Google BERT's tokens: parity with transformers' Python port, and Google's own
behaviour where that port departs from it (NFC, private-use characters, special-token text)."""
from __future__ import annotations

import os
import unicodedata

import pytest

from smallbert.errors import SmallBertError
from smallbert.tokenization import FullTokenizer, load_vocab

SAMPLE = [
    "Hello, World! The quick brown fox jumps over the lazy dog.",
    "Héllo wörld: Crème Brûlée, naïve café, Ångström, Øresund, ÆSIR, İstanbul, straße, ﬁnal.",
    "ΟΔΟΣ Σίσυφος ΣΟΦΟΣ. Москва — столица России; «цитата».",
    "中文分词测试：我爱北京天安门。日本語のテキスト、カタカナ。한국어 문장입니다.",
    "Control\x00chars\x07here\u200b and\u00adsoft\thyphen\r\nnew\x0bline\x1fsep\u2028para\u3000wide",
    "Emoji 😀🥰👍🏽 and symbols ∑∫≈ ± © ® ™ € £ ¥ and tags 🏳️‍🌈!",
    "Numbers 3.14159, 1,000,000 and e-mails a.b@example.com; URLs https://x.org/a?b=c#d.",
    "x" * 300 + " " + "ab" * 75 + " tail",
    "Arabic العربية, Hebrew עברית, Hindi हिन्दी, Thai ภาษาไทย, Greek ελληνικά.",
    "don't stop-believing... (really?) [yes] {no} <maybe> \"quoted\" 'single' `tick` ~tilde^caret|pipe",
    "   leading and trailing spaces   ",
    "",
]


@pytest.fixture(scope="module")
def vocab_file(minilm_dir) -> str:
    return os.path.join(minilm_dir, "vocab.txt")


@pytest.fixture(scope="module")
def cased_vocab_file(tmp_path_factory) -> str:
    """A small cased vocab: every character of the sample (alone and as '##' piece) plus whole
    words and word prefixes, so WordPiece has several candidates at most positions."""
    from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer

    words = set()
    for text in SAMPLE:
        words.update(BasicTokenizer(do_lower_case=False).tokenize(text))
    tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    for word in sorted(words):
        if len(word) <= 12:
            tokens.update({word, word[:3], "##" + word[3:6]})
        tokens.update(word)
        tokens.update("##" + c for c in word)
    path = tmp_path_factory.mktemp("cased") / "vocab.txt"
    path.write_text("\n".join(sorted(tokens)) + "\n", encoding="utf-8")
    return str(path)


def _legacy(vocab_file: str, do_lower_case: bool):
    """transformers' Python port of Google's tokenizer, with Google's 200-character word limit."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    reference = BertTokenizerLegacy(vocab_file, do_lower_case=do_lower_case)
    reference.wordpiece_tokenizer.max_input_chars_per_word = 200
    return reference


@pytest.mark.parametrize("do_lower_case", [True, False])
@pytest.mark.parametrize("cased_vocab", [False, True])
def test_sample_parity(vocab_file, cased_vocab_file, do_lower_case, cased_vocab):
    path = cased_vocab_file if cased_vocab else vocab_file
    ours, reference = FullTokenizer(path, do_lower_case), _legacy(path, do_lower_case)
    expected = [reference.tokenize(text) for text in SAMPLE]
    assert ours.tokenize_batch(SAMPLE) == expected
    assert [ours.tokenize(text) for text in SAMPLE] == expected
    assert sum(len(t) for t in expected) > 200  # the sample really is tokenized, not skipped
    if cased_vocab and not do_lower_case:
        assert "Hello" in expected[0] and "[UNK]" in expected[7]  # 300-char word


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_every_bmp_character(vocab_file, do_lower_case):
    """Each assigned BMP character that is not a letter, and every 8th letter, between two letters.
    Skipped: private-use ones (the port drops them, Google keeps them; tested below) and ones NFC
    changes (the port normalizes first)."""
    chars = [chr(cp) for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF]
    chars = [c for i, c in enumerate(chars) if unicodedata.category(c) not in ("Cn", "Co")
             and (unicodedata.category(c)[0] != "L" or i % 8 == 0) and unicodedata.normalize("NFC", c) == c]
    texts = [f"x{c}b{c}{c}" for c in chars]
    ours, reference = FullTokenizer(vocab_file, do_lower_case), _legacy(vocab_file, do_lower_case)
    got = ours.tokenize_batch(texts)
    mismatches = [(t, g) for t, g in zip(texts, got) if g != reference.tokenize(t)]
    assert not mismatches[:5]


def test_where_google_differs_from_the_port(vocab_file):
    ours = FullTokenizer(vocab_file, do_lower_case=False)
    # Google keeps private-use characters (an unknown word) and does not NFC-normalize.
    assert ours.tokenize("a\ue000b c") == ["[UNK]", "c"]
    assert ours.tokenize("cafe\u0301") == ["[UNK]"]
    # Special tokens written in the text are ordinary text to Google.
    assert FullTokenizer(vocab_file).tokenize("[MASK] x") == ["[", "mask", "]", "x"]
    # Final sigma survives lower-casing, as Python's str.lower() gives Google.
    assert FullTokenizer(vocab_file).tokenize("ΟΔΟΣ") == FullTokenizer(vocab_file).tokenize("οδος")


def test_word_length_limit_and_cache(vocab_file):
    ours = FullTokenizer(vocab_file, cache_size=1)
    assert ours.tokenize("a" * 200) != ["[UNK]"]
    assert ours.tokenize("a" * 201) == ["[UNK]"]
    assert ours.tokenize("x" * 10_000 + " the") == ["[UNK]", "the"]
    fresh = FullTokenizer(vocab_file)
    assert ours.tokenize_batch(SAMPLE) == fresh.tokenize_batch(SAMPLE) == fresh.tokenize_batch(SAMPLE)


def test_ids_round_trip(vocab_file):
    ours = FullTokenizer(vocab_file)
    tokens = ours.tokenize("unaffable tokenizers")
    ids = ours.convert_tokens_to_ids(tokens)
    assert ours.encode_batch(["unaffable tokenizers"]) == [ids]
    assert ours.convert_ids_to_tokens(ids) == tokens
    assert ours.vocab["[CLS]"] == 101 and ours.inv_vocab[101] == "[CLS]"


def test_bad_vocab_files(tmp_path):
    with pytest.raises(SmallBertError, match="missing.txt: vocab file not found"):
        load_vocab(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SmallBertError, match="empty.txt: vocab file is empty"):
        load_vocab(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes(b"[UNK]\ncaf\xe9\n")
    with pytest.raises(SmallBertError, match="latin1.txt: vocab file is not UTF-8"):
        load_vocab(tmp_path / "latin1.txt")
    (tmp_path / "nounk.txt").write_text("a\nb\n")
    with pytest.raises(SmallBertError, match=r"nounk.txt: vocab has no \[UNK\]"):
        FullTokenizer(tmp_path / "nounk.txt")


def test_character_classes_are_cached_and_equal_the_scan(tmp_path, monkeypatch):
    """The classes come from a scan of every code point once per cache directory, then from its file."""
    import json

    from smallbert import tokenization

    monkeypatch.setenv("SMALLBERT_CACHE_DIR", str(tmp_path))
    tokenization._unicode_classes.cache_clear()
    try:
        scanned = tokenization._unicode_classes()
        [cached_file] = os.listdir(tmp_path)
        assert (scanned[0].pattern, scanned[1]) == tokenization._scan_unicode_classes()
        (tmp_path / cached_file).write_text(json.dumps(["[a]", "[b]"]))  # a marker: is the file what is read?
        tokenization._unicode_classes.cache_clear()
        assert (tokenization._unicode_classes()[0].pattern, tokenization._unicode_classes()[1]) == ("[a]", "[b]")
    finally:
        tokenization._unicode_classes.cache_clear()
