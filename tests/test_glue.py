"""Every task layout on toy data made here: GLUE's MRPC, MNLI, STS-B and header-less CoLA, and a Chinese TSV.

Each toy has a learnable signal (the label is which cue word appears), and its test.tsv repeats dev, so the
written predictions can be scored here with numpy and compared with the metrics the run reported. One
module-scoped run per layout (tiny model, one padded length: two graphs each); the other tests read their outputs
or fail before anything compiles.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from smallbert import BertConfig
from smallbert.errors import SmallBertError
from smallbert.finetune import FinetuneConfig, get_task, load_classifier, run
from smallbert.finetune.distill import DistillConfig, run_distill
from smallbert.finetune.encode import default_cache_dir, encode_sentences, truncate_seq_pair
from smallbert.finetune.metrics import average_ranks, f1_score, matthews_corrcoef, pearson, spearman
from smallbert.tokenization import FullTokenizer

POSITIVE, NEGATIVE, MAYBE = ("good", "great"), ("bad", "awful"), ("perhaps", "maybe")
NEUTRAL = ("the", "movie", "film", "was", "plot", "a", "story", "and", "it", "is", "this", "of", "cast", ".")
CHINESE = ("好", "坏", "电", "影", "很", "的", "这", "部", "故", "事")
HPARAMS = dict(max_length=32, pad_to_max_length=True, train_batch_size=16, eval_batch_size=64, lr=1e-3, epochs=6)
MNLI_CUES = {"entailment": POSITIVE, "contradiction": NEGATIVE, "neutral": MAYBE}


@pytest.fixture(autouse=True, scope="module")
def _cache_in_tmp(tmp_path_factory):
    """The default encoding cache is $XDG_CACHE_HOME/smallbert/finetune: keep it out of the home directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


def words(rng: np.random.Generator, cue: str | None = None) -> str:
    """3-8 neutral words, with `cue` at a random place."""
    out = list(rng.choice(NEUTRAL, size=int(rng.integers(3, 9))))
    if cue:
        out.insert(int(rng.integers(len(out) + 1)), cue)
    return " ".join(out)


def write(path: str, header: str | None, rows: list[tuple]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write((header + "\n" if header else "") + "".join("\t".join(map(str, r)) + "\n" for r in rows))


def make_task(root: str, name: str, rows_fn, train_header, test_header, test_row, dev_names=("dev",),
              test_names=("test",), n_train: int = 320, n_dev: int = 96) -> dict:
    """Writes train, dev and test files (test = the first dev split's texts) under root/name; returns the
    directory and the labels of the first dev split."""
    directory = os.path.join(root, name)
    os.makedirs(directory)
    rng = np.random.default_rng(len(name))
    write(os.path.join(directory, "train.tsv"), train_header, [rows_fn(rng, i) for i in range(n_train)])
    dev_rows = {}
    for dev in dev_names:
        dev_rows[dev] = [rows_fn(rng, i) for i in range(n_dev)]
        write(os.path.join(directory, f"{dev}.tsv"), train_header, dev_rows[dev])
    first = dev_rows[dev_names[0]]
    for test in test_names:
        write(os.path.join(directory, f"{test}.tsv"), test_header, [test_row(i, r) for i, r in enumerate(first)])
    return {"dir": directory, "dev_rows": first}


def mrpc_row(rng, i):
    label = int(rng.integers(2))
    return (label, 1000 + i, 2000 + i, words(rng), words(rng, str(rng.choice(POSITIVE if label else NEGATIVE))))


def mnli_row(rng, i):
    label = str(rng.choice(list(MNLI_CUES)))
    return (i, "telephone", words(rng), words(rng, str(rng.choice(MNLI_CUES[label]))), label)


def stsb_row(rng, i):
    count = int(rng.integers(0, 4))  # the score: how many "good"s sentence 2 has
    b = words(rng) + " good" * count
    return (i, "main-news", words(rng), b, f"{count + 0.25 * rng.random():.3f}")


def cola_row(rng, i):
    label = int(rng.integers(2))
    return ("gj04", label, "" if label else "*", words(rng, "good" if label else "bad"))


def chinese_row(rng, i):
    label = "正面" if rng.integers(2) else "负面"
    chars = list(rng.choice(CHINESE[2:], size=int(rng.integers(3, 9))))
    chars.insert(int(rng.integers(len(chars) + 1)), "好" if label == "正面" else "坏")
    return (label, "".join(chars))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny random-init model directory with a vocab of every toy word, and one directory per layout."""
    root = str(tmp_path_factory.mktemp("glue"))
    vocab = os.path.join(root, "vocab.txt")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *MAYBE, *NEUTRAL, *CHINESE]
    with open(vocab, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens + [f"[unused{i}]" for i in range(64 - len(tokens))]) + "\n")
    config = os.path.join(root, "config.json")
    BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64).to_json_file(config)
    mnli_header = "index\tgenre\tsentence1\tsentence2\tgold_label"
    return {
        "root": root, "vocab": vocab, "config": config,
        "mrpc": make_task(root, "mrpc", mrpc_row, "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                          "index\t#1 ID\t#2 ID\t#1 String\t#2 String", lambda i, r: (i, *r[1:])),
        "mnli": make_task(root, "mnli", mnli_row, mnli_header, "index\tgenre\tsentence1\tsentence2",
                          lambda i, r: r[:4], dev_names=("dev_matched", "dev_mismatched"),
                          test_names=("test_matched", "test_mismatched")),
        "sts-b": make_task(root, "sts-b", stsb_row, "index\tgenre\tsentence1\tsentence2\tscore",
                           "index\tgenre\tsentence1\tsentence2", lambda i, r: r[:4]),
        "cola": make_task(root, "cola", cola_row, None, "index\tsentence", lambda i, r: (i, r[3])),
        "tsv": make_task(root, "tsv", chinese_row, "label\ttext_a", "text_a", lambda i, r: (r[1],)),
    }


def scratch(toy, task: str, **overrides) -> FinetuneConfig:
    return FinetuneConfig(**{**dict(data_dir=toy[task]["dir"], init_checkpoint=None, bert_config_file=toy["config"],
                                    vocab_file=toy["vocab"], output_dir=os.path.join(toy["root"], f"out_{task}"),
                                    task_name=task), **HPARAMS, **overrides})


_runs: dict[str, dict] = {}


@pytest.fixture(scope="module")
def trained(toy):
    """`trained(task)`: that layout's run, fine-tuned once per module."""
    def get(task: str, **overrides) -> dict:
        if task not in _runs:
            _runs[task] = run(scratch(toy, task, **overrides))
        return _runs[task]
    return get


def predictions(results: dict, split: str = "test") -> list[str]:
    with open(results["seeds"][0]["predictions"][split], encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    assert header == "index\tprediction"
    assert [int(r.split("\t")[0]) for r in rows] == list(range(len(rows)))
    return [r.split("\t")[1] for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# Metrics against hand computations


def test_metrics_match_hand_computed_values():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    guess = np.array([1, 1, 0, 0, 0, 1, 0, 1])  # TP 3, FP 1, FN 1, TN 3
    assert f1_score(guess, labels) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert matthews_corrcoef(guess, labels) == pytest.approx((3 * 3 - 1 * 1) / np.sqrt(4 * 4 * 4 * 4))
    assert matthews_corrcoef(np.zeros(8, int), labels) == 0.0  # constant predictions: undefined, reported 0
    three = np.array([0, 1, 2, 0, 1, 2, 2])
    assert matthews_corrcoef(three, three) == pytest.approx(1.0)
    x, y = np.array([1.0, 2.0, 2.0, 3.0, 7.0]), np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    np.testing.assert_array_equal(average_ranks(x), [1, 2.5, 2.5, 4, 5])
    assert spearman(x, y) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4, 5], [2, 1, 4, 3, 5])[0, 1])
    assert spearman(x, x ** 3) == pytest.approx(1.0)
    scipy = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    assert spearman(a, b) == pytest.approx(scipy.spearmanr(a, b).statistic)


def test_pairs_are_cls_a_sep_b_sep_with_google_truncation(toy):
    a, b = list(range(10)), [20, 21, 22]
    truncate_seq_pair(a, b, 8)
    assert a == [0, 1, 2, 3, 4] and b == [20, 21, 22]  # the longer side loses tokens from its end
    tokenizer = FullTokenizer(toy["vocab"], do_lower_case=True)
    ids = tokenizer.vocab
    encoded = encode_sentences(["the film was good", "这部电影很好"], ["bad", "坏"], tokenizer, 8)
    assert encoded.input_ids[0].tolist() == [ids[w] for w in ("[CLS]", "the", "film", "was", "good", "[SEP]",
                                                              "bad", "[SEP]")]
    # 6 characters + 1: the first side gives up two, down to 5 tokens between [CLS] and the [SEP]s.
    assert encoded.input_ids[1].tolist() == [ids[w] for w in ("[CLS]", "这", "部", "电", "影", "[SEP]", "坏",
                                                              "[SEP]")]
    assert encoded.segment_starts.tolist() == [6, 6] and encoded.lengths.tolist() == [8, 8]


# ---------------------------------------------------------------------------------------------------------------
# One run per layout


def test_mrpc_pairs_learned_and_f1_accuracy_match_predictions(toy, trained):
    results = trained("mrpc")
    assert results["metric_for_best"] == "dev_f1"
    assert results["best_dev_f1_mean"] >= 0.9 and results["best_dev_accuracy_mean"] >= 0.9
    labels = np.array([r[0] for r in toy["mrpc"]["dev_rows"]])
    predicted = np.array([int(p) for p in predictions(results)])
    assert results["best_dev_f1_mean"] == pytest.approx(f1_score(predicted, labels))
    assert results["best_dev_accuracy_mean"] == pytest.approx(np.mean(predicted == labels))
    assert not os.path.exists(os.path.join(toy["mrpc"]["dir"], "cache"))  # the cache is not in the data dir
    assert os.listdir(default_cache_dir())


def test_mrpc_do_train_false_reproduces_dev_metrics(toy, trained, tmp_path):
    results = trained("mrpc")
    evaluated = run(FinetuneConfig(data_dir=toy["mrpc"]["dir"], init_checkpoint=results["best_checkpoint"],
                                   output_dir=str(tmp_path / "eval"), task_name="mrpc", do_train=False,
                                   **HPARAMS))
    assert evaluated["dev_f1"] == results["best_dev_f1_mean"]
    assert evaluated["dev_accuracy"] == results["best_dev_accuracy_mean"]


def test_mnli_string_labels_two_dev_sets_and_named_predictions(toy, trained):
    results = trained("mnli", epochs=12)  # three classes take a few epochs longer to separate
    assert results["metric_for_best"] == "dev_matched_accuracy"
    assert results["best_dev_matched_accuracy_mean"] >= 0.9
    assert results["best_dev_mismatched_accuracy_mean"] >= 0.9
    labels = [r[4] for r in toy["mnli"]["dev_rows"]]
    for split in ("test_matched", "test_mismatched"):
        named = predictions(results, split)
        assert set(named) <= set(MNLI_CUES)
        assert np.mean(np.array(named) == np.array(labels)) == pytest.approx(results["best_dev_matched_accuracy_mean"])
    with open(os.path.join(results["best_checkpoint"], "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}
    assert config["problem_type"] == "single_label_classification"


def test_stsb_regression_pearson_spearman_match_predictions(toy, trained, tmp_path):
    results = trained("sts-b")
    assert results["metric_for_best"] == "dev_pearson" and results["best_dev_pearson_mean"] >= 0.8
    scores = np.array([float(r[4]) for r in toy["sts-b"]["dev_rows"]])
    predicted = np.array([float(p) for p in predictions(results)])
    assert results["best_dev_pearson_mean"] == pytest.approx(np.corrcoef(predicted, scores)[0, 1], abs=1e-3)
    assert results["best_dev_spearman_mean"] == pytest.approx(spearman(predicted, scores), abs=2e-2)
    with open(os.path.join(results["best_checkpoint"], "config.json"), encoding="utf-8") as f:
        assert json.load(f)["problem_type"] == "regression"
    evaluated = run(FinetuneConfig(data_dir=toy["sts-b"]["dir"], init_checkpoint=results["best_checkpoint"],
                                   output_dir=str(tmp_path / "eval"), task_name="sts-b", do_train=False,
                                   do_predict=False, **HPARAMS))
    assert evaluated["dev_pearson"] == pytest.approx(results["best_dev_pearson_mean"], abs=1e-6)


def test_cola_header_less_mcc_matches_predictions(toy, trained):
    results = trained("cola")
    assert results["metric_for_best"] == "dev_mcc" and results["best_dev_mcc_mean"] >= 0.8
    labels = np.array([r[1] for r in toy["cola"]["dev_rows"]])
    predicted = np.array([int(p) for p in predictions(results)])
    p, t = np.bincount(predicted, minlength=2), np.bincount(labels, minlength=2)
    tp = np.sum((predicted == 1) & (labels == 1))
    tn = np.sum((predicted == 0) & (labels == 0))
    fp, fn = p[1] - tp, t[1] - tp
    mcc = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert results["best_dev_mcc_mean"] == pytest.approx(mcc)


def test_chinese_tsv_string_labels_survive_save_load_and_hf_export(toy, trained, tmp_path):
    from smallbert.convert import convert, load_model

    results = trained("tsv")
    assert results["best_dev_accuracy_mean"] >= 0.9
    first = toy["tsv"]["dev_rows"]  # test.tsv has no index column: rows are numbered
    names = predictions(results)
    assert set(names) <= {"正面", "负面"}
    assert np.mean(np.array(names) == np.array([r[0] for r in first])) == pytest.approx(
        results["best_dev_accuracy_mean"])
    with open(os.path.join(toy["tsv"]["dir"], "train.tsv"), encoding="utf-8") as f:
        first_seen = f.read().splitlines()[1].split("\t")[0]
    order = (first_seen, ({"正面", "负面"} - {first_seen}).pop())
    loaded = load_model(results["best_checkpoint"])
    assert loaded.config.label_names == order and loaded.num_labels == 2
    convert("smallbert", "hf", results["best_checkpoint"], str(tmp_path / "hf"))
    with open(tmp_path / "hf" / "config.json", encoding="utf-8") as f:
        hf = json.load(f)
    assert hf["id2label"] == {"0": order[0], "1": order[1]} and hf["label2id"] == {order[0]: 0, order[1]: 1}
    transformers = pytest.importorskip("transformers")
    assert transformers.AutoConfig.from_pretrained(str(tmp_path / "hf")).id2label == {0: order[0], 1: order[1]}


def test_a_head_with_another_label_count_is_reinitialised(toy, trained, caplog):
    best = trained("mrpc")["best_checkpoint"]
    config = BertConfig.from_dict({**BertConfig.from_json_file(best).to_dict(),
                                   "id2label": {"0": "a", "1": "b", "2": "c"}})
    with caplog.at_level(logging.WARNING, logger="smallbert"):
        model = load_classifier(best, config, "O0")
    assert "classifier head has 2 outputs, this task needs 3: initialised fresh" in caplog.text
    assert model.classifier.weight.shape == (3, 32)
    assert not [n for n in model.load_report.missing if not n.startswith("classifier.")]


def test_distillation_inherits_pairs_and_regression(toy, trained):
    teacher = trained("sts-b")["best_checkpoint"]
    out = os.path.join(toy["root"], "distilled_stsb")
    results = run_distill(DistillConfig(teacher=teacher, output_dir=out, alpha=0.0, do_predict=False,
                                        **{k: v for k, v in vars(scratch(toy, "sts-b")).items()
                                           if k in ("data_dir", "init_checkpoint", "bert_config_file", "vocab_file",
                                                    "task_name", *HPARAMS)}))
    assert results["teacher_dev_pearson"] >= 0.8
    assert results["best_dev_pearson_mean"] >= 0.7  # learned from the teacher's outputs alone (alpha 0)
    assert results["hparams"]["num_labelled_examples"] == 320


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line naming file, line and column; nothing written


def copy_task(toy, task: str, target, edit) -> str:
    """A copy of a toy task directory with `edit(name, lines) -> lines` applied to each file."""
    os.makedirs(target)
    for name in os.listdir(toy[task]["dir"]):
        with open(os.path.join(toy[task]["dir"], name), encoding="utf-8") as f:
            lines = f.read().splitlines()
        with open(os.path.join(target, name), "w", encoding="utf-8") as f:
            f.write("\n".join(edit(name, lines)) + "\n")
    return str(target)


@pytest.mark.parametrize("task, file, edit, overrides, message", [
    ("mrpc", "dev.tsv", lambda ls: [ls[0].replace("#2 String", "String 2")] + ls[1:], {},
     r"mrpc/dev.tsv:1: no column '#2 String' \(the header has Quality, #1 ID, #2 ID, #1 String, String 2\)"),
    ("mnli", "dev_mismatched.tsv", lambda ls: ls[:3] + [ls[3].rsplit("\t", 1)[0] + "\tunsure"] + ls[4:], {},
     r"mnli/dev_mismatched.tsv:4: column 'gold_label': label 'unsure' is not one of mnli's labels "
     r"\(contradiction, entailment, neutral\)"),
    ("tsv", "dev.tsv", lambda ls: ls[:5] + ["中性\t这部电影"] + ls[5:], {"task_name": "tsv"},
     r"tsv/dev.tsv:6: column 'label': label '中性' is not one of .*tsv/train.tsv's labels \(.*\)"),
    ("sts-b", "train.tsv", lambda ls: ls[:7] + [ls[7].rsplit("\t", 1)[0] + "\tfour"] + ls[8:], {},
     r"sts-b/train.tsv:8: column 'score': 'four' is not a number \(a sts-b regression target\)"),
    ("cola", "train.tsv", lambda ls: ls[:9] + ["gj04\t1\tjust three fields"] + ls[9:], {},
     r"cola/train.tsv:10: malformed row: expected 4 tab-separated fields, got 3"),
    ("mrpc", "train.tsv", lambda ls: ls[:2] + [ls[2] + "\textra"] + ls[3:], {},
     r"mrpc/train.tsv:3: malformed row: expected 5 tab-separated fields \(Quality, .*\), got 6"),
    ("tsv", "train.tsv", lambda ls: ls, {"task_name": "tsv", "text_b_column": "text_b"},
     r"tsv/train.tsv:1: --text_b_column: no column 'text_b' \(the header has label, text_a\)"),
    ("tsv", "train.tsv", lambda ls: ls, {"task_name": "tsv", "label_column": "sentiment"},
     r"tsv/train.tsv:1: --label_column: no column 'sentiment'"),
    ("mrpc", "train.tsv", lambda ls: ls, {"metric_for_best": "mcc"},
     r"--metric_for_best: 'mcc' is not a metric of mrpc \(f1, accuracy, loss, or one of dev_f1, "),
    ("mrpc", "train.tsv", lambda ls: ls, {"text_b_column": "x"}, r"--text_b_column: only for --task_name tsv"),
])
def test_bad_input_is_one_line_naming_file_line_and_column(toy, tmp_path, task, file, edit, overrides, message):
    data = copy_task(toy, task, tmp_path / task, lambda name, lines: edit(lines) if name == file else lines)
    cfg = scratch(toy, task, data_dir=data, output_dir=str(tmp_path / "out"), **overrides)
    with pytest.raises(SmallBertError, match=message) as error:
        run(cfg)
    assert "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "out")


def test_output_dir_is_refused_unless_overwrite_which_clears_it(toy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "plots").mkdir()
    data = toy["mrpc"]["dir"]
    with pytest.raises(SmallBertError, match=r"--output_dir: .*out is not empty \(found plots\); .*--overwrite"):
        run(scratch(toy, "mrpc", output_dir=str(out)))
    # --overwrite never clears a directory that holds one of the run's inputs.
    with pytest.raises(SmallBertError, match=r"--overwrite: .* holds .*mrpc, an input of this run"):
        run(scratch(toy, "mrpc", output_dir=os.path.dirname(data), overwrite=True))
    assert os.path.isdir(out / "plots") and os.path.isfile(os.path.join(data, "train.tsv"))


def test_overwrite_clears_the_earlier_run(toy, trained, tmp_path):
    best = trained("mrpc")["best_checkpoint"]
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    run(FinetuneConfig(data_dir=toy["mrpc"]["dir"], init_checkpoint=best, output_dir=str(out), task_name="mrpc",
                       do_train=False, overwrite=True, **HPARAMS))
    assert sorted(os.listdir(out)) == ["eval_results.json", "test_predictions.tsv"]


def test_default_cache_dir_honours_smallbert_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("SMALLBERT_CACHE_DIR", str(tmp_path / "own"))
    assert default_cache_dir() == str(tmp_path / "own" / "finetune")
    monkeypatch.delenv("SMALLBERT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == str(tmp_path / "smallbert" / "finetune")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == str(tmp_path / "home" / ".cache" / "smallbert" / "finetune")


def test_task_table_knows_glue_columns():
    assert get_task("qqp").train.text_b == "question2" and get_task("qqp").test["test"].index == "id"
    assert get_task("qnli").labels == ("entailment", "not_entailment")
    assert list(get_task("mnli").test) == ["test_matched", "test_mismatched"]
    assert get_task("tsv", "regression").metrics == ("pearson", "spearman")
    with pytest.raises(SmallBertError, match="--task_type: sts-b is a regression task"):
        get_task("sts-b", "classification")


@pytest.mark.parametrize("script", ["run_classify.py", "run_distill.py"])
def test_help_needs_no_mindspore_and_shows_defaults(script):
    import subprocess
    import sys

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "finetuningSST2", script)
    probe = (f"import runpy, sys\nsys.argv = [{path!r}, '--help']\ntry:\n    runpy.run_path({path!r}, "
             f"run_name='__main__')\nexcept SystemExit:\n    pass\n"
             f"print('mindspore loaded:', 'mindspore' in sys.modules)")
    process = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip().endswith("mindspore loaded: False")
    text = " ".join(process.stdout.split())
    for flag in ("--task_name TASK_NAME", "--max_length", "--lr", "--epochs", "--seed", "--output_dir",
                 "--cache_dir", "--metric_for_best"):
        assert flag.split()[0] in text
    assert "(default: sst-2)" in text and "(default: ~/.cache" not in text  # XDG described, not a fixed path
    assert "(default: 1)" in text and "$XDG_CACHE_HOME/smallbert/finetune" in text
