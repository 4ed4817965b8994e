"""Data parallel with msrun on 2 CPU workers (MindSpore's mccl backend) vs 1 process on the combined batch.

The slow tests of this suite (~20-40 s each): deselect with `-m "not slow"`.
"""
import json
import os
import shutil
import socket
import subprocess

import numpy as np
import pytest

import mindspore as ms

from smallbert import BertConfig, BertForPreTraining
from smallbert.config import PretrainConfig
from smallbert.data.records import METADATA_FORMAT, write_mindrecord
from smallbert.pretrain import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, SEQ, PREDICTIONS, ROWS = 100, 16, 3, 48


def write_shards(directory, seed=0):
    """Synthetic MindRecord shards in the data tool's layout. Rows hold 1 to PREDICTIONS real predictions (the
    rest padded, weight 0), so ranks and micro-batches see different MLM denominators."""
    rng = np.random.default_rng(seed)
    positions = np.stack([np.sort(rng.choice(np.arange(1, SEQ), PREDICTIONS, replace=False)) for _ in range(ROWS)])
    padded = np.arange(PREDICTIONS)[None, :] >= rng.integers(1, PREDICTIONS + 1, ROWS)[:, None]
    positions[padded] = 0
    segment_ids = np.zeros((ROWS, SEQ), np.int32)
    segment_ids[:, SEQ // 2:] = 1
    arrays = {"input_ids": rng.integers(5, VOCAB, (ROWS, SEQ)).astype(np.int32),
              "input_mask": np.ones((ROWS, SEQ), np.int32), "segment_ids": segment_ids,
              "masked_lm_positions": positions.astype(np.int32),
              "masked_lm_ids": rng.integers(5, VOCAB, (ROWS, PREDICTIONS)).astype(np.int32),
              "masked_lm_weights": np.where(padded, 0.0, 1.0).astype(np.float32),
              "next_sentence_labels": rng.integers(0, 2, (ROWS, 1)).astype(np.int32)}
    os.makedirs(directory)
    write_mindrecord(os.path.join(directory, "part-000000.mindrecord"), arrays)
    metadata = {"format": METADATA_FORMAT, "num_shards": 1, "shard_index": 0, "files": ["part-000000.mindrecord"],
                "rows_per_file": [ROWS], "counts": {"instances": ROWS}, "statistics": {}, "vocab_size": VOCAB,
                "max_token_id": VOCAB - 1, "max_seq_length": SEQ, "max_predictions_per_seq": PREDICTIONS,
                "dynamic_masking": False}
    with open(os.path.join(directory, "metadata.json"), "w") as f:
        json.dump(metadata, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_msrun_two_workers_match_one_process_on_the_combined_batch(tmp_path, accumulation_steps):
    """Unequal real predictions per rank (and per micro-batch): the MLM denominator is reduced across ranks."""
    write_shards(str(tmp_path / "shards"))
    config = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 32, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0}
    (tmp_path / "bert_config.json").write_text(json.dumps(config))
    flags = ["--train_steps", "4", "--lr", "1e-3", "--warmup_steps", "0", "--save_steps", "0", "--log_steps", "1",
             "--seed", "3", "--eval_data_dir", str(tmp_path / "shards")]
    env = {**os.environ, "DEVICE_TARGET": "CPU", "MASTER_PORT": str(free_port())}
    launched = subprocess.run(
        ["bash", os.path.join(ROOT, "run_pretrain_bert.sh"), "2", str(tmp_path / "shards"),
         str(tmp_path / "bert_config.json"), str(tmp_path / "parallel"), "--train_batch_size", "4",
         "--accumulation_steps", str(accumulation_steps), "--eval_batches", str(2 * accumulation_steps), *flags],
        env=env, capture_output=True, text=True, timeout=600)
    logs = "".join(open(os.path.join(tmp_path, "parallel", "msrun_logs", name)).read()
                   for name in sorted(os.listdir(tmp_path / "parallel" / "msrun_logs")))
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:] + logs[-3000:]
    assert launched.stdout.startswith("msrun --worker_num=2 --local_worker_num=2")  # the launcher prints it

    pretrain(PretrainConfig(data_dir=str(tmp_path / "shards"), bert_config_file=str(tmp_path / "bert_config.json"),
                            output_dir=str(tmp_path / "single"), train_steps=4, lr=1e-3, warmup_steps=0,
                            save_steps=0, log_steps=1, seed=3, train_batch_size=8,
                            eval_data_dir=str(tmp_path / "shards"), eval_batches=2))

    parallel = ms.load_checkpoint(str(tmp_path / "parallel" / "final" / "model.ckpt"))
    single = ms.load_checkpoint(str(tmp_path / "single" / "final" / "model.ckpt"))
    for name, value in single.items():
        np.testing.assert_allclose(parallel[name].asnumpy(), value.asnumpy(), rtol=0, atol=1e-5, err_msg=name)
    ms.set_seed(3)  # the initial weights both runs started from: training moved them well beyond the tolerance
    initial = {p.name: p.asnumpy() for p in BertForPreTraining(BertConfig.from_dict(config)).weights()}
    moved = max(np.abs(single[name].asnumpy() - value).max() for name, value in initial.items())
    assert moved > 1e-3
    # Rank 0 alone wrote the log and the checkpoints; its eval summed both ranks' halves of the 16 eval rows.
    rows = [json.loads(line) for line in open(tmp_path / "parallel" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 4]  # eval at 0 (before the first step) and at 4
    single_eval = [json.loads(line) for line in open(tmp_path / "single" / "metrics.jsonl")][-1]
    for key in ("eval_loss", "eval_mlm_accuracy", "eval_nsp_accuracy"):
        assert rows[-1][key] == pytest.approx(single_eval[key], abs=1e-5), key
    assert os.listdir(tmp_path / "parallel" / "checkpoints") == ["step_4"]


DRIVER = '''"""msrun worker: pretraining with its own output directory per rank, standing in for a node's own disk."""
import logging
import os
import sys

from smallbert.config import PretrainConfig
from smallbert.errors import cli_main
from smallbert.pretrain import pretrain


@cli_main
def main():
    shards, config, base, steps, resume, init = (a.format(rank=os.environ["RANK_ID"]) for a in sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    pretrain(PretrainConfig(data_dir=shards, bert_config_file=config, train_steps=int(steps), lr=1e-3,
                            output_dir=os.path.join(base, "node" + os.environ["RANK_ID"]), resume=resume or None,
                            init_checkpoint=init or None,
                            warmup_steps=0, save_steps=0, log_steps=1, seed=3, train_batch_size=4,
                            resume_force=True))  # the resumes lengthen --train_steps from 2 to 4


sys.exit(main())
'''


@pytest.mark.slow
def test_multi_node_resume_follows_rank_0_without_a_shared_filesystem(tmp_path):
    """Only rank 0's disk has the checkpoint: every rank stops with one clear line instead of rank 1 silently
    starting at step 0; with the checkpoint copied to rank 1's disk both ranks resume from rank 0's step."""
    write_shards(str(tmp_path / "shards"))
    config = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 32}
    (tmp_path / "bert_config.json").write_text(json.dumps(config))
    (tmp_path / "driver.py").write_text(DRIVER)

    def msrun(name, steps, resume="", base="runs", init=""):
        """Paths may hold {rank}: each rank reads its own node's."""
        logs = tmp_path / ("logs_" + name)
        done = subprocess.run(
            ["msrun", "--worker_num=2", "--local_worker_num=2", f"--master_port={free_port()}", f"--log_dir={logs}",
             "--join=True", str(tmp_path / "driver.py"), str(tmp_path / "shards"), str(tmp_path / "bert_config.json"),
             str(tmp_path / base), str(steps), resume, init],
            env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}, capture_output=True, text=True, timeout=300)
        texts = {name: (logs / name).read_text() for name in os.listdir(logs)}
        return done.returncode, [next(t for n, t in texts.items() if n.endswith(f"_{r}.log")) for r in (0, 1)]

    code, logs = msrun("first", 2)
    assert code == 0, logs
    assert os.listdir(tmp_path / "runs" / "node0" / "checkpoints") == ["step_2"]
    assert not (tmp_path / "runs" / "node1" / "checkpoints").exists()  # rank 1 writes nothing

    code, logs = msrun("missing", 4, "auto")
    assert code != 0
    assert "--resume: rank 0 resumes from step 2, but 1 of 2 ranks cannot read that checkpoint" in logs[0]
    assert "(this rank 1: " in logs[1] and "copy checkpoints/step_2 to every node" in logs[1]
    assert os.listdir(tmp_path / "runs" / "node0" / "checkpoints") == ["step_2"]  # nothing trained or written

    shutil.copytree(tmp_path / "runs" / "node0" / "checkpoints", tmp_path / "runs" / "node1" / "checkpoints")
    code, logs = msrun("copied", 4, "auto")
    assert code == 0, logs
    copy = tmp_path / "runs" / "node1" / "checkpoints" / "step_2"
    assert f"rank 1 resumes from {copy} (rank 0's step 2)" in logs[1]
    assert sorted(os.listdir(tmp_path / "runs" / "node0" / "checkpoints")) == ["step_2", "step_4"]
    rows = [json.loads(line) for line in open(tmp_path / "runs" / "node0" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]

    # --init_checkpoint and --resume PATH that only node 0 holds: rank 1 fails its input checks, and rank 0,
    # which passed them, stops too (before the agreement, rank 0 waited for rank 1 until msrun's timeout).
    for name, flags in (("init", {"init": str(tmp_path / "runs" / "node{rank}" / "final")}),
                        ("path", {"resume": str(tmp_path / "runs" / "node{rank}" / "checkpoints" / "step_4")})):
        code, logs = msrun(name, 6, base="runs_" + name, **flags)
        assert code != 0
        assert "rank 1 of 2: " in logs[1] and "node1" in logs[1]
        assert "rank(s) 1 of 2 failed their input checks (their logs say why); rank 0 stops with them" in logs[0]
        assert not (tmp_path / ("runs_" + name)).exists()
