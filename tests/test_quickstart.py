"""The README's first command: tools/quickstart.py on the bundled sample, end to end; and the sample itself."""
from __future__ import annotations

import filecmp
import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")
SAMPLE = os.path.join(ROOT, "sample")
QUICKSTART = os.path.join(ROOT, "tools", "quickstart.py")
SAMPLE_FILES = ["wiki/sample-pages-articles.xml.bz2", "vocab.txt", "bert_config.json", "SST-2/train.tsv",
                "SST-2/dev.tsv", "SST-2/test.tsv"]


def test_bundled_sample_is_what_make_sample_writes(tmp_path):
    """The shipped files are reproducible from sample/make_sample.py (our own generated text, our own vocab)."""
    subprocess.run([sys.executable, os.path.join(SAMPLE, "make_sample.py"), "--output_dir", str(tmp_path)],
                   check=True, capture_output=True)
    for name in SAMPLE_FILES:
        assert filecmp.cmp(tmp_path / name, os.path.join(SAMPLE, name), shallow=False), name
    config = json.loads((tmp_path / "bert_config.json").read_text())
    assert config["vocab_size"] == len((tmp_path / "vocab.txt").read_text().splitlines())


def test_quickstart_runs_every_stage(tmp_path):
    out = tmp_path / "qs"
    result = subprocess.run([sys.executable, QUICKSTART, "--output_dir", str(out), "--train_steps", "20",
                             "--epochs", "1", "--processes", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert glob.glob(str(out / "data" / "*.mindrecord")) and (out / "data" / "metadata.json").is_file()
    for name in ("config.json", "model.ckpt", "vocab.txt"):
        assert (out / "pretrain" / "final" / name).is_file(), name
        assert (out / "sst2" / "best" / name).is_file(), name
    steps = [json.loads(line).get("step") for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 20
    for plot in ("pretrain/plots/loss.png", "pretrain/plots/lr.png", "sst2/plots/accuracy.png", "sst2/plots/loss.png"):
        assert (out / plot).stat().st_size > 1000, plot
    accuracy = re.search(r"^SST-2 sample dev accuracy: (\d\.\d{4})$", result.stdout, re.M)
    assert accuracy, result.stdout[-2000:]
    results = json.loads((out / "sst2" / "eval_results.json").read_text())
    assert float(accuracy.group(1)) == round(results["best_dev_accuracy_mean"], 4)
    assert 0.0 <= float(accuracy.group(1)) <= 1.0


def test_quickstart_keeps_an_earlier_run_unless_told(tmp_path):
    (tmp_path / "qs" / "pretrain").mkdir(parents=True)
    result = subprocess.run([sys.executable, QUICKSTART, "--output_dir", str(tmp_path / "qs")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --output_dir: {tmp_path / 'qs'} already holds pretrain from an earlier run; pass --overwrite to "
        f"replace them or choose another directory"]
