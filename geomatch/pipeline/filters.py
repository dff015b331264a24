"""Outlier flags in three levels, as AROSICS users know them; points are flagged, never dropped.

1. score: ``score < min_score`` or ``ratio > max_ratio`` (weak or ambiguous peak). Both are on the matcher's
   scale: a built pipeline holds their resolved numbers (``thresholds.resolve_min_score`` / ``resolve_max_ratio``);
   "auto" in a FilterConfig made by hand, with no matcher known, is the Matcher contract's default.
2. local consistency: the point's shift deviates from the median shift of its neighbours (within
   ``local_radius_px``, among level-1 survivors) by more than ``local_max_dev_px``; shifts are compared
   after removing a loose global affine trend, so a slight rotation or scale is not taken for disorder.
3. model: RANSAC of an affine (or second-order polynomial) model tgt = f(ref) on the level 1-2 survivors;
   points farther than ``ransac_threshold_px`` from the model are flagged.

Coordinates: pixel columns are used when present (``ref_col/ref_row`` and ``view_col/view_row``, the
SAR-view pixel position), otherwise ``ref_x/ref_y`` and ``tgt_x/tgt_y``, so thresholds stay in pixels
even after map coordinates were added. The shift compared between neighbours is ``init_dx/init_dy``
(the correction to the coarse transform, free of its rotation and scale) when present, else tgt - ref.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from skimage.measure import ransac

from geomatch.pipeline.gcpmodel import normaliser, poly_terms

FLAGS = ("outlier_score", "outlier_local", "outlier_model", "outlier")
MIN_NEIGHBOURS = 3  # fewer neighbours than this: the local test has no say


def _coords(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    if {"ref_col", "ref_row", "view_col", "view_row"} <= set(df.columns):
        ref = df[["ref_col", "ref_row"]].to_numpy(float)
        tgt = df[["view_col", "view_row"]].to_numpy(float)
    else:
        ref = df[["ref_x", "ref_y"]].to_numpy(float)
        tgt = df[["tgt_x", "tgt_y"]].to_numpy(float)
    return ref, tgt


def _local_flags(ref: np.ndarray, shift: np.ndarray, radius: float, max_dev: float) -> np.ndarray:
    n = len(ref)
    flags = np.zeros(n, bool)
    if n <= MIN_NEIGHBOURS or radius <= 0:
        return flags
    # Every neighbour pair once (same "<= radius" rule as a ball query), both directions: a per-point Python loop
    # with one np.median each cost seconds at thousands of points.
    pairs = cKDTree(ref).query_pairs(r=radius, output_type="ndarray")
    owner = np.concatenate([pairs[:, 0], pairs[:, 1]])
    other = np.concatenate([pairs[:, 1], pairs[:, 0]])
    count = np.bincount(owner, minlength=n)
    enough = count >= MIN_NEIGHBOURS
    if not enough.any():
        return flags
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    lo, hi = start + (count - 1) // 2, start + count // 2  # the middle one (odd) or two (even), as np.median
    med = np.empty((n, 2))
    for axis in range(2):
        order = np.argsort(shift[:, axis], kind="stable")
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        # Each owner's neighbours in ascending value: one sort of integer (owner, neighbour's rank) keys, 5x
        # faster than a lexsort of (owner, value) at a hundred neighbours per point.
        ordered = shift[order, axis][np.sort(owner * n + rank[other]) % n]
        med[enough, axis] = (ordered[lo[enough]] + ordered[hi[enough]]) / 2
    dev = shift[enough] - med[enough]
    flags[enough] = np.hypot(dev[:, 0], dev[:, 1]) > max_dev
    return flags


def _detrend(ref: np.ndarray, shift: np.ndarray, threshold: float) -> np.ndarray:
    """Shifts minus a loose global affine trend: a small rotation or scale difference makes raw shifts drift
    by pixels across a neighbourhood, which is not an inconsistency. Unchanged when no trend can be fitted."""
    if len(ref) < 6:
        return shift
    trend, _ = _fit(ref, ref + shift, "affine", threshold)
    return shift if trend is None else ref + shift - trend(ref)


class _LeastSquares:
    """tgt = f(ref), an affine (order 1) or a second-order polynomial, fitted by ordinary least squares on centred,
    scaled coordinates (gcpmodel's poly_terms), in the model protocol skimage's ``ransac`` takes (``from_estimate``,
    or ``estimate`` before skimage 0.26; ``residuals``). Why not skimage's transforms: their estimate takes a full
    SVD of a (2n, k) matrix, whose U alone is (2n)^2 floats: 4.7 GB at 13,000 points (benchmarks/scale.md)."""

    order = 1

    def __init__(self, centre=(0.0, 0.0), scale: float = 1.0, coef=None):
        self.centre, self.scale, self.coef = np.asarray(centre, float), float(scale), coef

    @classmethod
    def from_estimate(cls, src: np.ndarray, dst: np.ndarray):
        m = cls()
        return m if m.estimate(src, dst) else None

    def estimate(self, src: np.ndarray, dst: np.ndarray) -> bool:
        self.centre, self.scale = normaliser(np.asarray(src, float))
        design = poly_terms(*((np.asarray(src, float) - self.centre) / self.scale).T, self.order)
        with np.errstate(all="ignore"):
            coef, _, rank, _ = np.linalg.lstsq(design, np.asarray(dst, float), rcond=None)
        self.coef = coef
        return bool(rank == design.shape[1] and np.isfinite(coef).all())

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        u, v = ((np.asarray(xy, float) - self.centre) / self.scale).T
        return poly_terms(u, v, self.order) @ self.coef

    def residuals(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        return np.hypot(*(self(src) - dst).T)

    @property
    def params(self) -> np.ndarray:
        """(2, 6) coefficients of 1, x, y, x^2, xy, y^2 in the original coordinates (skimage's polynomial layout)."""
        c = np.zeros((6, 2))
        c[: len(self.coef)] = self.coef
        a, b, d = 1.0 / self.scale, -self.centre[0] / self.scale, -self.centre[1] / self.scale  # u = a x + b
        raw = np.stack([c[0] + c[1] * b + c[2] * d + c[3] * b * b + c[4] * b * d + c[5] * d * d,
                        a * (c[1] + 2 * c[3] * b + c[4] * d), a * (c[2] + c[4] * b + 2 * c[5] * d),
                        a * a * c[3], a * a * c[4], a * a * c[5]])
        return raw.T


class _Poly2(_LeastSquares):
    order = 2


def _fit(ref: np.ndarray, tgt: np.ndarray, model: str, threshold: float):
    """RANSAC fit (seeded, so runs repeat exactly); the model returned is ransac's own least-squares refit on all
    the inliers. (None, None) if impossible."""
    cls, min_samples = (_Poly2, 6) if model == "poly2" else (_LeastSquares, 3)
    if len(ref) < min_samples:
        return None, None
    with np.errstate(all="ignore"):
        m, inliers = ransac((ref, tgt), cls, min_samples=min_samples, residual_threshold=threshold,
                            max_trials=2000, rng=0)
    if m is None or inliers is None or inliers.sum() < min_samples:
        return None, None
    return m, inliers


def _params(m: _LeastSquares, model: str) -> list:
    """2x3 affine [[a, b, c], [d, e, f]] (tgt_x = a x + b y + c) or the 2x6 poly2 coefficients."""
    p = m.params
    return p.tolist() if model == "poly2" else p[:, [1, 2, 0]].tolist()


def flag_outliers(df: pd.DataFrame, cfg) -> tuple[pd.DataFrame, dict]:
    """Add outlier_score, outlier_local, outlier_model, outlier (int 0/1) and residual_px; return model info.

    ``cfg`` is a FilterConfig. ``model_info``: model kind, params (2x3 affine or 2x6 poly2 coefficients,
    ref pixel -> tgt pixel), rmse_px of the inliers, counts per level, and ``reason`` when no model was fitted.
    """
    df = df.copy()
    n = len(df)
    info: dict = {"model": cfg.model, "n_points": n}
    if n == 0:
        for c in FLAGS:
            df[c] = pd.Series(dtype="int64")
        df["residual_px"] = pd.Series(dtype="float64")
        info.update(n_kept=0, reason="no points")
        return df, info
    ref, tgt = _coords(df)
    score = df["score"].to_numpy(float)
    ratio = df["ratio"].to_numpy(float) if "ratio" in df else np.zeros(n)
    floor, ceiling = cfg.min_score, cfg.max_ratio
    if "auto" in (floor, ceiling):  # the contract's defaults; importing it (and torch) only when asked
        from geomatch.models.base import Matcher

        floor = Matcher.min_score if floor == "auto" else floor
        ceiling = Matcher.max_ratio if ceiling == "auto" else ceiling
    f_score = ~(score >= floor) | (ratio > ceiling)

    if {"init_dx", "init_dy"} <= set(df.columns):
        shift = df[["init_dx", "init_dy"]].to_numpy(float)
    else:
        shift = tgt - ref
    f_local = np.zeros(n, bool)
    alive = np.nonzero(~f_score)[0]
    local_shift = _detrend(ref[alive], shift[alive], max(cfg.local_max_dev_px, 3 * cfg.ransac_threshold_px))
    f_local[alive] = _local_flags(ref[alive], local_shift, cfg.local_radius_px, cfg.local_max_dev_px)

    survivors = np.nonzero(~f_score & ~f_local)[0]
    f_model = np.ones(n, bool)
    residual = np.full(n, np.nan)
    model, inl = _fit(ref[survivors], tgt[survivors], cfg.model, cfg.ransac_threshold_px)
    used = cfg.model
    if model is None and cfg.model == "poly2" and len(survivors) >= 3:
        model, inl = _fit(ref[survivors], tgt[survivors], "affine", cfg.ransac_threshold_px)
        used = "affine"
        info["fallback"] = "poly2 needs 6 inliers; fitted an affine instead"
    if model is None:
        info["reason"] = (f"only {len(survivors)} point(s) passed the score and local tests; a model needs at least "
                          "3" if len(survivors) < 3
                          else "RANSAC found no consensus among the points that passed the score and local tests")
    else:
        residual = np.hypot(*(model(ref) - tgt).T)
        f_model = residual > cfg.ransac_threshold_px
        keep = survivors[~f_model[survivors]]
        info.update(model=used, params=_params(model, used),
                    rmse_px=float(np.sqrt(np.mean(residual[keep] ** 2))) if len(keep) else None)
    outlier = f_score | f_local | f_model
    df["outlier_score"] = f_score.astype(np.int64)
    df["outlier_local"] = f_local.astype(np.int64)
    df["outlier_model"] = f_model.astype(np.int64)
    df["outlier"] = outlier.astype(np.int64)
    df["residual_px"] = residual
    info.update(n_score=int(f_score.sum()), n_local=int(f_local.sum()),
                n_model=int((f_model & ~f_score & ~f_local).sum()), n_kept=int((~outlier).sum()))
    return df, info
