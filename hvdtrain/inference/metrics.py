"""Evaluation metrics from sums, so that sharded evaluation equals a single process.

Each rank adds up its samples' loss, correct predictions and a confusion matrix; those are
reduced with one allreduce (float64) and turned into metrics here. ROC AUC needs every score:
ranks gather theirs (one float per sample) and it is computed from ranks with ties averaged
(the Mann–Whitney statistic), independent of the order the ranks gathered them in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for ``labels`` (0/1); None with one class."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    start = 0
    while start < len(ordered):  # average rank (1-based) over runs of equal scores
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    positive_ranks = float(ranks[labels == 1].sum())
    return (positive_ranks - positives * (positives + 1) / 2) / (positives * negatives)


def summarise(loss_sum: float, confusion: np.ndarray, class_names: tuple[str, ...],
              scores: np.ndarray | None = None, labels: np.ndarray | None = None
              ) -> dict[str, Any]:
    """``confusion[i, j]``: samples of class i predicted as j (float64 counts)."""
    count = float(confusion.sum())
    correct = float(np.trace(confusion))
    result: dict[str, Any] = {
        "samples": int(count),
        "loss": loss_sum / count if count else math.nan,
        "accuracy": correct / count if count else math.nan,
    }
    if len(class_names) == 2:
        tp, fp, fn = confusion[1, 1], confusion[0, 1], confusion[1, 0]
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        result["precision"] = precision
        result["recall"] = recall
        result["f1"] = (_ratio(2 * precision * recall, precision + recall)
                        if precision is not None and recall is not None else None)
        result["roc_auc"] = (roc_auc(scores, labels)
                             if scores is not None and labels is not None else None)
    result["class_names"] = list(class_names)
    result["confusion_matrix"] = confusion.astype(np.int64).tolist()
    return result


def format_table(result: dict[str, Any]) -> str:
    """The metrics for a terminal: one line each, then the confusion matrix."""
    lines = []
    for key in ("samples", "loss", "accuracy", "precision", "recall", "f1", "roc_auc"):
        if key in result:
            value = result[key]
            shown = "n/a" if value is None else (f"{value:.6g}" if isinstance(value, float)
                                                 else str(value))
            lines.append(f"{key:<10} {shown}")
    names = [str(n) for n in result["class_names"]]
    matrix = result["confusion_matrix"]
    width = max(len(n) for n in [*names, *(str(v) for row in matrix for v in row), "true"])
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    lines.append(" ".join(["true".rjust(width), *(n.rjust(width) for n in names)]))
    for name, row in zip(names, matrix, strict=True):
        lines.append(" ".join([name.rjust(width), *(str(v).rjust(width) for v in row)]))
    return "\n".join(lines)
