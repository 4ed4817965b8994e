"""Distillation on the toy SST-2 task of test_finetune: a tiny teacher trained on all 320 labels teaches a student
that sees 16 labels plus the other sentences as unlabelled text, with its own (differently ordered) vocab.

Module-scoped runs: the teacher (run_classify's path), the labels-only student and the distilled student; the
other tests reuse the teacher or fail before anything compiles.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from mindspore import Tensor

from smallbert import BertConfig, BertForSequenceClassification
from smallbert.errors import SmallBertError
from smallbert.finetune import FinetuneConfig, run
from smallbert.finetune import teacher as teacher_module
from smallbert.finetune.augment import Augmentation
from smallbert.finetune.distill import (DistillConfig, distillation_loss, read_transfer_file,
                                        regression_distillation_loss, run_distill, transfer_split)
from smallbert.finetune.layers import (LayerDistillationLoss, attention_mse, check_same_tokenizer, hidden_mse,
                                       layer_map)
from smallbert.finetune.tasks import Split
from smallbert.finetune.teacher import load_teacher, teacher_logits
from test_finetune import write_toy_sst2, write_vocab

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "finetuningSST2",
                      "run_distill.py")
COMMON = dict(max_length=32, pad_to_max_length=True, train_batch_size=8, eval_batch_size=32, lr=5e-4)
FEW = 16  # labelled rows the student gets


@pytest.fixture(autouse=True, scope="module")
def _cache_in_tmp(tmp_path_factory):
    """The default caches live in $XDG_CACHE_HOME/smallbert/finetune: keep them out of the home directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


def tiny(vocab_size: int) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


def shuffled_vocab(source: str, target: str, size: int) -> None:
    """The same words as `source` in another order (specials first), `size` ids: another vocab for the student."""
    with open(source, encoding="utf-8") as f:
        tokens = f.read().split()
    specials, words = tokens[:5], [t for t in tokens[5:] if not t.startswith("[unused")]
    words = list(np.random.default_rng(3).permutation(words))
    tokens = specials + words + [f"[unused{i}]" for i in range(size - len(specials) - len(words))]
    with open(target, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Teacher data (all 320 labels), few-label data (16 labels + a transfer file of the other 304 sentences)."""
    root = str(tmp_path_factory.mktemp("distill"))
    full = os.path.join(root, "full")
    write_toy_sst2(full)
    teacher_vocab, student_vocab = os.path.join(root, "teacher_vocab.txt"), os.path.join(root, "student_vocab.txt")
    write_vocab(teacher_vocab)
    shuffled_vocab(teacher_vocab, student_vocab, 100)
    configs = {}
    for name, size in (("teacher", 128), ("student", 100)):
        configs[name] = os.path.join(root, f"{name}_config.json")
        tiny(size).to_json_file(configs[name])
    with open(os.path.join(full, "train.tsv"), encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    few = os.path.join(root, "few")
    os.makedirs(few)
    with open(os.path.join(few, "train.tsv"), "w", encoding="utf-8") as f:
        f.write("\n".join([header] + rows[:FEW]) + "\n")
    for name in ("dev", "test"):
        os.symlink(os.path.join(full, f"{name}.tsv"), os.path.join(few, f"{name}.tsv"))
    transfer = os.path.join(root, "unlabelled.txt")
    sentences = [r.split("\t")[0] for r in rows[FEW:]]
    with open(transfer, "w", encoding="utf-8") as f:  # Google's format: blank lines between "documents"
        f.write("".join(s + ("\n\n" if i % 7 == 6 else "\n") for i, s in enumerate(sentences)))
    return {"root": root, "full": full, "few": few, "transfer": transfer, "configs": configs,
            "teacher_vocab": teacher_vocab, "student_vocab": student_vocab, "num_unlabelled": len(sentences)}


@pytest.fixture(scope="module")
def teacher_dir(toy):
    results = run(FinetuneConfig(data_dir=toy["full"], init_checkpoint=None, output_dir=os.path.join(toy["root"],
                  "teacher"), bert_config_file=toy["configs"]["teacher"], vocab_file=toy["teacher_vocab"],
                  epochs=5, do_predict=False, **COMMON))
    assert results["best_dev_accuracy_mean"] >= 0.9  # a strong teacher, else the comparison means nothing
    return results["best_checkpoint"]


def student(toy, **overrides) -> dict:
    return {"data_dir": toy["few"], "init_checkpoint": None, "bert_config_file": toy["configs"]["student"],
            "vocab_file": toy["student_vocab"], **COMMON, **overrides}


def test_distillation_beats_labels_only_with_few_labels(toy, teacher_dir):
    distilled_out = os.path.join(toy["root"], "distilled")
    distilled = run_distill(DistillConfig(teacher=teacher_dir, transfer_files=(toy["transfer"],),
                                          output_dir=distilled_out, epochs=3, temperature=2.0, alpha=0.5,
                                          **student(toy)))
    steps = distilled["hparams"]["steps_per_epoch"] * 3
    # Labels only, with as many updates: 16 rows are 2 batches an epoch.
    labels_only = run(FinetuneConfig(output_dir=os.path.join(toy["root"], "labels_only"), epochs=steps // 2,
                                     do_predict=False, **student(toy)))
    assert distilled["hparams"]["num_train_examples"] == FEW + toy["num_unlabelled"]
    assert distilled["hparams"]["num_labelled_examples"] == FEW
    assert distilled["teacher_dev_accuracy"] >= 0.9
    assert distilled["best_dev_accuracy_mean"] >= 0.85
    assert distilled["best_dev_accuracy_mean"] >= labels_only["best_dev_accuracy_mean"] + 0.1, \
        (distilled["best_dev_accuracy_mean"], labels_only["best_dev_accuracy_mean"])
    # Outputs as run_classify.py's; best/ reloads in run_classify.py and reproduces its dev accuracy.
    with open(os.path.join(distilled_out, "eval_results.json"), encoding="utf-8") as f:
        assert json.load(f) == distilled
    with open(os.path.join(distilled_out, "test_predictions.tsv"), encoding="utf-8") as f:
        assert f.readline() == "index\tprediction\n" and len(f.readlines()) == 48
    evaluated = run(FinetuneConfig(data_dir=toy["few"], init_checkpoint=os.path.join(distilled_out, "best"),
                                   output_dir="eval", do_train=False, **COMMON))
    assert evaluated["dev_accuracy"] == distilled["best_dev_accuracy_mean"]


def test_soft_loss_matches_numpy():
    rng = np.random.default_rng(0)
    student_logits, teacher = rng.normal(size=(6, 3)) * 2, rng.normal(size=(6, 3)) * 2
    labels = np.array([0, 2, -1, 1, -1, 2])

    def log_softmax(x):
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    for temperature, alpha in ((1.0, 0.0), (2.0, 0.0), (4.0, 0.7)):
        soft = -(np.exp(log_softmax(teacher / temperature)) * log_softmax(student_logits / temperature)).sum(1)
        hard = -log_softmax(student_logits)[np.flatnonzero(labels >= 0), labels[labels >= 0]]
        expected = temperature ** 2 * soft.mean() + alpha * hard.mean()
        got = distillation_loss(Tensor(student_logits.astype(np.float32)), Tensor(teacher.astype(np.float32)),
                                Tensor(labels.astype(np.int32)), temperature, alpha)
        assert float(got.asnumpy()) == pytest.approx(expected, rel=1e-5)
    # No labelled row: the hard term is 0, not nan.
    got = distillation_loss(Tensor(student_logits.astype(np.float32)), Tensor(teacher.astype(np.float32)),
                            Tensor(np.full(6, -1, np.int32)), 1.0, 1.0)
    soft = -(np.exp(log_softmax(teacher)) * log_softmax(student_logits)).sum(1).mean()
    assert float(got.asnumpy()) == pytest.approx(soft, rel=1e-5)


def test_regression_loss_matches_numpy():
    rng = np.random.default_rng(1)
    student_out, teacher_out = rng.normal(size=(6, 1)), rng.normal(size=(6, 1))
    targets = np.array([0.5, np.nan, 2.0, np.nan, -1.0, 3.0])
    labelled = ~np.isnan(targets)
    for alpha in (0.0, 0.5):
        expected = np.mean((student_out[:, 0] - teacher_out[:, 0]) ** 2) + alpha * np.mean(
            (student_out[labelled, 0] - targets[labelled]) ** 2)
        got = regression_distillation_loss(Tensor(student_out.astype(np.float32)),
                                           Tensor(teacher_out.astype(np.float32)),
                                           Tensor(targets.astype(np.float32)), alpha)
        assert float(got.asnumpy()) == pytest.approx(expected, rel=1e-5)


def test_teacher_logits_cache_reuse_resume_and_invalidation(toy, teacher_dir, tmp_path, monkeypatch):
    teacher = load_teacher(teacher_dir, 2)
    sentences = [f"the film was {'good' if i % 2 else 'bad'} ." for i in range(23)]
    path = str(tmp_path / "logits.npz")
    calls, interrupt_at = [], [3]
    encode = teacher_module.encode_sentences

    def interrupted(chunk, *args):
        calls.append(len(chunk))
        if len(calls) == interrupt_at[0]:
            raise KeyboardInterrupt
        return encode(chunk, *args)

    monkeypatch.setattr(teacher_module, "encode_sentences", interrupted)
    with pytest.raises(KeyboardInterrupt):
        teacher_logits(teacher, sentences, "digest-a", 32, 8, path, chunk_rows=5)
    assert not os.path.exists(path) and len(os.listdir(f"{path}.partial")) == 3  # key + 2 chunks
    calls.clear()
    interrupt_at[0] = 0
    resumed = teacher_logits(teacher, sentences, "digest-a", 32, 8, path, chunk_rows=5)
    assert calls == [5, 5, 3]  # only the chunks not yet written
    assert not os.path.exists(f"{path}.partial")
    monkeypatch.setattr(teacher_module, "encode_sentences", encode)
    fresh = teacher_logits(teacher, sentences, "digest-a", 32, 8, str(tmp_path / "fresh.npz"), chunk_rows=100)
    np.testing.assert_allclose(resumed, fresh, rtol=1e-6, atol=1e-6)
    assert np.mean(fresh.argmax(1) == np.arange(23) % 2) == 1.0

    monkeypatch.setattr(teacher_module, "encode_sentences", lambda *a: pytest.fail("cache not used"))
    np.testing.assert_array_equal(teacher_logits(teacher, sentences, "digest-a", 32, 8, path), resumed)
    with pytest.raises(SmallBertError, match="written for another --max_length"):
        teacher_logits(teacher, sentences, "digest-a", 16, 8, path)
    with pytest.raises(SmallBertError, match="written for other transfer text"):
        teacher_logits(teacher, sentences, "digest-b", 32, 8, path)
    teacher.digest = "another"
    with pytest.raises(SmallBertError, match=r"logits.npz was written for another teacher \("):
        teacher_logits(teacher, sentences, "digest-a", 32, 8, path)


def test_bad_inputs_fail_before_any_output(toy, teacher_dir, tmp_path):
    def fails(message, **overrides):
        kwargs = {"teacher": teacher_dir, "output_dir": str(tmp_path / "out"), **student(toy), **overrides}
        with pytest.raises(SmallBertError, match=message):
            run_distill(DistillConfig(**kwargs))
        assert not os.path.exists(tmp_path / "out")

    three = str(tmp_path / "three_labels")
    BertForSequenceClassification(tiny(128), num_labels=3).save_pretrained(three, vocab_file=toy["teacher_vocab"])
    fails(r"--teacher: .*three_labels has 3 output\(s\) but the task needs 2", teacher=three)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    fails(r"--transfer_file: .*empty.txt: no sentences", transfer_files=(toy["transfer"], str(empty)))
    fails(r"--transfer_file: .*missing.txt: cannot read", transfer_files=(str(tmp_path / "missing.txt"),))
    fails(r"--bert_config_file: .*teacher_config.json has vocab_size 128 but --vocab_file .* has 100 ids",
          bert_config_file=toy["configs"]["teacher"])
    # A cache at an explicit path written for another teacher: refused, not overwritten.
    other = str(tmp_path / "other_teacher")
    BertForSequenceClassification(tiny(128)).save_pretrained(other, vocab_file=toy["teacher_vocab"])
    cache = str(tmp_path / "logits.npz")
    teacher_logits(load_teacher(other, 2), ["good"], "x", 32, 8, cache)
    fails(r"--logits_cache: .*logits.npz was written for another teacher \(.*other_teacher\)", logits_cache=cache)


def transfer_set_trained_on(cfg: DistillConfig, monkeypatch) -> Split:
    """The transfer set run_distill(cfg) would train on: it stops where training would start, all checks passed."""
    from smallbert.finetune import distill

    class Accepted(Exception):
        pass

    def fake_train_seeds(cfg, checkpoint, config, data, *args, **kwargs):
        raise Accepted(data.train)

    monkeypatch.setattr(distill, "train_seeds", fake_train_seeds)
    with pytest.raises(Accepted) as accepted:
        run_distill(cfg)
    return accepted.value.args[0]


def test_fewer_labels_than_a_batch_train_on_the_transfer_set(toy, teacher_dir, tmp_path, monkeypatch):
    """16 labelled rows and a batch of 32: the 320-row transfer set fills the batches, so the run is accepted; a
    batch larger than the transfer set is refused in one line."""
    kwargs = {"teacher": teacher_dir, "transfer_files": (toy["transfer"],), **student(toy, train_batch_size=32)}
    transfer = transfer_set_trained_on(DistillConfig(output_dir=str(tmp_path / "accepted"), **kwargs), monkeypatch)
    assert len(transfer) == FEW + toy["num_unlabelled"]
    kwargs["train_batch_size"] = 400
    with pytest.raises(SmallBertError, match=rf"--train_batch_size: 400 exceeds the {FEW + toy['num_unlabelled']} "
                                             r"examples of the transfer set"):
        run_distill(DistillConfig(output_dir=str(tmp_path / "refused"), **kwargs))
    assert not os.path.exists(tmp_path / "refused")


def test_augment_adds_unlabelled_copies_before_the_transfer_files(toy, teacher_dir, tmp_path, monkeypatch):
    """--augment 3: the run trains on the 16 labelled rows, their new copies (unlabelled), then the file's text."""
    transfer = transfer_set_trained_on(DistillConfig(output_dir=str(tmp_path / "out"), teacher=teacher_dir,
                                                     augment=3, transfer_files=(toy["transfer"],), **student(toy)),
                                       monkeypatch)
    copies = len(transfer) - FEW - toy["num_unlabelled"]
    assert 2 * FEW < copies <= 3 * FEW
    assert (transfer.labels[:FEW] >= 0).all() and (transfer.labels[FEW:] == -1).all()
    originals, new = transfer.text_a[:FEW], transfer.text_a[FEW:FEW + copies]
    assert not set(new) & set(originals)
    assert transfer.text_a[FEW + copies:] == read_transfer_file(toy["transfer"])[0]
    train = dataclasses.replace(transfer, text_a=originals, labels=transfer.labels[:FEW])
    digests = {transfer_split(train, (), how).digest for how in (None, Augmentation(2), Augmentation(3))}
    assert len(digests) == 3  # the key of the teacher's cached logits


def test_augmented_regression_copies_have_no_target():
    train = Split(name="train", path="train.tsv", text_a=["a b c d", "e f g h"], text_b=["i j k", "l m n"],
                  raw_labels=["0.5", "2.0"], lines=[2, 3], index=None, digest="x",
                  labels=np.array([0.5, 2.0], np.float32))
    transfer = transfer_split(train, (), Augmentation(4))
    assert len(transfer.text_b) == len(transfer) > 4
    assert transfer.labels[:2].tolist() == [0.5, 2.0] and np.isnan(transfer.labels[2:]).all()


def test_a_pair_task_takes_no_sentence_transfer_file(toy):
    pairs = Split(name="train", path="train.tsv", text_a=["a"], text_b=["b"], raw_labels=["0"], lines=[2],
                  index=None, digest="x", labels=np.zeros(1, np.int32))
    with pytest.raises(SmallBertError, match=r"--transfer_file: .*unlabelled.txt: a pair task's transfer set"):
        transfer_split(pairs, (toy["transfer"],))


def test_transfer_file_formats(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("First doc, one.\nFirst doc, two.\n\n\nSecond doc.\n", encoding="utf-8")
    sentences, digest = read_transfer_file(str(path))
    assert sentences == ["First doc, one.", "First doc, two.", "Second doc."] and len(digest) == 40


def test_cli_one_line_error(toy, teacher_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    process = subprocess.run(
        [sys.executable, SCRIPT, "--teacher", teacher_dir, "--data_dir", toy["few"], "--bert_config_file",
         toy["configs"]["student"], "--vocab_file", toy["student_vocab"], "--transfer_file", str(empty),
         "--train_batch_size", "8", "--output_dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert process.returncode == 2, process.stderr
    assert process.stderr.strip().splitlines()[-1] == f"error: --transfer_file: {empty}: no sentences (empty or " \
                                                      f"blank lines only)"
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_repeated_distillation_reuses_its_graphs_bit_for_bit(toy, teacher_dir, tmp_path):
    """The first run compiles the teacher (its logits) and then the student; the second reads the logits from
    their cache, so compiles no teacher, and must still load the student's graphs from the first run's entry."""
    from test_compile_cache import entries, graphs, run_cached

    def distil(name):
        log = run_cached(tmp_path, os.path.join("finetuningSST2", "run_distill.py"), "--teacher", teacher_dir,
                         "--data_dir", toy["few"], "--bert_config_file", toy["configs"]["student"],
                         "--vocab_file", toy["student_vocab"], "--transfer_file", toy["transfer"],
                         "--max_length", "32", "--pad_to_max_length", "--train_batch_size", "8", "--lr", "5e-4",
                         "--epochs", "1", "--do_predict", "false", "--output_dir", str(tmp_path / name))
        results = json.loads((tmp_path / name / "eval_results.json").read_text())
        return [{k: v for k, v in epoch.items() if k != "train_seconds"}
                for seed in results["seeds"] for epoch in seed["epochs"]], log

    first, log = distil("first")
    assert "from cache" not in log and "new; graphs are saved there" in log
    [entry] = entries(str(tmp_path / "cache"))
    assert len(graphs(str(tmp_path / "cache"), entry)) >= 2  # the student's train step and its evaluation
    again, log = distil("again")
    assert "teacher logits for" in log and "from cache" in log  # no teacher graph compiled this time
    assert "reusing its graphs" in log and entries(str(tmp_path / "cache")) == [entry]
    assert again == first  # losses and dev metrics, bit for bit


# ---------------------------------------------------------------------------------------------------------------
# Layer distillation (--intermediate_loss) and resume


def test_layer_map():
    assert layer_map(2, 6) == (0, 3, 6)
    assert layer_map(4, 12) == (0, 3, 6, 9, 12)
    assert layer_map(3, 4) == (0, 1, 2, 4)
    assert layer_map(2, 2) == (0, 1, 2)


def numpy_hidden_mse(student, teacher, mask):
    return float((((student - teacher) ** 2).sum(-1) * mask).sum() / (mask.sum() * student.shape[-1]))


def numpy_attention_mse(student, teacher, mask):
    pairs = (mask[:, :, None] * mask[:, None, :])[:, None]
    return float((((student - teacher) ** 2) * pairs).sum() / (pairs.sum() * student.shape[1]))


def test_layer_losses_match_numpy():
    rng = np.random.default_rng(2)
    mask = np.ones((3, 5), np.float32)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    student, teacher = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 5, 4))
    expected = numpy_hidden_mse(student, teacher, mask)
    student[mask == 0] += 100.0  # pad positions must not count
    got = hidden_mse(*(Tensor(x.astype(np.float32)) for x in (student, teacher, mask)))
    assert float(got.asnumpy()) == pytest.approx(expected, rel=1e-5)
    scores_s, scores_t = rng.normal(size=(3, 2, 5, 5)), rng.normal(size=(3, 2, 5, 5))
    expected = numpy_attention_mse(scores_s, scores_t, mask)
    scores_s[:, :, :, 4] += 100.0  # a pad key (row 0 and 2 pad position 4) ...
    scores_s[1, :, :, 4] -= 100.0  # ... but a real one in row 1: left as it was
    got = attention_mse(*(Tensor(x.astype(np.float32)) for x in (scores_s, scores_t, mask)))
    assert float(got.asnumpy()) == pytest.approx(expected, rel=1e-5)


def test_layer_distillation_loss_matches_numpy(caplog):
    """The whole stage loss of a 1-layer H16 student against a 2-layer H32 teacher: map, layer mapping, masks."""
    import mindspore as ms

    ms.set_seed(0)
    teacher = BertForSequenceClassification(tiny(128))
    student = BertForSequenceClassification(narrow_student(128))
    net = LayerDistillationLoss(student, teacher)
    assert net.layers == (0, 2) and net.match_attention and net.hidden_map.shape == (16, 32)
    student.set_train(False)
    teacher.set_train(False)
    rng = np.random.default_rng(4)
    ids = rng.integers(5, 128, size=(2, 8)).astype(np.int32)
    mask = np.ones((2, 8), np.int32)
    mask[1, 5:] = 0
    batch = [Tensor(ids), Tensor(np.zeros_like(ids)), Tensor(mask)]
    s_states, s_scores = (tuple(x.asnumpy() for x in part) for part in student.bert.all_layers(*batch))
    t_states, t_scores = (tuple(x.asnumpy() for x in part) for part in teacher.bert.all_layers(*batch))
    w, m = net.hidden_map.asnumpy(), mask.astype(np.float32)
    expected = (numpy_hidden_mse(s_states[0] @ w, t_states[0], m) + numpy_hidden_mse(s_states[1] @ w, t_states[2], m)
                + numpy_attention_mse(s_scores[0], t_scores[1], m))
    assert float(net(*batch).asnumpy()) == pytest.approx(expected, rel=1e-5)
    # The last state is the encoder's output; the scores are [B, A, S, S].
    np.testing.assert_allclose(t_states[-1], teacher.bert.encode(*batch).asnumpy(), rtol=1e-6, atol=1e-6)
    assert t_scores[0].shape == (2, 2, 8, 8)
    # Another head count: hidden states only, said in the log.
    other = BertConfig(**{**narrow_student(128).to_dict(), "num_attention_heads": 4})
    with caplog.at_level("INFO", logger="smallbert"):
        assert not LayerDistillationLoss(BertForSequenceClassification(other), teacher).match_attention
    assert "4 attention heads, the teacher 2: hidden states only" in caplog.text


def narrow_student(vocab_size: int) -> BertConfig:
    """Narrower and shallower than the teacher: the map and the layer mapping are exercised."""
    return BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)


def test_intermediate_loss_refuses_another_vocab(toy, teacher_dir, tmp_path):
    with pytest.raises(SmallBertError, match=r"^--intermediate_loss: the teacher .* and the student \(.*"
                                             r"student_vocab.txt\) have different vocabularies"):
        run_distill(DistillConfig(teacher=teacher_dir, output_dir=str(tmp_path / "out"), intermediate_loss=True,
                                  **student(toy)))
    assert not os.path.exists(tmp_path / "out")


def test_intermediate_loss_refuses_another_casing(toy):
    from smallbert.tokenization import FullTokenizer

    cased, uncased = (FullTokenizer(toy["teacher_vocab"], do_lower_case=flag) for flag in (False, True))
    check_same_tokenizer(uncased, FullTokenizer(toy["teacher_vocab"]), "teacher", toy["teacher_vocab"])
    with pytest.raises(SmallBertError, match=r"^--intermediate_loss: the teacher teacher has do_lower_case False, "
                                             r"the student True"):
        check_same_tokenizer(cased, uncased, "teacher", toy["teacher_vocab"])


@pytest.fixture(scope="module")
def layered(toy, teacher_dir):
    """An uninterrupted run with --intermediate_loss (2 layer epochs, 2 logit epochs) of a narrow student that
    shares the teacher's vocab; and the kwargs to repeat it."""
    config = os.path.join(toy["root"], "narrow_config.json")
    narrow_student(128).to_json_file(config)
    kwargs = dict(teacher=teacher_dir, transfer_files=(toy["transfer"],), intermediate_loss=True,
                  intermediate_epochs=2, epochs=2, alpha=0.5,
                  **student(toy, bert_config_file=config, vocab_file=toy["teacher_vocab"]))
    out = os.path.join(toy["root"], "layered")
    return out, kwargs, run_distill(DistillConfig(output_dir=out, **kwargs))


def test_intermediate_loss_trains_and_writes_best(layered, toy):
    out, _, results = layered
    stage = results["seeds"][0]["first_stage"]
    assert stage["layer_map"] == [0, 2] and stage["attention_loss"]
    first, second = (e["train_loss"] for e in stage["epochs"])
    assert second < first, stage
    assert results["best_dev_accuracy_mean"] > 0.5
    evaluated = run(FinetuneConfig(data_dir=toy["few"], init_checkpoint=os.path.join(out, "best"), output_dir="eval",
                                   do_train=False, **COMMON))
    assert evaluated["dev_accuracy"] == results["best_dev_accuracy_mean"]
    with open(os.path.join(out, "best", "config.json"), encoding="utf-8") as f:
        assert json.load(f)["hidden_size"] == 16  # the map is not part of the student


def test_resume_after_an_interrupted_epoch_is_exact(layered, tmp_path, monkeypatch):
    """Interrupted after logit epoch 1 of 2, then --resume: the same losses, metrics and best/ weights, bit for
    bit, as the uninterrupted run; the layer stage is not run again."""
    from smallbert.finetune import loop
    from smallbert.weights import read_state_dict

    uninterrupted_dir, kwargs, uninterrupted = layered
    out = str(tmp_path / "run")

    class Interrupted(Exception):
        pass

    save = loop.save_checkpoint

    def save_then_stop(*args, **kw):
        save(*args, **kw)
        raise Interrupted

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        run_distill(DistillConfig(output_dir=out, **kwargs))
    monkeypatch.setattr(loop, "save_checkpoint", save)
    with pytest.raises(SmallBertError, match=r"^--resume: .*step_\d+ was trained with other settings: --lr"):
        run_distill(DistillConfig(output_dir=out, resume=True, **{**kwargs, "lr": 1e-3}))
    monkeypatch.setattr("smallbert.finetune.distill.train_layers", lambda *a: pytest.fail("layer stage ran again"))
    resumed = run_distill(DistillConfig(output_dir=out, resume=True, **kwargs))

    def outcome(results):
        seed = results["seeds"][0]
        return seed["first_stage"]["epochs"][-1]["train_loss"], [
            {k: v for k, v in e.items() if k != "train_seconds"} for e in seed["epochs"]]

    assert outcome(resumed) == outcome(uninterrupted)
    a, b = (read_state_dict(os.path.join(d, "best", "model.ckpt")) for d in (out, uninterrupted_dir))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with open(os.path.join(out, "test_predictions.tsv"), encoding="utf-8") as f, \
            open(os.path.join(uninterrupted_dir, "test_predictions.tsv"), encoding="utf-8") as g:
        assert f.read() == g.read()
