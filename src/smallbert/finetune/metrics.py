"""The GLUE tasks' metrics, on the host in float64 with numpy alone.

Classification takes logits [N, C] and label ids [N]; regression takes outputs [N, 1] and targets [N]. A
correlation of a constant series is undefined; it is reported as 0.0 (sklearn's convention for MCC), so a
collapsed model scores 0 rather than NaN.
"""
from __future__ import annotations

import numpy as np

HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "mcc": True, "pearson": True, "spearman": True, "loss": False}


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of logits [N, C] against label ids [N]."""
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_z - logits[np.arange(len(labels)), labels]))


def f1_score(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (id 1: MRPC's paraphrase, QQP's duplicate)."""
    true_positives = np.sum((predictions == 1) & (labels == 1))
    denominator = np.sum(predictions == 1) + np.sum(labels == 1)
    return float(2 * true_positives / denominator) if denominator else 0.0


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (CoLA's metric), in Gorodkin's multi-class form, which is the binary formula for two
    classes: (c·s − Σ_k p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²)) with c correct, s samples, p_k / t_k the
    predicted / true counts of class k."""
    classes = np.union1d(predictions, labels)
    p = np.array([np.sum(predictions == k) for k in classes], np.float64)
    t = np.array([np.sum(labels == k) for k in classes], np.float64)
    s, c = float(len(labels)), float(np.sum(predictions == labels))
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - p @ t) / denominator) if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator else 0.0


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x with ties given their average rank (scipy.stats.rankdata's default)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        if count > 1:
            ranks[order[start:start + count]] = start + (count + 1) / 2
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def task_metrics(names: tuple[str, ...], outputs: np.ndarray, labels: np.ndarray, regression: bool
                 ) -> dict[str, float]:
    """{metric: value} for each of `names` plus "loss" (cross-entropy, or mean squared error for regression)."""
    outputs = outputs.astype(np.float64)
    if regression:
        scores, targets = outputs[:, 0], labels.astype(np.float64)
        functions = {"pearson": pearson, "spearman": spearman}
        values = {name: functions[name](scores, targets) for name in names}
        return {**values, "loss": float(np.mean((scores - targets) ** 2))}
    predictions = outputs.argmax(axis=1)
    functions = {"accuracy": lambda p, t: float(np.mean(p == t)), "f1": f1_score, "mcc": matthews_corrcoef}
    values = {name: functions[name](predictions, labels) for name in names}
    return {**values, "loss": cross_entropy(outputs, labels)}


def higher_is_better(key: str) -> bool:
    """Whether a larger `<split>_<metric>` value is better (every metric except the loss)."""
    return HIGHER_IS_BETTER[key.rsplit("_", 1)[-1]]
