"""plot_metrics: JSONL training/eval logs → grouped PNG curves."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from smallbert import SmallBertError
from smallbert.plotting import collect_series, plot_run, read_metrics, read_run

ROOT = os.path.join(os.path.dirname(__file__), "..")


def write_log(path, records, tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def training_records() -> list[dict]:
    records = [{"step": s, "loss": 10 - s / 10, "mlm_loss": 9 - s / 10, "nsp_loss": 0.7, "lr": 1e-4 * s / 100,
                "loss_scale": 2.0 ** 16} for s in range(1, 101)]
    records += [{"step": s, "eval_loss": 8.0 - s / 100, "eval_mlm_accuracy": s / 200, "eval_nsp_accuracy": 0.5}
                for s in (50, 100)]
    return records


def test_series_are_grouped_by_kind():
    figures = collect_series(training_records() + [{"event": "start"}, {"step": 3, "flag": True, "note": "x"}])
    assert set(figures) == {"loss", "accuracy", "lr", "loss_scale"}
    assert set(figures["loss"]) == {"loss", "mlm_loss", "nsp_loss", "eval_loss"}
    assert set(figures["accuracy"]) == {"eval_mlm_accuracy", "eval_nsp_accuracy"}
    assert figures["accuracy"]["eval_mlm_accuracy"] == ([50, 100], [0.25, 0.5])
    assert len(figures["loss"]["loss"][0]) == 100


def test_cli_writes_pngs_and_skips_a_half_written_last_line(tmp_path):
    write_log(tmp_path / "run" / "metrics.jsonl", training_records(), tail='{"step": 101, "loss": 9.')
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plot_metrics.py"), str(tmp_path / "run")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "metrics.jsonl:103: incomplete last line skipped" in result.stderr
    names = ["accuracy.png", "loss.png", "loss_scale.png", "lr.png"]
    assert result.stdout.split() == [str(tmp_path / "run" / "plots" / n) for n in names]
    assert sorted(os.listdir(tmp_path / "run" / "plots")) == names
    from matplotlib.image import imread

    image = imread(str(tmp_path / "run" / "plots" / "loss.png"))
    assert image.shape[:2] == (450, 700)
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10  # curves and text, not a blank canvas


def test_other_numeric_keys_get_their_own_figure(tmp_path):
    write_log(tmp_path / "metrics.jsonl", [{"step": 1, "eval/perplexity": 30.0}, {"step": 2, "eval/perplexity": 20.0}])
    assert plot_run(str(tmp_path), str(tmp_path / "out")) == [str(tmp_path / "out" / "eval_perplexity.png")]


@pytest.mark.parametrize("content, message", [
    ('{"step": 1, "loss": 2}\n{"step": 2, loss}\n{"step": 3, "loss": 1}\n', r"metrics\.jsonl:2: not valid JSON"),
    ('{"step": 1, "loss": 2}\n[1, 2]\n', r"metrics\.jsonl:2: expected a JSON object, got list"),
])
def test_broken_logs_name_the_line(tmp_path, content, message):
    (tmp_path / "metrics.jsonl").write_text(content)
    with pytest.raises(SmallBertError, match=message):
        read_metrics(str(tmp_path / "metrics.jsonl"))


def test_finetuning_results_are_plotted_per_epoch_and_seed(tmp_path):
    runs = [{"seed": seed, "epochs": [{"epoch": e, "train_loss": 0.7 / e, "dev_accuracy": 0.5 + e / 10 + seed / 100,
                                       "dev_loss": 0.6 / e, "train_seconds": 12.5, "skipped_steps": 0}
                                      for e in (1, 2, 3)]} for seed in (1, 2)]
    (tmp_path / "eval_results.json").write_text(json.dumps({"hparams": {"lr": 2e-5}, "seeds": runs}))
    records, x_key, _ = read_run(str(tmp_path))
    figures = collect_series(records, x_key)
    assert set(figures) == {"loss", "accuracy"}
    epochs, accuracies = figures["accuracy"]["dev_accuracy (seed 2)"]
    assert epochs == [1, 2, 3] and accuracies == pytest.approx([0.62, 0.72, 0.82])
    assert set(figures["loss"]) == {f"{k} (seed {s})" for k in ("train_loss", "dev_loss") for s in (1, 2)}
    assert plot_run(str(tmp_path)) == [str(tmp_path / "plots" / n) for n in ("accuracy.png", "loss.png")]


def test_nothing_to_plot(tmp_path):
    with pytest.raises(SmallBertError, match=r"no metrics\.jsonl \(pretraining\) or eval_results\.json"):
        plot_run(str(tmp_path))
    write_log(tmp_path / "metrics.jsonl", [{"event": "start", "seed": 1}])
    with pytest.raises(SmallBertError, match="no records with a numeric 'step'"):
        plot_run(str(tmp_path))
    assert not (tmp_path / "plots").exists()
