"""Patch-matching metrics, computed exactly as the seed's test script does (rrlnet-spec §4)."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import interp1d
from sklearn.metrics import roc_auc_score, roc_curve


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.shape[0]} labels for {scores.shape[0]} scores")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity (a diverged model?)")
    present = set(np.unique(labels).tolist())
    if present != {0, 1}:
        raise ValueError(f"FPR95 needs both matching (1) and non-matching (0) pairs; labels hold {sorted(present)}")
    return labels, scores


def fpr95(labels, scores) -> float:
    """False-positive rate at 95 % recall, as a fraction.

    ``roc_curve`` (positive class 1, ``drop_intermediate=True``) and then ``interp1d(tpr, fpr)(0.95)``: the FPR
    is linearly interpolated along the ROC curve at exactly TPR = 0.95, the seed's definition; it is not read
    at a threshold taken from the sorted positive scores.
    """
    labels, scores = _check(labels, scores)
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1, drop_intermediate=True)
    return float(interp1d(tpr, fpr)(0.95))


def fpr95_blocks(labels, scores, blocks: int) -> float:
    """Mean FPR95 over ``blocks`` equal consecutive blocks (the seed's val_data.npy: 8 x 10,000)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if blocks <= 1:
        return fpr95(labels, scores)
    return float(np.mean([fpr95(lb, sc) for lb, sc in zip(np.array_split(labels, blocks),
                                                          np.array_split(scores, blocks), strict=True)]))


def accuracy(labels, scores, threshold: float = 0.5) -> float:
    """Share of pairs on the right side of 0.5; a score of exactly 0.5 counts as non-match, as Keras rounds it."""
    labels, scores = _check(labels, scores)
    return float(np.mean((scores > threshold).astype(np.int64) == labels))


def auc(labels, scores) -> float:
    labels, scores = _check(labels, scores)
    return float(roc_auc_score(labels, scores))


def summary(labels, scores) -> dict:
    """Every metric the evaluation reports for one subset."""
    labels, scores = _check(labels, scores)
    value = fpr95(labels, scores)
    pos = int(np.count_nonzero(labels == 1))
    return {
        "fpr95": value,
        "fpr95_pct": 100.0 * value,
        "accuracy": accuracy(labels, scores),
        "auc": auc(labels, scores),
        "pairs": int(labels.shape[0]),
        "positives": pos,
        "negatives": int(labels.shape[0]) - pos,
    }
