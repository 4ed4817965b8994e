"""The compile cache: a repeated run loads its graphs and trains exactly as before; other setups get entries of
their own (MindSpore's cache numbers graphs by compile order, so a shared entry would load the wrong ones)."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from smallbert import compile_cache
from smallbert.config import PretrainConfig
from smallbert.pretrain import compile_setup

from test_distributed import VOCAB, write_shards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entries(cache: str) -> list[str]:
    folder = os.path.join(cache, "compile")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def graphs(cache: str, entry: str) -> list[str]:
    return sorted(f for f in os.listdir(os.path.join(cache, "compile", entry, "rank_0", "graph_cache"))
                  if f.endswith(".mindir"))


def run_cached(tmp_path, script: str, *args: str) -> str:
    """Runs the entry `script` (relative to the repository) with the compile cache on, kept in tmp_path/cache;
    returns its stderr, the log."""
    env = {k: v for k, v in os.environ.items() if k != "SMALLBERT_COMPILE_CACHE"}
    env.update(SMALLBERT_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=os.path.join(ROOT, "src"))
    done = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


@pytest.mark.slow
def test_repeat_run_reuses_graphs_and_other_setups_get_their_own(tmp_path):
    write_shards(str(tmp_path / "shards"))
    config = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 32}
    (tmp_path / "bert_config.json").write_text(json.dumps(config))

    def run(name, *flags):
        log = run_cached(tmp_path, "run_pretrain.py", "--data_dir", str(tmp_path / "shards"),
                         "--config", str(tmp_path / "bert_config.json"), "--output_dir", str(tmp_path / name),
                         "--train_steps", "3", "--warmup_steps", "1", "--train_batch_size", "4", "--log_steps", "1",
                         "--save_steps", "0", "--lr", "1e-3", *flags)
        rows = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
        return [r["loss"] for r in rows if "mlm_loss" in r], [r for r in rows if "eval_loss" in r], log

    evaluated = ("--eval_data_dir", str(tmp_path / "shards"), "--eval_batches", "2")
    first, first_evals, log = run("first", *evaluated)
    [entry] = entries(str(tmp_path / "cache"))
    assert "new; graphs are saved there" in log
    assert graphs(str(tmp_path / "cache"), entry) == ["compile_cache_0.mindir", "compile_cache_1.mindir"]

    again, again_evals, log = run("again", *evaluated)
    assert "reusing its graphs" in log and entries(str(tmp_path / "cache")) == [entry]
    assert again == first and again_evals == first_evals  # bit for bit

    # No evaluation: the train step is this run's first graph, the other entry's second. A shared entry would
    # hand it the evaluation graph (measured: it crashes); its own entry trains as the first run did.
    alone, _, log = run("alone")
    assert "new; graphs are saved there" in log and len(entries(str(tmp_path / "cache"))) == 2
    assert alone == first


def test_key_follows_what_shapes_the_graphs():
    cfg = PretrainConfig(data_dir="a", bert_config_file="c.json", output_dir="out", train_steps=10)

    class Inputs:  # the parts of pretrain._Inputs the key reads
        def __init__(self, layers=2, seq=128):
            from smallbert import BertConfig
            self.bert_config = BertConfig(vocab_size=100, num_hidden_layers=layers)
            self.train = type("Shards", (), {"shapes": [seq, 20, False]})()
            self.eval, self.resume_path = None, None

    base = compile_cache.directory(compile_setup(cfg, Inputs(), 1))
    same = dataclasses.replace(cfg, data_dir="b", output_dir="elsewhere", log_steps=7, save_steps=3, resume="auto")
    assert compile_cache.directory(compile_setup(same, Inputs(), 1)) == base
    for other, inputs, world in ((cfg, Inputs(layers=1), 1), (cfg, Inputs(seq=64), 1), (cfg, Inputs(), 2),
                                 (dataclasses.replace(cfg, seed=1), Inputs(), 1),
                                 (dataclasses.replace(cfg, lr=2e-4), Inputs(), 1),
                                 (dataclasses.replace(cfg, eval_steps=5), Inputs(), 1)):
        assert compile_cache.directory(compile_setup(other, inputs, world)) != base


def test_one_session_per_process_and_off_after(monkeypatch, tmp_path):
    monkeypatch.delenv("SMALLBERT_COMPILE_CACHE")
    monkeypatch.setenv("SMALLBERT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(compile_cache, "_used", None)
    with compile_cache.session({"a": 1}) as path:
        assert path == compile_cache.directory({"a": 1}) and os.environ["MS_COMPILER_CACHE_PATH"] == path
        assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "1"
    assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "0"
    with compile_cache.session({"b": 2}) as second:  # MindSpore keeps the first path for the whole process
        assert second is None and os.environ["MS_COMPILER_CACHE_ENABLE"] == "0"
    monkeypatch.setattr(compile_cache, "_used", None)
    monkeypatch.setenv("SMALLBERT_COMPILE_CACHE", "0")
    with compile_cache.session({"a": 1}) as off:
        assert off is None


@pytest.mark.slow
def test_repeated_fine_tuning_reuses_its_graphs_bit_for_bit(tmp_path):
    """run_classify's length buckets, evaluation and test graphs, all seeds: one entry per setup, reused by a
    repeat, which trains exactly as the first run did; another max_length gets an entry of its own."""
    config = {"vocab_size": 1051, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 64}
    (tmp_path / "bert_config.json").write_text(json.dumps(config))

    def run(name, *flags):
        sample = os.path.join(ROOT, "sample")
        log = run_cached(tmp_path, os.path.join("finetuningSST2", "run_classify.py"),
                         "--data_dir", os.path.join(sample, "SST-2"), "--vocab_file", os.path.join(sample, "vocab.txt"),
                         "--bert_config_file", str(tmp_path / "bert_config.json"), "--output_dir", str(tmp_path / name),
                         "--epochs", "1", "--seeds", "1,2", "--lr", "1e-3", "--train_batch_size", "16", *flags)
        results = json.loads((tmp_path / name / "eval_results.json").read_text())
        trained = [[{k: v for k, v in epoch.items() if k != "train_seconds"} for epoch in seed["epochs"]]
                   for seed in results["seeds"]]
        return trained, log

    first, log = run("first")
    [entry] = entries(str(tmp_path / "cache"))
    assert "new; graphs are saved there" in log
    saved = graphs(str(tmp_path / "cache"), entry)
    assert len(saved) >= 4  # per seed at least one train bucket and one eval graph

    again, log = run("again")
    assert "reusing its graphs" in log and entries(str(tmp_path / "cache")) == [entry]
    assert again == first  # losses and dev metrics, bit for bit

    _, log = run("shorter", "--max_length", "32")
    assert "new; graphs are saved there" in log and len(entries(str(tmp_path / "cache"))) == 2


def test_fine_tuning_key_follows_what_shapes_the_graphs():
    from smallbert import BertConfig
    from smallbert.finetune.config import FinetuneConfig
    from smallbert.finetune.encode import Encoded
    from smallbert.finetune.loop import compile_setup

    def data(lengths=(5, 9, 30)):
        ids = Encoded(np.zeros((len(lengths), 64), np.int32), np.array(lengths, np.int32), np.array(lengths, np.int32))
        dev = type("Split", (), {"name": "dev"})()
        return type("Data", (), {"train_ids": ids, "devs": [(dev, ids)], "tests": []})()

    cfg = FinetuneConfig(data_dir="a", init_checkpoint="ckpt", output_dir="out")
    config = BertConfig(vocab_size=100, id2label={"0": "a", "1": "b"})
    base = compile_cache.directory(compile_setup(cfg, config, data()))
    moved = dataclasses.replace(cfg, data_dir="b", init_checkpoint="other", output_dir="elsewhere", overwrite=True)
    assert compile_cache.directory(compile_setup(moved, config, data())) == base
    for other_cfg, other_config, other_data in (
            (dataclasses.replace(cfg, seeds=(1, 2)), config, data()),
            (dataclasses.replace(cfg, lr=1e-4), config, data()),
            (dataclasses.replace(cfg, max_length=32), config, data()),
            (cfg, BertConfig(vocab_size=100, id2label={"0": "a", "1": "b", "2": "c"}), data()),
            (cfg, config, data((5, 9, 31)))):
        assert compile_cache.directory(compile_setup(other_cfg, other_config, other_data)) != base
