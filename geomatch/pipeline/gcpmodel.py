"""Geometric models fitted to tie points for ``geomatch register``: polynomials of order 1-3 and a thin-plate spline.

A model maps OPTICAL grid pixel coordinates (GDAL convention) to the SAR raster's OWN pixel coordinates, the
direction a warp onto the optical grid samples in, so no model is ever inverted numerically (gdalwarp fits
its GCP polynomial the other way round and inverts it). Inputs are centred and scaled before fitting so that
order-3 design matrices stay well conditioned on 10 000-pixel scenes.

Residuals are reported in OPTICAL pixels: a SAR-pixel residual is taken back through the linear part of the
affine fit (SAR pixels per optical pixel), so a 20 m SAR on a 10 m optical grid reads in the units the tie
points and the plot use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geomatch.errors import InputError

ORDERS = ("1", "2", "3", "tps")
# Polynomial terms per order; a fit needs one point more than its terms so that every point can also be a
# check point (leave-one-out) -- an exact fit through the minimum has no check at all.
_TERMS = {"1": 3, "2": 6, "3": 10}
_TPS_MIN = 6
# Smallest singular value of the scaled design relative to its largest: below this the points lie (nearly)
# on a line (order 1) or a conic (order 2 and 3) and the fit is decided by noise.
_MIN_CONDITION = 1e-6
# Thin-plate smoothing candidates (squared optical pixels per point); the one with the lowest block
# cross-validation error wins, so noisy points get a smooth field and exact points an interpolating one.
_TPS_SMOOTHING = (0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0)
# Block cross-validation: points are grouped into this many spatial clusters and each cluster is predicted
# from the others. Leave-one-out always has a close neighbour to lean on, so it rewards models that bend to
# the noise (on GeFolki it prefers a thin-plate spline that is worse than the affine over the image);
# predicting a whole missing area is what the warp does between and beyond the points.
_BLOCKS = 5
_SIMPLER_WITHIN = 0.05  # auto: relative block-CV margin a more complex model must win by


def poly_terms(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    cols = [np.ones_like(x)]
    for k in range(1, order + 1):
        cols += [x ** (k - j) * y**j for j in range(k + 1)]
    return np.column_stack(cols)


@dataclass
class GCPModel:
    """A fitted optical-pixel -> SAR-pixel map. ``__call__`` takes arrays of optical (col, row)."""

    order: str
    centre: np.ndarray
    scale: float
    coef: np.ndarray | None = None  # (terms, 2) for polynomials
    rbf: object | None = None  # scipy RBFInterpolator for the thin-plate spline
    smoothing: float | None = None
    info: dict = field(default_factory=dict)

    def __call__(self, cols, rows) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = np.asarray(cols, float), np.asarray(rows, float)
        u = ((cols - self.centre[0]) / self.scale).ravel()
        v = ((rows - self.centre[1]) / self.scale).ravel()
        if self.rbf is not None:
            out = self.rbf(np.column_stack([u, v]))
        else:
            out = poly_terms(u, v, int(self.order)) @ self.coef
        return out[:, 0].reshape(cols.shape), out[:, 1].reshape(cols.shape)


def check_support(ref: np.ndarray, order: str) -> None:
    """Refuse (InputError, exit 2) a model the points cannot determine: too few, or a degenerate spread."""
    if order not in ORDERS:
        raise InputError(f"--order {order}: choose one of {', '.join(ORDERS)} or auto")
    n = len(ref)
    need = _TPS_MIN if order == "tps" else _TERMS[order] + 1
    if n < need:
        raise InputError(f"--order {order} needs at least {need} kept tie points (one more than it has unknowns, "
                         f"for a check point); these tie points have {n}: choose a lower --order or find more "
                         "points (a larger search radius, more keypoints)")
    centre, scale = normaliser(ref)
    u, v = ((ref - centre) / scale).T
    design = poly_terms(u, v, 1 if order == "tps" else int(order))
    sv = np.linalg.svd(design, compute_uv=False)
    if sv[-1] < _MIN_CONDITION * sv[0]:
        shape = "a line" if order in ("1", "tps") else "a line or a curve"
        raise InputError(f"--order {order}: the {n} kept tie points lie (nearly) on {shape}, which does not "
                         "determine the model across the image; choose --order 1 or find points spread over "
                         "the overlap")


def normaliser(ref: np.ndarray) -> tuple[np.ndarray, float]:
    centre = ref.mean(axis=0)
    scale = float(np.max(ref.std(axis=0)))
    return centre, scale if scale > 0 else 1.0


def _fit_raw(ref: np.ndarray, tgt: np.ndarray, order: str, smoothing: float | None = None) -> GCPModel:
    centre, scale = normaliser(ref)
    uv = (ref - centre) / scale
    if order == "tps":
        from scipy.interpolate import RBFInterpolator

        # Smoothing is given per point in squared optical pixels; the interpolator works in scaled units.
        rbf = RBFInterpolator(uv, tgt, kernel="thin_plate_spline", degree=1,
                              smoothing=float(smoothing or 0.0) / scale**2)
        return GCPModel(order, centre, scale, rbf=rbf, smoothing=float(smoothing or 0.0))
    coef, *_ = np.linalg.lstsq(poly_terms(uv[:, 0], uv[:, 1], int(order)), tgt, rcond=None)
    return GCPModel(order, centre, scale, coef=coef)


def _to_optical_px(ref: np.ndarray, tgt: np.ndarray):
    """2x2 matrix taking a SAR-pixel vector to optical pixels (inverse of the affine fit's linear part)."""
    lin = _fit_raw(ref, tgt, "1").coef[1:3].T / normaliser(ref)[1]
    return np.linalg.inv(lin)


def _residuals(model: GCPModel, ref: np.ndarray, tgt: np.ndarray, back: np.ndarray) -> np.ndarray:
    pc, pr = model(ref[:, 0], ref[:, 1])
    return np.hypot(*(back @ (np.column_stack([pc, pr]) - tgt).T))


def _loo(ref: np.ndarray, tgt: np.ndarray, order: str, back: np.ndarray, smoothing: float | None) -> np.ndarray:
    out = np.empty(len(ref))
    for i in range(len(ref)):
        keep = np.arange(len(ref)) != i
        out[i] = _residuals(_fit_raw(ref[keep], tgt[keep], order, smoothing), ref[i:i + 1], tgt[i:i + 1], back)[0]
    return out


def _blocks(ref: np.ndarray) -> np.ndarray:
    """Cluster label of every point: k-means on the positions, deterministic (seeded, farthest-point start)."""
    from scipy.cluster.vq import kmeans2

    k = min(_BLOCKS, len(ref))
    _, labels = kmeans2(ref, k, seed=0, minit="++")
    return labels


def _block_cv(ref: np.ndarray, tgt: np.ndarray, order: str, back: np.ndarray, smoothing: float | None) -> np.ndarray:
    labels, out = _blocks(ref), np.full(len(ref), np.nan)
    need = _TPS_MIN if order == "tps" else _TERMS[order]
    for c in np.unique(labels):
        test = labels == c
        if (~test).sum() < need:
            continue
        model = _fit_raw(ref[~test], tgt[~test], order, smoothing)
        out[test] = _residuals(model, ref[test], tgt[test], back)
    return out


def _stats(err: np.ndarray) -> dict:
    err = err[np.isfinite(err)]
    if not err.size:
        return {"median_px": float("nan"), "rmse_px": float("nan"), "max_px": float("nan")}
    return {"median_px": float(np.median(err)), "rmse_px": float(np.sqrt(np.mean(err**2))),
            "max_px": float(err.max())}


def fit(ref, tgt, order: str) -> GCPModel:
    """Fit ``order`` (1, 2, 3 or tps) to (n, 2) optical-pixel ``ref`` and SAR-pixel ``tgt`` points.

    ``info`` holds residual statistics, all in optical pixels: at the points (``fit``), by leave-one-out
    (``check``: each point predicted by a model fitted without it) and by block cross-validation (``blocks``:
    each of 5 spatial clusters predicted from the others), and the per-point values (``*_px``).
    """
    ref, tgt = np.asarray(ref, float), np.asarray(tgt, float)
    check_support(ref, order)
    back = _to_optical_px(ref, tgt)
    smoothing = None
    if order == "tps":
        blocks = {s: _block_cv(ref, tgt, order, back, s) for s in _TPS_SMOOTHING}
        scores = {s: _stats(b)["median_px"] for s, b in blocks.items()}
        smoothing = min(scores, key=lambda s: (np.nan_to_num(scores[s], nan=np.inf), -s))
        block_px = blocks[smoothing]
    else:
        block_px = _block_cv(ref, tgt, order, back, smoothing)
    model = _fit_raw(ref, tgt, order, smoothing)
    fit_px, check_px = _residuals(model, ref, tgt, back), _loo(ref, tgt, order, back, smoothing)
    model.info = {"order": order, "points": int(len(ref)), "fit": _stats(fit_px), "check": _stats(check_px),
                  "blocks": _stats(block_px), "fit_px": fit_px.tolist(), "check_px": check_px.tolist(),
                  "blocks_px": block_px.tolist()}
    if smoothing is not None:
        model.info["tps_smoothing_px2"] = smoothing
    return model


def supported_orders(ref) -> list[str]:
    """The orders these points can support (see :func:`check_support`)."""
    ok = []
    for order in ORDERS:
        try:
            check_support(np.asarray(ref, float), order)
        except InputError:
            continue
        ok.append(order)
    return ok


def fit_auto(ref, tgt) -> tuple[GCPModel, dict]:
    """Fit every supported order; keep the simplest whose block cross-validation median is within
    ``_SIMPLER_WITHIN`` of the lowest (a small gain on the points' own areas is noise, a bend is not free).

    Returns the model and ``{order: block statistics}`` for the report. Raises like :func:`check_support`
    for order 1 when not even an affine is supported.
    """
    orders = supported_orders(ref) or ["1"]
    models = [fit(ref, tgt, o) for o in orders]
    table = {m.order: m.info["blocks"] for m in models}

    scores = [np.nan_to_num(m.info["blocks"]["median_px"], nan=np.inf) for m in models]
    best = min(scores)
    return next(m for m, sc in zip(models, scores, strict=True) if sc <= best * (1 + _SIMPLER_WITHIN)), table
