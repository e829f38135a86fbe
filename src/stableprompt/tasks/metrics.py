"""Metrics: classification accuracy with a 95% Wilson interval and per-class recall, and the
generation metrics (exact match, token F1, contains, exact set) of instruction induction.

Generation answers are compared after SQuAD-style normalisation: lowercase, punctuation removed,
articles (a, an, the) removed, whitespace collapsed. Exact set keeps articles (an answer may be
the word "a") and drops "and", so "b, a and c" equals "a, b, c". A target may list several
acceptable answers; the score is the best over them.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from stableprompt.errors import UserError

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def as_stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """One stop string, several, or none, as a tuple."""
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(s for s in stop if s)


def cut_at_stops(text: str, stop: str | Sequence[str] | None) -> str:
    """`text` up to the earliest occurrence of any stop string (all of it if none occurs)."""
    cut = min((i for s in as_stops(stop) if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def wilson_interval(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval; unlike the normal interval it stays inside [0, 1] for small n."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test (McNemar's, for paired 1/0 scores): the chance of `wins` or
    more of the wins+losses examples on which two prompts differ going one way if neither were
    better. Ties carry no evidence and are left out."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


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


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str, articles: bool = True) -> str:
    """SQuAD normalisation: lowercase, strip punctuation and (if `articles`) a/an/the."""
    text = text.lower().translate(_PUNCT)
    if articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def token_f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, answer: str) -> float:
    """1 if the normalised answer occurs as whole words in the normalised prediction."""
    gold = normalize_answer(answer)
    return float(bool(gold) and f" {gold} " in f" {normalize_answer(prediction)} ")


def exact_set(prediction: str, answer: str) -> float:
    """Order-insensitive match of list answers ("cat, dog" == "dog and cat")."""

    def words(text: str) -> set[str]:
        return set(normalize_answer(text, articles=False).split()) - {"and"}

    return float(words(prediction) == words(answer))


METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "f1": token_f1,
    "contains": contains,
    "exact_set": exact_set,
}


def generation_score(prediction: str, target: str | Sequence[str], metric: str) -> float:
    """The metric of one prediction, best over the acceptable answers in `target`."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r} (use one of {', '.join(METRICS)})")
    answers = [target] if isinstance(target, str) else list(target)
    return max((METRICS[metric](prediction, a) for a in answers), default=0.0)


def generation_report(scores: Sequence[float]) -> dict:
    """Mean metric, a 95% Wilson interval on it (exact for 0/1 metrics, approximate for F1), n."""
    if not scores:
        raise UserError("no examples to evaluate (give data with a non-empty evaluation split)")
    total = float(sum(scores))
    lo, hi = wilson_interval(total, len(scores))
    return {
        "accuracy": total / len(scores),
        "ci95": (lo, hi),
        "n": len(scores),
        "correct": sum(1 for s in scores if s == 1.0),
        "per_class_recall": [],
    }
