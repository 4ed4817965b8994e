"""Task metrics from logits and labels, computed on the host in float64."""
from __future__ import annotations

import numpy as np


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy of logits [N, 2] against labels [N] (float64 on the host)."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    loss = float(np.mean(log_z - logits[np.arange(len(labels)), labels]))
    return {"accuracy": float(np.mean(logits.argmax(axis=1) == labels)), "loss": loss}

