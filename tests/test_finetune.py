"""SST-2 fine-tuning on a toy SST-2-format set made here: a tiny BERT must learn "good"/"bad" words.

One module-scoped run trains two seeds; the other tests read its outputs or fail before anything compiles.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms

from smallbert import BertConfig, BertForPreTraining, cpu_kernels
from smallbert.errors import SmallBertError
from smallbert.finetune import (Encoded, FinetuneConfig, assign_labels, batch_rows, encode_split, get_task,
                                load_classifier, make_batch, read_split, resolve_checkpoint, resolve_inputs, run)
from smallbert.tokenization import FullTokenizer
from smallbert.weights import find_weights_file, read_state_dict

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "finetuningSST2",
                      "run_classify.py")
POSITIVE = ("good", "great", "fine", "superb")
NEGATIVE = ("bad", "awful", "poor", "dull")
NEUTRAL = ("the", "movie", "film", "was", "plot", "acting", "a", "story", "really", "very", "and", "it", "is",
           "this", "of", "cast", "script", "scenes", "music", "ending", ".", ",")
VOCAB_SIZE = 128
HPARAMS = dict(max_length=32, train_batch_size=8, eval_batch_size=32, lr=5e-4, epochs=5)
SST2 = get_task("sst-2")


@pytest.fixture(autouse=True, scope="module")
def _cache_in_tmp(tmp_path_factory):
    """The default encoding cache is $XDG_CACHE_HOME/smallbert/finetune: keep it out of the home directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


def write_vocab(path: str, size: int = VOCAB_SIZE) -> None:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]
    tokens += [f"[unused{i}]" for i in range(size - len(tokens))]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")


def toy_examples(rng: np.random.Generator, n: int) -> list[tuple[str, int]]:
    """Neutral words around one sentiment word that decides the label; 20% are long (a second length bucket)."""
    examples = []
    for _ in range(n):
        label = int(rng.integers(2))
        length = int(rng.integers(3, 10) if rng.random() < 0.8 else rng.integers(15, 25))
        words = list(rng.choice(NEUTRAL, size=length))
        words.insert(int(rng.integers(length + 1)), str(rng.choice(POSITIVE if label else NEGATIVE)))
        words[0] = words[0].capitalize()  # the uncased pipeline must lower-case it
        examples.append((" ".join(words), label))
    return examples


def write_toy_sst2(directory: str) -> list[int]:
    """GLUE-format train/dev/test TSVs; returns the test labels (not in test.tsv, as in GLUE)."""
    rng = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    for name, n in (("train", 320), ("dev", 96)):
        with open(os.path.join(directory, f"{name}.tsv"), "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in toy_examples(rng, n)))
    test = toy_examples(rng, 48)
    with open(os.path.join(directory, "test.tsv"), "w", encoding="utf-8") as f:
        f.write("index\tsentence\n" + "".join(f"{i}\t{s}\n" for i, (s, _) in enumerate(test)))
    return [y for _, y in test]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A pretraining-run directory (RUN/final/, random tiny weights, vocab) and the toy SST-2 data."""
    root = str(tmp_path_factory.mktemp("finetune"))
    vocab = os.path.join(root, "vocab.txt")
    write_vocab(vocab)
    test_labels = write_toy_sst2(os.path.join(root, "data"))
    ms.set_seed(0)
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertForPreTraining(config).save_pretrained(os.path.join(root, "run", "final"), vocab_file=vocab)
    return {"root": root, "data": os.path.join(root, "data"), "run": os.path.join(root, "run"),
            "test_labels": test_labels}


@pytest.fixture(scope="module")
def trained(toy):
    """Two seeds fine-tuned from the run directory; returns (eval_results, output_dir)."""
    out = os.path.join(toy["root"], "out")
    results = run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=toy["run"], output_dir=out, seeds=(1, 2),
                                 **HPARAMS))
    return results, out


def test_toy_signal_is_learned_by_every_seed(trained, toy):
    results, out = trained
    with open(os.path.join(out, "eval_results.json"), encoding="utf-8") as f:
        assert json.load(f) == results
    accuracies = [r["best_dev_accuracy"] for r in results["seeds"]]
    assert [r["seed"] for r in results["seeds"]] == [1, 2]
    assert min(accuracies) >= 0.9  # chance is 0.5
    for r in results["seeds"]:
        assert [e["epoch"] for e in r["epochs"]] == [1, 2, 3, 4, 5]
        assert r["best_dev_accuracy"] == max(e["dev_accuracy"] for e in r["epochs"])
        assert r["epochs"][-1]["train_loss"] < r["epochs"][0]["train_loss"]
        assert os.path.isfile(os.path.join(out, f"seed_{r['seed']}", "eval_results.json"))
    assert results["best_dev_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert results["best_dev_accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert results["hparams"]["lr"] == HPARAMS["lr"] and results["hparams"]["do_lower_case"] is True
    assert results["hparams"]["checkpoint"] == os.path.join(toy["run"], "final")


def test_test_predictions_file(trained, toy):
    results, out = trained
    best = results["seeds"][[r["seed"] for r in results["seeds"]].index(results["best_seed"])]
    with open(best["predictions"]["test"], encoding="utf-8") as f:
        lines = f.read().splitlines()
    with open(os.path.join(out, "test_predictions.tsv"), encoding="utf-8") as f:
        assert f.read().splitlines() == lines  # the top level holds the best seed's predictions
    assert lines[0] == "index\tprediction"
    rows = [line.split("\t") for line in lines[1:]]
    assert [int(i) for i, _ in rows] == list(range(len(toy["test_labels"])))
    predictions = [int(p) for _, p in rows]
    assert set(predictions) <= {0, 1}
    assert np.mean(np.array(predictions) == np.array(toy["test_labels"])) >= 0.85


def test_best_checkpoint_reloads_and_reproduces_dev_accuracy(trained, toy):
    results, out = trained
    seed1 = results["seeds"][0]
    best_dir = os.path.join(out, "seed_1", "best")
    assert sorted(os.listdir(best_dir)) == ["config.json", "model.ckpt", "tokenizer_config.json", "vocab.txt"]
    with open(os.path.join(best_dir, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["id2label"] == {"0": "0", "1": "1"} and saved["label2id"] == {"0": 0, "1": 1}
    evaluated = run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=best_dir, output_dir="eval",
                                   do_train=False, **HPARAMS))
    assert evaluated["dev_accuracy"] == seed1["best_dev_accuracy"]
    assert evaluated["dev_loss"] == pytest.approx(seed1["best_dev_loss"], rel=1e-5)
    with open(os.path.join("eval", "test_predictions.tsv"), encoding="utf-8") as f, \
            open(seed1["predictions"]["test"], encoding="utf-8") as g:
        assert f.read() == g.read()


@pytest.mark.skipif(cpu_kernels.library() is None, reason="MindSpore's own CPU dropout is not reproducible")
def test_a_seed_run_alone_repeats_its_run_among_others_exactly(trained, toy, tmp_path):
    """Fresh model, seed-derived dropout streams and batch order: seed 2 alone gives the bits it gave after seed 1."""
    alone = run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=toy["run"], output_dir=str(tmp_path),
                               seeds=(2,), **HPARAMS))["seeds"][0]["epochs"]
    among = trained[0]["seeds"][1]["epochs"]
    assert [(e["train_loss"], e["dev_loss"]) for e in alone] == [(e["train_loss"], e["dev_loss"]) for e in among]


def test_amp_o2_fine_tunes_with_float32_master_weights(toy, tmp_path):
    # float16 compute with dynamic loss scaling; the checkpoint keeps float32 weights.
    results = run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=toy["run"], output_dir=str(tmp_path),
                                 seeds=(1,), amp="O2", **HPARAMS))
    epochs = results["seeds"][0]["epochs"]
    assert results["best_dev_accuracy_mean"] >= 0.9
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert all(e["skipped_steps"] < 5 for e in epochs)  # an overflow halves the 65536 scale; a few at most
    state = read_state_dict(os.path.join(tmp_path, "best", "model.ckpt"))
    assert {v.dtype for v in state.values()} == {np.dtype(np.float32)}
    assert results["hparams"]["amp"] == "O2"


def test_seed_fixes_the_fresh_classifier_head(toy):
    checkpoint = os.path.join(toy["run"], "final")
    config = BertConfig.from_json_file(checkpoint)
    heads = []
    for seed in (3, 3, 4):
        ms.set_seed(seed)  # what train_seed does before building the model
        heads.append(load_classifier(checkpoint, config, "O0").classifier.weight.asnumpy())
    np.testing.assert_array_equal(heads[0], heads[1])
    assert not np.array_equal(heads[0], heads[2])


def test_evaluate_only_needs_a_fine_tuned_classifier(toy, caplog):
    config = BertConfig.from_json_file(os.path.join(toy["run"], "final"))
    with caplog.at_level("INFO", logger="smallbert"):
        load_classifier(os.path.join(toy["run"], "final"), config, "O0")
    assert "no classifier head: initialised fresh" in caplog.text
    with pytest.raises(SmallBertError, match="has no classifier head for this task's 2 output"):
        run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=toy["run"], output_dir="eval", do_train=False))


def test_run_directory_resolves_to_final_else_newest_step(toy, tmp_path):
    final = os.path.join(toy["run"], "final")
    assert resolve_checkpoint(toy["run"]) == final
    for step in (5, 10):
        os.makedirs(tmp_path / "run" / "checkpoints" / f"step_{step}")
        for name in ("config.json", "model.ckpt"):
            os.symlink(os.path.join(final, name), tmp_path / "run" / "checkpoints" / f"step_{step}" / name)
    assert resolve_checkpoint(str(tmp_path / "run")) == str(tmp_path / "run" / "checkpoints" / "step_10")
    with pytest.raises(SmallBertError, match="not a model directory"):
        resolve_checkpoint(str(tmp_path))


def write_tsv(directory, name: str, text: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{name}.tsv"), "w", encoding="utf-8") as f:
        f.write(text)


@pytest.mark.parametrize("name, text, message", [
    ("train", "sentence\tlabel\ngood film\t1\nbad film\t1\tx\n", r"train.tsv:3: malformed row: expected 2"),
    ("train", "sentence\tlabel\ngood film\t1\nbad film\t2\n",
     r"train.tsv:3: column 'label': label '2' is not one of sst-2's labels \(0, 1\)"),
    ("dev", "sentence\tlabel\ngood film\t1\n\nbad film\t-1\n", r"dev.tsv:4: column 'label': label '-1' is not"),
    ("dev", "text\tlabel\ngood film\t1\n", r"dev.tsv:1: no column 'sentence' \(the header has text, label\)"),
    ("test", "index\tsentence\n0\tgood\nx\tbad\n",
     r"test.tsv:3: column 'index': index 'x' is not a non-negative integer"),
    ("test", "index\tsentence\n", r"test.tsv: no examples"),
])
def test_bad_rows_name_file_and_line(tmp_path, name, text, message):
    write_tsv(tmp_path, name, text)
    with pytest.raises(SmallBertError, match=message):
        split = read_split(SST2, str(tmp_path), name)
        assign_labels(SST2, split, SST2.labels, SST2.name)


def test_read_split_keeps_sentences_verbatim(tmp_path):
    write_tsv(tmp_path, "train", '\ufeffsentence\tlabel\n"quoted" \x0bodd\t0\r\nit \'s fine \t1\n\n')
    split = read_split(SST2, str(tmp_path), "train")
    assign_labels(SST2, split, SST2.labels, SST2.name)
    assert split.text_a == ['"quoted" \x0bodd', "it 's fine "] and split.text_b is None
    assert split.labels.tolist() == [0, 1] and split.labels.dtype == np.int32 and split.lines == [2, 3]


def test_missing_split_and_vocab_mismatch_fail_before_training(toy, tmp_path):
    write_tsv(tmp_path / "data", "train", "sentence\tlabel\ngood film\t1\n")
    with pytest.raises(SmallBertError, match=r"dev.tsv: sst-2 dev split \(--data_dir must hold dev.tsv\) not found"):
        run(FinetuneConfig(data_dir=str(tmp_path / "data"), init_checkpoint=toy["run"], output_dir="out"))
    big_vocab = str(tmp_path / "vocab.txt")
    write_vocab(big_vocab, size=VOCAB_SIZE + 72)
    with pytest.raises(SmallBertError, match=r"vocab.txt is not .*final's vocab.txt \(72 tokens it lacks, 0 of its "
                                             r"tokens gone, 200 vs 128 lines\): pass --adapt_vocab"):
        run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=toy["run"], vocab_file=big_vocab,
                           output_dir="out"))
    weights = str(tmp_path / "weights.ckpt")  # no vocab.txt beside it: only the vocab's size can be checked
    shutil.copy(find_weights_file(os.path.join(toy["run"], "final")), weights)
    with pytest.raises(SmallBertError, match=r"vocab has 200 ids but .* vocab_size 128"):
        run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=weights, vocab_file=big_vocab,
                           bert_config_file=os.path.join(toy["run"], "final", "config.json"), output_dir="out"))
    with pytest.raises(SmallBertError, match=r"--adapt_vocab: needs --init_checkpoint"):
        run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=None, vocab_file=big_vocab, adapt_vocab=True,
                           bert_config_file=os.path.join(toy["run"], "final", "config.json"), output_dir="out"))
    assert not os.path.exists("out")


def test_adapt_vocab_keeps_shared_rows_and_fine_tunes(toy, tmp_path):
    """--adapt_vocab with a reordered vocab that drops a slot and adds two words: rows follow the tokens."""
    old = open(os.path.join(toy["run"], "final", "vocab.txt"), encoding="utf-8").read().split()
    new = old[:5] + old[5:40][::-1] + [t for t in old[40:] if t != "[unused7]"] + ["terrific", "[DOMAIN]"]
    vocab = str(tmp_path / "new_vocab.txt")
    (tmp_path / "new_vocab.txt").write_text("\n".join(new) + "\n", encoding="utf-8")
    cfg = FinetuneConfig(data_dir=toy["data"], init_checkpoint=toy["run"], vocab_file=vocab, adapt_vocab=True,
                         output_dir=str(tmp_path / "out"), do_predict=False, **HPARAMS)
    checkpoint, config, _, _ = resolve_inputs(cfg)
    assert config.vocab_size == len(new) == VOCAB_SIZE + 1
    model = load_classifier(checkpoint, config, "O0", adapt_to=vocab, seed=3)
    rows = model.bert.embeddings.word_embeddings.weight.asnumpy()
    old_rows = read_state_dict(find_weights_file(checkpoint))["bert.embeddings.word_embeddings.weight"]
    shared = [t for t in new if t in old]
    np.testing.assert_array_equal(rows[[new.index(t) for t in shared]], old_rows[[old.index(t) for t in shared]])
    assert 0.01 < rows[new.index("terrific")].std() < 0.03  # unspellable: normal(0, initializer_range)

    results = run(cfg)
    best = results["best_checkpoint"]
    assert results["best_dev_accuracy_mean"] >= 0.9
    assert open(os.path.join(best, "vocab.txt"), encoding="utf-8").read().split() == new
    with open(os.path.join(best, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["vocab_size"] == len(new)

    # Evaluating that classifier under the original vocab adapts it back (the sentiment words keep their rows).
    back = run(dataclasses.replace(cfg, init_checkpoint=best, vocab_file=os.path.join(toy["run"], "final", "vocab.txt"),
                                   do_train=False, output_dir=str(tmp_path / "eval")))
    assert back["dev_accuracy"] == results["best_dev_accuracy_mean"]


def test_cli_seed_project_flags_and_one_line_error(toy, tmp_path):
    write_tsv(tmp_path / "data", "train", "sentence\tlabel\ngood film\t1\nbad film\tneutral\n")
    process = subprocess.run(
        [sys.executable, SCRIPT, "--bert_ckpt", toy["run"], "--dataset_path", str(tmp_path / "data"),
         "--batch_size", "1", "--test_batch_size", "4", "--epochs", "1", "--lr", "2e-5", "--max_length", "16",
         "--amp", "O0", "--device_target", "CPU", "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300)
    assert process.returncode == 2, process.stderr
    assert process.stderr.strip().splitlines()[-1] == \
        f"error: {tmp_path / 'data' / 'train.tsv'}:3: column 'label': label 'neutral' is not one of sst-2's " \
        f"labels (0, 1)"


def test_batches_cover_rows_within_buckets():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=203).astype(np.int32)
    buckets = (16, 32, 64)
    train = batch_rows(lengths, 8, buckets, np.random.default_rng(1))
    assert len(train) == 203 // 8 and all(len(b) == 8 for b in train)
    rows = np.concatenate(train)
    assert len(set(rows.tolist())) == len(rows)  # no row twice in an epoch
    pure = sum(len(set(np.searchsorted(buckets, lengths[b]).tolist())) == 1 for b in train)
    assert pure >= len(train) - 3  # only the pooled leftovers (< one batch per bucket) mix buckets
    assert batch_rows(lengths, 8, buckets, np.random.default_rng(2))[0].tolist() != train[0].tolist()
    evaluation = batch_rows(lengths, 8, buckets)
    assert sorted(np.concatenate(evaluation).tolist()) == list(range(203))
    assert all(len(set(np.searchsorted(buckets, lengths[b]).tolist())) == 1 for b in evaluation)


def test_make_batch_pads_to_bucket_and_batch_size():
    encoded = Encoded(input_ids=np.arange(3 * 64, dtype=np.int32).reshape(3, 64),
                      lengths=np.array([5, 20, 40], np.int32), segment_starts=np.array([5, 8, 40], np.int32))
    input_ids, token_type_ids, attention_mask = make_batch(encoded, np.array([0, 1]), (16, 32, 64), 4)
    assert input_ids.shape == (4, 32) and input_ids.dtype == np.int32
    np.testing.assert_array_equal(input_ids[:2], encoded.input_ids[:2, :32])
    np.testing.assert_array_equal(input_ids[2:], encoded.input_ids[[0, 0], :32])
    assert attention_mask.sum(axis=1).tolist() == [5, 20, 5, 5]
    # Segment B (type 1) runs from segment_starts to the last real token; padding stays 0.
    assert token_type_ids.sum(axis=1).tolist() == [0, 12, 0, 0] and token_type_ids[1, 8:20].all()


def test_encoding_and_its_cache(toy, tmp_path, monkeypatch):
    vocab = os.path.join(toy["root"], "vocab.txt")
    tokenizer = FullTokenizer(vocab, do_lower_case=True)
    write_tsv(tmp_path, "dev", "sentence\tlabel\nThe Movie was GOOD\t1\n" + "bad " * 40 + "\t0\n")
    split = read_split(SST2, str(tmp_path), "dev")
    encoded = encode_split(split, tokenizer, vocab, 8, str(tmp_path / "cache"))
    ids = tokenizer.vocab
    assert encoded.input_ids[0].tolist() == [ids[w] for w in ("[CLS]", "the", "movie", "was", "good", "[SEP]")] \
        + [ids["[PAD]"]] * 2
    assert encoded.input_ids[1].tolist() == [ids["[CLS]"]] + [ids["bad"]] * 6 + [ids["[SEP]"]]
    assert encoded.lengths.tolist() == [6, 8]
    monkeypatch.setattr("smallbert.finetune.encode.encode_sentences", lambda *a: pytest.fail("cache not used"))
    cached = encode_split(split, tokenizer, vocab, 8, str(tmp_path / "cache"))
    np.testing.assert_array_equal(cached.input_ids, encoded.input_ids)
    with pytest.raises(pytest.fail.Exception, match="cache not used"):  # another max_length is another key
        encode_split(split, tokenizer, vocab, 16, str(tmp_path / "cache"))


def test_from_scratch_needs_only_config_and_vocab(toy, tmp_path):
    """No --init_checkpoint: the seed fixes a random initialisation of --bert_config_file, which learns the toy."""
    final = os.path.join(toy["run"], "final")
    config_file, vocab = os.path.join(final, "config.json"), os.path.join(final, "vocab.txt")
    config = BertConfig.from_json_file(config_file)
    weights = []
    for seed in (5, 5, 6):
        ms.set_seed(seed)
        weights.append(load_classifier(None, config, "O0").bert.embeddings.word_embeddings.weight.asnumpy())
    np.testing.assert_array_equal(weights[0], weights[1])
    assert not np.array_equal(weights[0], weights[2])
    with pytest.raises(SmallBertError, match=r"--vocab_file: required to train from scratch"):
        run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=None, bert_config_file=config_file,
                           output_dir="out"))
    results = run(FinetuneConfig(data_dir=toy["data"], init_checkpoint=None, bert_config_file=config_file,
                                 vocab_file=vocab, output_dir=str(tmp_path / "out"), **HPARAMS))
    assert results["hparams"]["checkpoint"] is None
    assert results["best_dev_accuracy_mean"] >= 0.9
    assert sorted(os.listdir(tmp_path / "out" / "best")) == ["config.json", "model.ckpt", "tokenizer_config.json",
                                                             "vocab.txt"]


def test_resume_continues_a_multi_seed_run_exactly(trained, toy, tmp_path, monkeypatch):
    """Stopped after seed 2's epoch 3 of 5: --resume keeps seed 1 as finished, trains seed 2's epochs 4 and 5 only,
    and ends bit-exactly as the uninterrupted run."""
    from smallbert.finetune import loop

    class Interrupted(Exception):
        pass

    save, saves = loop.save_checkpoint, []

    def counting_save(*args, stop_at=None, **kwargs):
        saves.append(args[0])
        save(*args, **kwargs)
        if len(saves) == stop_at:
            raise Interrupted

    cfg = dict(data_dir=toy["data"], init_checkpoint=toy["run"], output_dir=str(tmp_path / "out"), seeds=(1, 2),
               **HPARAMS)
    monkeypatch.setattr(loop, "save_checkpoint", lambda *a, **k: counting_save(*a, stop_at=5 + 3, **k))
    with pytest.raises(Interrupted):
        run(FinetuneConfig(**cfg))
    saves.clear()
    monkeypatch.setattr(loop, "save_checkpoint", counting_save)
    resumed = run(FinetuneConfig(resume=True, **cfg))
    assert saves == [str(tmp_path / "out" / "seed_2")] * 2

    def outcome(results):
        return [[{k: v for k, v in e.items() if k != "train_seconds"} for e in r["epochs"]] for r in results["seeds"]]

    uninterrupted, _ = trained
    assert outcome(resumed) == outcome(uninterrupted)
    assert resumed["best_dev_accuracy_mean"] == uninterrupted["best_dev_accuracy_mean"]
