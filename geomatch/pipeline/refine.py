"""Settle matched positions with the classical dense matcher (``match.proposer``) in a small radius around them.

Two uses, one core (:func:`settle`):

- ``match.refine_patch = P`` (any mode): the search decided WHERE the match is with the network's patch (64
  px); the position is then re-read off a P x P template's correlation within one pixel of the chosen peak.
  Why: a position read off a 64 px surface is noisy, and a larger template averages more structure: a search
  with CFOG alone at 64 / 96 / 128 px gives a median of the validation tiles' median errors of 1.02 / 0.95 /
  0.79 px but loses points near image edges and on small scenes (`benchmarks/template_size.md`); settling keeps
  the search's points and decisions and moves only the positions. 96 px chosen on those tiles
  (`benchmarks/refine_patch.md`). In the dense and
  cascade modes it reads the features the search computed (no second pass over the images).
- after a search at zoom z > ``gsd.REFINE_ABOVE`` (scale-aware patches): at full resolution with the
  matcher's own patch size, within ``ceil(z) + 1`` pixels (:func:`refine_positions`, from
  :func:`geomatch.pipeline.gsd.refine_native`).

Score and ratio stay the matcher's (the filters judge them); rows whose template or window leaves the valid
data keep their position, ``refined`` says which moved.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from geomatch.pipeline import cascade
from geomatch.pipeline.score_table import FeatureViews, feature_views, sample_windows, subpixel

REFINE_RADIUS_PX = 1.0  # the search chose the peak; the larger template only settles it within this


def settle(views: FeatureViews, at_opt: np.ndarray, centres: np.ndarray, patch: int, radius: float,
           dense) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (N, 2) from ``centres`` (patch-grid SAR positions) of the best ``patch``-sized crop within
    ``radius``, sub-pixel, and whether each could be measured (both crops on valid data, a peak inside)."""
    r = max(1, int(math.ceil(radius)))
    win = int(patch) + 2 * (r + 1)  # one ring more than the radius: the fit has the peak's 3x3
    ok = views.inside(at_opt, int(patch), centres, win)
    offs = np.zeros((len(at_opt), 2))
    if not ok.any():
        return offs, ok
    opt_f, sar_f = views.crops(at_opt[ok], int(patch), centres[ok], win)
    table = np.asarray(dense.correlate(opt_f, sar_f), np.float64)  # (n, 2 r + 3, 2 r + 3)
    d = np.arange(-(r + 1), r + 2)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    inner = np.where(dx**2 + dy**2 <= radius**2 + 1e-9, table, -np.inf).reshape(len(table), -1)
    by, bx = np.unravel_index(inner.argmax(1), dx.shape)
    rows = np.arange(len(table))[:, None, None]
    nb = table[rows, by[:, None, None] + np.arange(-1, 2)[:, None], bx[:, None, None] + np.arange(-1, 2)]
    offs[ok] = np.column_stack([bx, by]) - (r + 1) + subpixel(nb)
    return offs, ok


def refine_positions(optical, sar, opt_valid, sar_valid, df: pd.DataFrame, affine, patch_size: int,
                     radius: float, proposer: str) -> pd.DataFrame:
    """``df`` (rows of :func:`geomatch.pipeline.search.match_points`) with each position settled by the dense
    matcher ``proposer`` with ``patch_size`` templates within ``radius`` pixels of it, at full resolution (the
    features computed here: the network-alone search and the scale-aware search have none to share)."""
    if df.empty:
        return df
    dense = cascade.dense_matcher(proposer, {}, role="[match] proposer")
    xy = df[["ref_x", "ref_y"]].to_numpy(np.float64)
    found = df[["tgt_x", "tgt_y"]].to_numpy(np.float64)
    # Windows centred a whole number of pixels from A p (within half a pixel of the found position, inside
    # the radius): their feature crops are then plain copies, not one interpolation per channel.
    a = np.asarray(affine, np.float64).reshape(2, 3)
    steps = np.round(np.linalg.solve(a[:, :2], (found - (xy @ a[:, :2].T + a[:, 2])).T).T)
    w = sample_windows(optical, sar, opt_valid, sar_valid, xy, a, int(patch_size), float(radius), 1.0,
                       p0=xy @ a[:, :2].T + a[:, 2] + steps @ a[:, :2].T, pixels=False)
    if w is None:
        return df
    views = feature_views(optical, opt_valid, sar, sar_valid, w, dense.features, dense.dense_context,
                          reach=int(patch_size) // 2 + w.m + 1)
    offs, ok = settle(views, w.xy, w.xy + w.shift, int(patch_size), float(radius), dense)
    return moved(df, w.idx[ok], (w.p0 + offs @ w.grid.T)[ok])


def moved(df: pd.DataFrame, rows: np.ndarray, tgt: np.ndarray) -> pd.DataFrame:
    """``df`` with rows ``rows`` at ``tgt`` (init_dx / init_dy follow: they are tgt minus A p), marked refined."""
    found = df[["tgt_x", "tgt_y"]].to_numpy(np.float64)[rows]
    pred = found - df[["init_dx", "init_dy"]].to_numpy(np.float64)[rows]  # A p
    out = df.copy()
    cols = [out.columns.get_loc(c) for c in ("tgt_x", "tgt_y", "init_dx", "init_dy")]
    out.iloc[rows, cols] = np.column_stack([tgt, tgt - pred])
    out.iloc[rows, out.columns.get_loc("refined")] = True
    return out
