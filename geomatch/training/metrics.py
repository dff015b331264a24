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
        "ece": ece(labels, scores),
        "brier": brier(labels, scores),
        "pairs": int(labels.shape[0]),
        "positives": pos,
        "negatives": int(labels.shape[0]) - pos,
    }


RELIABILITY_BINS = 10


def reliability(labels, scores, bins: int = RELIABILITY_BINS) -> dict:
    """Scores in ``bins`` equal-width bins of [0, 1] (the last one closed): per bin the count, the mean score
    and the share of matches (NaN where a bin is empty). A calibrated score has share = mean score."""
    labels = np.asarray(labels, np.float64).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    which = np.clip(np.floor(scores * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(which, weights=scores, minlength=bins) / counts
        share = np.bincount(which, weights=labels, minlength=bins) / counts
    return {"edges": np.linspace(0, 1, bins + 1).tolist(), "counts": counts.tolist(), "mean_score": mean.tolist(),
            "frequency": share.tolist()}


def ece(labels, scores, bins: int = RELIABILITY_BINS) -> float:
    """Expected calibration error: the count-weighted mean over bins of |share of matches - mean score|."""
    r = reliability(labels, scores, bins)
    counts = np.asarray(r["counts"], np.float64)
    gap = np.abs(np.asarray(r["frequency"]) - np.asarray(r["mean_score"]))
    return float(np.sum(np.where(counts > 0, gap, 0.0) * counts) / max(counts.sum(), 1))


def brier(labels, scores) -> float:
    """Mean squared difference between score and label (0 perfect; 0.25 for a constant 0.5)."""
    labels = np.asarray(labels, np.float64).reshape(-1)
    return float(np.mean((np.asarray(scores, np.float64).reshape(-1) - labels) ** 2))
