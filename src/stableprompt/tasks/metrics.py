"""Classification metrics: accuracy with a 95% Wilson interval and per-class recall."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from stableprompt.errors import UserError

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval; unlike the normal interval it stays inside [0, 1] for small n."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_report(predictions: Sequence[int], labels: Sequence[int], num_classes: int) -> dict:
    """Accuracy, its 95% Wilson interval, n, and recall per class (None for absent classes)."""
    pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
    gold = np.asarray(labels, dtype=np.int64).reshape(-1)
    if pred.shape != gold.shape:
        raise ValueError(f"{pred.size} predictions for {gold.size} labels")
    if gold.size == 0:
        raise UserError("no examples to evaluate (give data with a non-empty evaluation split)")
    hit = pred == gold
    correct = int(hit.sum())
    recall: list[float | None] = []
    for c in range(num_classes):
        mask = gold == c
        recall.append(float(hit[mask].mean()) if mask.any() else None)
    lo, hi = wilson_interval(correct, gold.size)
    return {
        "accuracy": correct / gold.size,
        "ci95": (lo, hi),
        "n": int(gold.size),
        "correct": correct,
        "per_class_recall": recall,
    }
