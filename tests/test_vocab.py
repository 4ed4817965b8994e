"""tools/build_vocab.py (smallbert.data.vocab): Google's layout, exact size, tokenization equal to Google's rules
with the built vocab, Chinese, and the one-line errors for bad input and for files that are not vocabs."""
from __future__ import annotations

import random

import pytest

from smallbert.data.vocab import BasicWords, VocabConfig, build_vocab, read_vocab_tokens
from smallbert.errors import SmallBertError
from smallbert.tokenization import FullTokenizer
from test_tokenization import SAMPLE

WORDS = ("the movie was great terrible acting plot boring wonderful film director scene naïve café Ångström "
         "über straße ΟΔΟΣ Σίσυφος Москва don't stop-believing 3.14 (really?) [yes] e-mail@x.org İstanbul").split()


def _legacy(vocab_file: str, do_lower_case: bool):
    """transformers' pure-Python port of Google's tokenizer, with Google's 200-character word limit."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    reference = BertTokenizerLegacy(vocab_file, do_lower_case=do_lower_case)
    reference.wordpiece_tokenizer.max_input_chars_per_word = 200
    return reference


def _corpus(path, documents: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(documents):
            for _ in range(4):
                f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) + "\n")
            f.write("\n")
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return _corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", 300)


def _build(corpus: str, output, vocab_size: int, **kwargs) -> tuple[list[str], dict]:
    report = build_vocab(VocabConfig(input_files=(corpus,), output=str(output), vocab_size=vocab_size, **kwargs))
    return read_vocab_tokens(output), report


def test_basic_words_are_googles(tmp_path):
    """The words the trainer counts are the words Google's BasicTokenizer gives WordPiece."""
    from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer

    for do_lower_case in (True, False):
        basic, reference = BasicWords(do_lower_case), BasicTokenizer(do_lower_case=do_lower_case)
        # The port NFC-normalizes first and drops private-use characters (Google does neither): skip those texts.
        texts = [t for t in SAMPLE if "\ue000" not in t]
        assert [basic.words(t) for t in texts] == [reference.tokenize(t) for t in texts]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_layout_size_and_parity(corpus, tmp_path, do_lower_case):
    tokens, report = _build(corpus, tmp_path / "vocab.txt", 260, do_lower_case=do_lower_case, min_frequency=1)
    assert len(tokens) == 260 == report["vocab_size"]
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").count("\n") == 260
    assert tokens[0] == "[PAD]" and tokens[1:100] == [f"[unused{i}]" for i in range(99)]
    assert tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    body = [t for t in tokens[104:] if not t.startswith("[unused")]
    chars = [i for i, t in enumerate(body) if len(t) == 1]
    continuations = [i for i, t in enumerate(body) if len(t) == 3 and t.startswith("##")]
    assert chars == list(range(len(chars))) and continuations == list(range(len(chars), len(chars) + len(continuations)))
    assert len(body) > len(chars) + len(continuations) + 20  # real pieces were learned
    # Accents are stripped and case folded only when lower-casing.
    assert any("ö" in t or "Å" in t or "Μ" in t for t in body) == (not do_lower_case)
    # The built vocab tokenizes as Google's rules do, on text it was not trained on.
    text = _corpus(tmp_path / "other.txt", 20, seed=1)
    lines = [line for line in open(text, encoding="utf-8").read().splitlines() if line] + SAMPLE
    vocab_file = str(tmp_path / "vocab.txt")
    got = FullTokenizer(vocab_file, do_lower_case).tokenize_batch(lines)
    reference = _legacy(vocab_file, do_lower_case)
    assert got == [reference.tokenize(line) for line in lines]
    assert sum(len(t) for t in got[:80]) > sum(len(BasicWords(do_lower_case).words(line)) for line in lines[:80])
    assert report["held_out_sentences"] == 12 and 0 <= report["unk_rate"] < 0.01
    assert 1.0 <= report["wordpieces_per_word"] < 3.0


def test_exact_size_small_and_padded(corpus, tmp_path):
    """A corpus offering fewer pieces than --vocab_size is padded with [unused] slots at the end; one offering more
    is cut to the first-learned pieces; either way exactly --vocab_size lines, every character kept."""
    big, report = _build(corpus, tmp_path / "big.txt", 2000, min_frequency=1)
    assert len(big) == 2000 and report["extra_unused_slots"] > 0 and big[-1] == f"[unused{98 + report['extra_unused_slots']}]"
    learned = [t for t in big[104:] if not t.startswith("[unused")]
    small, report = _build(corpus, tmp_path / "small.txt", 250, min_frequency=1)
    assert len(small) == 250 and report["extra_unused_slots"] == 0 and len(learned) > 250 - 104
    alphabet = [t for t in learned if len(t) == 1 or (len(t) == 3 and t.startswith("##"))]
    assert small[104:104 + len(alphabet)] == alphabet  # sorted characters, then sorted '##' forms, in both


def test_chinese_text_and_whole_word_masking(tmp_path):
    """Chinese: every ideograph is a token of its own, and create_pretraining_data's Chinese whole-word
    masking runs with the built vocab."""
    from smallbert.data.instances import InstanceConfig
    from smallbert.data.pipeline import PipelineConfig, create_pretraining_data

    rng = random.Random(3)
    words = ["我们", "喜欢", "北京", "天安门", "电影", "非常", "好看", "的", "了", "中文", "分词", "测试"]
    path = tmp_path / "zh.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(60):
            f.write("\n".join("".join(rng.choice(words) for _ in range(8)) + "。" for _ in range(3)) + "\n\n")
    tokens, report = _build(str(path), tmp_path / "vocab.txt", 200, do_lower_case=False, held_out=0.1)
    chars = set("".join(words)) | {"。"}
    assert chars <= set(tokens) and not any(t.startswith("##") for t in tokens)
    assert report["unk_rate"] == 0 and report["wordpieces_per_word"] == 1.0
    assert FullTokenizer(tmp_path / "vocab.txt", False).tokenize("我们喜欢电影。") == list("我们喜欢电影。")
    metadata = create_pretraining_data(PipelineConfig(
        input_files=(str(path),), output_dir=str(tmp_path / "shards"), vocab_file=str(tmp_path / "vocab.txt"),
        do_lower_case=False, chinese_whole_word_mask=True, language="zh",
        instances=InstanceConfig(max_seq_length=32, max_predictions_per_seq=5, dupe_factor=1,
                                 do_whole_word_mask=True)))
    assert metadata["counts"]["instances"] > 10 and metadata["vocab_size"] == 200


def test_not_a_vocab(tmp_path):
    good = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]
    cases = {
        "empty.txt": ("", "empty.txt: vocab file is empty"),
        "dupe.txt": ("\n".join(good + ["b", "a"]), r"dupe.txt:8: duplicate token 'a' \(also on line 6\)"),
        "blank.txt": ("\n".join(good[:3] + [""] + good[3:]), "blank.txt:4: empty line"),
        "nocls.txt": ("\n".join(t for t in good if t not in ("[CLS]", "[MASK]")), r"vocab lacks \[CLS\], \[MASK\]"),
        "nounk.txt": ("\n".join(t for t in good if t != "[UNK]"), r"vocab lacks \[UNK\]"),
        "nosep.txt": ("\n".join(t for t in good if t != "[SEP]"), r"vocab lacks \[SEP\]"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(SmallBertError, match=message):
            read_vocab_tokens(tmp_path / name)
    (tmp_path / "good.txt").write_text("\n".join(good) + "\n", encoding="utf-8")
    assert read_vocab_tokens(tmp_path / "good.txt") == good


def test_cli_errors(corpus, tmp_path, capsys):
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location(
        "build_vocab", os.path.join(os.path.dirname(__file__), "..", "tools", "build_vocab.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / "v.txt")
    for argv, message in [
        (["--input_file", "nope*.txt"], "nope*.txt: no such input file"),
        (["--input_file", corpus, "--vocab_size", "120"], "--vocab_size=120: the corpus's"),
        (["--input_file", corpus, "--vocab_size", "100"], "--vocab_size=100: leaves no room"),
        (["--input_file", corpus, "--held_out", "0.7"], r"--held_out=0.7: must be in \[0, 0.5\)"),
        (["--input_file", corpus, "--min_frequency", "0"], "--min_frequency=0: must be at least 1"),
    ]:
        args = ["--output", out, "--vocab_size", "300", *argv]
        assert tool.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message.replace("\\", "") in err[-1].replace("\\", "")
        assert not os.path.exists(out) and not os.path.exists(out + ".tmp")
    assert tool.main(["--input_file", corpus, "--output", out, "--vocab_size", "300"]) == 0
    printed = capsys.readouterr().out
    assert "300 tokens" in printed and "UNK rate" in printed and "WordPieces per word" in printed


# ---- the vocab adapter, on the real MiniLM checkpoint ----

NEW_TOKENS = ["moviegoer", "##zzq", "[DOMAIN]"]  # spelled by old pieces; spelled as a continuation; random


@pytest.fixture(scope="module")
def minilm_with_heads(minilm_dir, tmp_path_factory):
    """MiniLM as BertForPreTraining with its (fresh) heads and a non-zero MLM bias saved as a checkpoint, plus an
    extended, reordered and trimmed vocab: (checkpoint dir, old tokens, new vocab file, new tokens, model)."""
    import os

    import numpy as np

    from smallbert.model import BertForPreTraining
    from smallbert.weights import assign

    root = tmp_path_factory.mktemp("minilm")
    old_vocab = os.path.join(minilm_dir, "vocab.txt")
    model = BertForPreTraining.from_pretrained(minilm_dir)
    assign(model.cls.predictions.bias, np.random.default_rng(0).normal(0, 1, model.config.vocab_size))
    model.save_pretrained(str(root / "ckpt"), vocab_file=old_vocab)
    old = read_vocab_tokens(old_vocab)
    dropped = {"[unused5]", "[unused6]", "zebra", "##ness"}
    kept = [t for t in old if t not in dropped]
    rng = random.Random(0)
    tail = kept[2000:]
    rng.shuffle(tail)
    new = kept[:2000] + NEW_TOKENS[:2] + tail + NEW_TOKENS[2:]
    (root / "new_vocab.txt").write_text("\n".join(new) + "\n", encoding="utf-8")
    return str(root / "ckpt"), old, str(root / "new_vocab.txt"), new, model


def test_adapter_keeps_rows_and_logits(minilm_with_heads):
    import numpy as np

    import mindspore as ms

    from smallbert.model import BertForPreTraining
    from smallbert.vocab_adapter import config_for_vocab, load_weights_for_vocab

    checkpoint, old, new_vocab, new, original = minilm_with_heads
    config = config_for_vocab(original.config, checkpoint, new_vocab)
    assert config.vocab_size == len(new) == len(old) - 4 + 3 and original.config.vocab_size == len(old)
    model = BertForPreTraining(config)
    report, change = load_weights_for_vocab(model, checkpoint, new_vocab, seed=0)
    assert not report.missing and (change.kept, change.spelled, change.random, change.dropped) == (len(old) - 4, 2, 1, 4)

    old_emb = original.bert.embeddings.word_embeddings.weight.asnumpy()
    old_bias = original.cls.predictions.bias.asnumpy()
    emb = model.bert.embeddings.word_embeddings.weight.asnumpy()
    bias = model.cls.predictions.bias.asnumpy()
    old_id, new_id = {t: i for i, t in enumerate(old)}, {t: i for i, t in enumerate(new)}
    shared = [t for t in new if t in old_id]
    assert np.array_equal(emb[[new_id[t] for t in shared]], old_emb[[old_id[t] for t in shared]])
    assert np.array_equal(bias[[new_id[t] for t in shared]], old_bias[[old_id[t] for t in shared]])
    pieces = FullTokenizer(checkpoint + "/vocab.txt").tokenize("moviegoer")  # Google's spelling, old vocab
    for token, pieces in (("moviegoer", pieces),):
        assert len(pieces) > 1
        ids = [old_id[p] for p in pieces]
        assert np.array_equal(emb[new_id[token]], old_emb[ids].mean(axis=0))
        assert np.array_equal(bias[new_id[token]], old_bias[ids].mean(axis=0))
    random_row = emb[new_id["[DOMAIN]"]]
    assert bias[new_id["[DOMAIN]"]] == 0 and 0.01 < random_row.std() < 0.03 and abs(random_row.mean()) < 0.01

    # A text without the new words: the same hidden states and, token for token, the same MLM and NSP logits.
    tokens = ["[CLS]", "the", "movie", "was", "great", "[SEP]", "a", "fine", "film", "[SEP]"]
    inputs = [np.array([[old_id[t] for t in tokens]], np.int32), np.array([[new_id[t] for t in tokens]], np.int32)]
    types = ms.Tensor(np.array([[0] * 6 + [1] * 4], np.int32))
    mask = ms.Tensor(np.ones((1, 10), np.int32))
    positions = ms.Tensor(np.arange(10, dtype=np.int32).reshape(1, 10))
    model.set_train(False)
    original.set_train(False)
    old_mlm, old_nsp = (x.asnumpy() for x in original(ms.Tensor(inputs[0]), types, mask, positions))
    new_mlm, new_nsp = (x.asnumpy() for x in model(ms.Tensor(inputs[1]), types, mask, positions))
    np.testing.assert_allclose(new_mlm[..., [new_id[t] for t in shared]], old_mlm[..., [old_id[t] for t in shared]],
                               rtol=0, atol=2e-5)
    np.testing.assert_array_equal(new_nsp, old_nsp)


def test_adapter_no_change_and_bad_vocab(minilm_with_heads, minilm_dir, tmp_path):
    import os

    from smallbert.vocab_adapter import config_for_vocab, vocab_change

    checkpoint, _, _, _, original = minilm_with_heads
    same = os.path.join(minilm_dir, "vocab.txt")
    assert vocab_change(checkpoint, same) is None and vocab_change(checkpoint, None) is None
    assert config_for_vocab(original.config, checkpoint, same) is original.config
    (tmp_path / "bad.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n", encoding="utf-8")
    with pytest.raises(SmallBertError, match=r"bad.txt: vocab lacks \[MASK\]"):
        config_for_vocab(original.config, checkpoint, str(tmp_path / "bad.txt"))
