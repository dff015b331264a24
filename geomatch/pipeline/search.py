"""Candidate search for one tile: score the offsets around each keypoint's predicted position, pick the peak.

Geometry: the initial affine A maps optical pixel coordinates to SAR-view pixel coordinates. For a keypoint p
the prediction is p0 = A p, and a candidate offset d (integer, in optical pixels) stands for the SAR position
p0 + L d, L being A's linear part. Every SAR patch is sampled through L, so rotation and scale are taken out
before scoring, and all candidates of one keypoint are integer crops of ONE resampled search window: no
per-candidate interpolation. The sub-pixel peak offset found in d is mapped back through L as well.

Three ways to fill the table of offsets (:mod:`geomatch.pipeline.score_table`), by ``cfg.mode`` and matcher:

- ``search`` with a patch-pair matcher: a coarse grid of step ``coarse_step`` inside the search disk, then a
  step-1 window of +-coarse_step/2 around the best ``refine_top`` coarse maxima, then hill-climbing until the
  best has all eight neighbours scored (for the quadratic fit).
- ``search`` with a dense matcher (one with a ``dense`` method, e.g. cfog): every offset of every keypoint in
  one call (:mod:`geomatch.pipeline.cascade`).
- ``cascade``: the dense ``proposer`` scores every offset, the matcher only the proposer's ``top_k`` peaks.

The ``n_evals`` column reports what each keypoint cost: patch-pair scores of the matcher (for a dense matcher
alone, the offsets of its surface; in a cascade, the network's scores only, the proposer's being one FFT pass).

``zoom`` (scale-aware patches, :mod:`geomatch.pipeline.gsd`): the table's offsets are in patch pixels of
``zoom`` optical pixels; above ``gsd.REFINE_ABOVE`` the positions found are refined at full resolution
(``refined`` column), the score and ratio staying the matcher's; so are they with ``match.refine_patch``
(:mod:`geomatch.pipeline.refine`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from geomatch.pipeline import cascade, gsd, refine
from geomatch.pipeline.keypoints import Keypoints
from geomatch.pipeline.score_table import (
    Evaluator,
    Windows,
    best_in_disk,
    feature_views,
    local_maxima,
    peak_positions,
    ratio,
    sample_windows,
)

if TYPE_CHECKING:
    from geomatch.config import MatchConfig
    from geomatch.models.runtime import Scorer

COLUMNS = ["ref_x", "ref_y", "tgt_x", "tgt_y", "score", "ratio", "response", "n_evals", "init_dx", "init_dy",
           "refined"]
_DTYPES = {"n_evals": "int64", "refined": "bool"}


def empty_matches() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES.get(c, "float64")) for c in COLUMNS})


def match_points(optical: np.ndarray, sar: np.ndarray, opt_valid: np.ndarray, sar_valid: np.ndarray,
                 keypoints: Keypoints, initial_affine, scorer: Scorer, cfg: MatchConfig,
                 zoom: float = 1.0) -> pd.DataFrame:
    """Match each keypoint of the optical tile into the SAR-view tile; one row per matched keypoint.

    ``scorer`` scores patch pairs of its ``patch_size``; ``cfg`` is the match stage with its radius in pixels
    (the pipeline converts a radius in metres first); ``zoom`` the optical pixels per patch pixel.
    Columns: ref_x, ref_y (optical array coords), tgt_x, tgt_y (SAR-view array coords), score, ratio
    (runner-up peak / best, lower is less ambiguous), response, n_evals, init_dx, init_dy (tgt minus the
    initial prediction A p, in SAR-view pixels), refined (position refined at full resolution).
    """
    if cfg.search_units != "px":
        raise ValueError(f"match_points takes the search radius in pixels, got search_units={cfg.search_units!r}")
    if len(keypoints) == 0:
        return empty_matches()
    if cfg.mode == "cascade":
        dense = cascade.dense_matcher(cfg.proposer, {}, role="[match] proposer")
    else:
        dense = cascade.dense_matcher(scorer.name, cfg.params)
    w = sample_windows(optical, sar, opt_valid, sar_valid, keypoints.xy, initial_affine,
                       int(scorer.patch_size), float(cfg.search_radius), zoom)
    if w is None:
        return empty_matches()
    excl = float(cfg.exclusion_px) or float(max(1, int(cfg.coarse_step)))
    settle_here = bool(cfg.refine_patch) and dense is not None and zoom == 1.0
    if dense is not None:
        reach = int(cfg.refine_patch) // 2 + w.m + int(np.ceil(refine.REFINE_RADIUS_PX)) + 2 if settle_here else 0
        views = feature_views(optical, opt_valid, sar, sar_valid, w, dense.features, dense.dense_context, reach)
        surface = cascade.surface(w, dense, views)
    fit = None
    if cfg.mode == "cascade":
        table, n_evals, ratio_of, fit = cascade.cascade_table(w, surface, scorer, cfg, excl)
    elif dense is not None:
        table, n_evals, ratio_of = cascade.dense_table(w, surface, excl)
    else:
        table, n_evals, ratio_of = _coarse_to_fine(w, scorer, cfg, excl)
    settle = None
    if settle_here:  # the larger template reads the features the search computed

        def settle(peak):
            return refine.settle(views, w.xy, w.xy + w.shift + peak, int(cfg.refine_patch), refine.REFINE_RADIUS_PX,
                                 dense)

    df = _finish(w, table, n_evals, ratio_of, keypoints.response, fit, settle)
    if zoom > gsd.REFINE_ABOVE and len(df):
        df = gsd.refine_native(optical, sar, opt_valid, sar_valid, df, initial_affine, int(scorer.patch_size),
                               zoom, cfg)
    if cfg.refine_patch and not settle_here:  # no features to share (network alone; or zoomed patches)
        df = refine.refine_positions(optical, sar, opt_valid, sar_valid, df, initial_affine, int(cfg.refine_patch),
                                     refine.REFINE_RADIUS_PX, cfg.proposer)
    return df


def _finish(w: Windows, table: np.ndarray, n_evals: np.ndarray, ratio_of, response: np.ndarray,
            fit: np.ndarray | None = None, settle=None) -> pd.DataFrame:
    """The best offset in the disk, its sub-pixel fit on ``fit`` (default: the table), its ratio; keypoints never
    scored dropped. ``settle(peaks (N, 2) offsets) -> (offsets from them, measured)``: the position re-read
    there instead (:func:`geomatch.pipeline.refine.settle`)."""
    n = len(w.xy)
    has, by, bx, tgt = peak_positions(w, table, fit)
    refined = np.zeros(n, bool)
    if settle is not None:
        peak = np.column_stack([bx - w.m, by - w.m]).astype(np.float64)
        offs, refined = settle(peak)
        refined &= has
        tgt = np.where(refined[:, None], w.p0 + (peak + offs) @ w.grid.T, tgt)
    best_score = table[np.arange(n), by, bx]
    out = pd.DataFrame({
        "ref_x": w.xy[:, 0], "ref_y": w.xy[:, 1], "tgt_x": tgt[:, 0], "tgt_y": tgt[:, 1],
        "score": best_score, "ratio": ratio_of(best_score, by, bx), "response": response[w.idx],
        "n_evals": n_evals.astype(np.int64), "init_dx": tgt[:, 0] - w.p0[:, 0], "init_dy": tgt[:, 1] - w.p0[:, 1],
        "refined": refined,
    })
    return out[has].reset_index(drop=True)


def _coarse_to_fine(w: Windows, scorer, cfg: MatchConfig, excl: float):
    n, m, g, in_disk = len(w.xy), w.m, w.g, w.in_disk
    step = max(1, int(cfg.coarse_step))
    d = np.arange(-m, m + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    coarse = in_disk & (dx % step == 0) & (dy % step == 0)

    ev = Evaluator(w.opt, w.sar, w.cand_valid, scorer, cfg.batch_size)
    sigma = float(cfg.coarse_sigma)
    cy, cx = np.nonzero(coarse)
    kk = np.repeat(np.arange(n), len(cy))
    ccy, ccx = np.tile(cy, n), np.tile(cx, n)
    if sigma > 0 and step > 1:
        # Blurred patches widen a sharp correlation peak so the coarse grid cannot step over it.
        blur = Evaluator(ndi.gaussian_filter(w.opt, (0, sigma, sigma)), ndi.gaussian_filter(w.sar, (0, sigma, sigma)),
                         w.cand_valid, scorer, cfg.batch_size)
        blur.run(kk, ccy, ccx)
        coarse_tab = blur.scores
        n_blur = np.isfinite(coarse_tab).reshape(n, -1).sum(1)
    else:
        ev.run(kk, ccy, ccx)
        coarse_tab = ev.scores.copy()
        n_blur = np.zeros(n, int)

    # Local maxima of the coarse grid (against their coarse neighbours).
    sub, is_max = local_maxima(coarse_tab, step, m % step)
    top = max(1, int(cfg.refine_top))
    half = step // 2
    ks, ys, xs = [], [], []
    for i in range(n):
        sy, sx = np.nonzero(is_max[i])
        if len(sy) == 0:
            continue
        order = np.argsort(-sub[i, sy, sx], kind="stable")[:top]
        for oy, ox in zip(sy[order], sx[order], strict=True):
            py, px = m % step + oy * step, m % step + ox * step
            wy, wx = np.meshgrid(np.arange(py - half, py + half + 1), np.arange(px - half, px + half + 1),
                                 indexing="ij")
            ok = (wy >= 0) & (wy < g) & (wx >= 0) & (wx < g)
            ok[ok] &= in_disk[wy[ok], wx[ok]]
            ks.append(np.full(ok.sum(), i))
            ys.append(wy[ok])
            xs.append(wx[ok])
    if ks:
        ev.run(np.concatenate(ks), np.concatenate(ys), np.concatenate(xs))

    # Hill-climb: the best in the disk gets all 8 neighbours scored; repeat while it moves.
    for _ in range(4):
        before = np.isfinite(ev.scores).sum()
        has = np.nonzero(np.isfinite(ev.scores.reshape(n, -1)).any(1))[0]
        by, bx = np.unravel_index(best_in_disk(ev.scores, in_disk), (g, g))
        ev.around(has, by[has], bx[has])
        if np.isfinite(ev.scores).sum() == before:
            break

    n_evals = np.isfinite(ev.scores.reshape(n, -1)).sum(1) + n_blur

    def ratio_of(best_score, by, bx):
        return ratio(coarse_tab, best_score, by, bx, step, m, excl, same_scale=n_blur.sum() == 0)

    return ev.scores, n_evals, ratio_of
