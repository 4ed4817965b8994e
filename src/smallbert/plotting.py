"""Training curves as PNG files from a run directory's logs (matplotlib, no display needed).

Two logs are understood:
  * `metrics.jsonl` (pretraining): one JSON object per line; records with a numeric `step` are plotted against it.
    Train and eval rows share the file, so a key only needs to appear in some records.
  * `eval_results.json` (fine-tuning): the `epochs` list of each seed's run, plotted against `epoch`; with several
    seeds each curve is labelled with its seed.
Every numeric key except bookkeeping (`BOOKKEEPING`) is a curve, and curves are grouped into one figure per kind:
    loss.png        keys containing "loss" (mlm_loss, nsp_loss, eval_loss, dev_loss ...), except loss_scale
    accuracy.png    keys containing "acc"
    lr.png          lr, learning_rate
    loss_scale.png  loss_scale, on a log₂ axis
    <key>.png       any other numeric key (eval_perplexity, seq_per_s ...)
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import defaultdict

from .errors import SmallBertError

logger = logging.getLogger("smallbert")

METRICS_NAME = "metrics.jsonl"
RESULTS_NAME = "eval_results.json"
BOOKKEEPING = ("step", "epoch", "train_seconds", "skipped_steps", "overflow_steps", "seed")
Series = dict[str, tuple[list[float], list[float]]]  # curve label → (x values, y values)


def read_metrics(path: str) -> list[dict]:
    """Reads a JSONL log into a list of records.

    A broken last line (a run killed while writing it) is skipped with a warning; a broken line elsewhere raises
    SmallBertError naming the file and line.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                logger.warning("%s:%d: incomplete last line skipped", path, number)
                continue
            raise SmallBertError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise SmallBertError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def read_finetune_results(path: str) -> list[dict]:
    """The per-epoch records of every seed in a fine-tuning `eval_results.json`, keys suffixed with the seed when
    there are several (`dev_accuracy (seed 2)`)."""
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except json.JSONDecodeError as err:
        raise SmallBertError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    runs = results.get("seeds", []) if isinstance(results, dict) else []
    records = []
    for run in runs:
        suffix = f" (seed {run.get('seed')})" if len(runs) > 1 else ""
        for epoch in run.get("epochs", []):
            records.append({"epoch": epoch.get("epoch"),
                            **{key + suffix: value for key, value in epoch.items() if key not in BOOKKEEPING}})
    return records


def read_run(run_dir: str) -> tuple[list[dict], str, str]:
    """Returns (records, the x-axis key, the log read) for a pretraining or fine-tuning run directory."""
    metrics, results = os.path.join(run_dir, METRICS_NAME), os.path.join(run_dir, RESULTS_NAME)
    if os.path.isfile(metrics):
        return read_metrics(metrics), "step", metrics
    if os.path.isfile(results):
        return read_finetune_results(results), "epoch", results
    raise SmallBertError(f"{run_dir}: no {METRICS_NAME} (pretraining) or {RESULTS_NAME} (fine-tuning) to plot")


def figure_name(key: str) -> str:
    """The figure (PNG name without extension) a metric key is drawn in."""
    if key == "loss_scale":
        return "loss_scale"
    if "loss" in key:
        return "loss"
    if "acc" in key:
        return "accuracy"
    if key in ("lr", "learning_rate"):
        return "lr"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)  # keys such as "eval/perplexity" become file names


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def collect_series(records: list[dict], x_key: str = "step") -> dict[str, Series]:
    """{figure name: {key: (xs, ys)}} from the records that have a numeric `x_key`."""
    figures: dict[str, Series] = defaultdict(dict)
    for record in records:
        x = record.get(x_key)
        if not is_number(x):
            continue
        for key, value in record.items():
            if key not in BOOKKEEPING and is_number(value):
                xs, ys = figures[figure_name(key)].setdefault(key, ([], []))
                xs.append(x)
                ys.append(value)
    return dict(figures)


def plot_figure(name: str, series: Series, x_label: str, path: str) -> None:
    """Draws `series` into a PNG at `path` (written to a temporary name, then renamed)."""
    from matplotlib.figure import Figure  # a bare Figure needs no GUI backend and no global pyplot state

    figure = Figure(figsize=(7, 4.5), dpi=100)
    axes = figure.add_subplot()
    for key, (xs, ys) in sorted(series.items()):
        order = sorted(range(len(xs)), key=xs.__getitem__)  # eval records may be logged out of order
        marker = "o" if len(xs) <= 50 else None  # sparse eval points stay visible
        axes.plot([xs[i] for i in order], [ys[i] for i in order], label=key, marker=marker, markersize=3)
    finite = [y for _, ys in series.values() for y in ys if math.isfinite(y)]
    if name == "loss_scale" and finite and min(finite) > 0:
        axes.set_yscale("log", base=2)  # dynamic loss scales move in powers of two
    axes.set_xlabel(x_label)
    axes.set_title(name)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    temporary = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        figure.savefig(temporary, format="png")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def plot_run(run_dir: str, output_dir: str | None = None) -> list[str]:
    """Writes one PNG per figure for the run's log into `output_dir` (default `run_dir/plots`).

    Returns the written paths, sorted. Raises SmallBertError if there is no log or nothing in it to plot.
    """
    records, x_key, path = read_run(run_dir)
    figures = collect_series(records, x_key)
    if not figures:
        raise SmallBertError(f"{path}: no records with a numeric {x_key!r} and metric values to plot")
    output_dir = output_dir or os.path.join(run_dir, "plots")
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for name, series in sorted(figures.items()):
        written.append(os.path.join(output_dir, f"{name}.png"))
        plot_figure(name, series, x_key, written[-1])
    return written
