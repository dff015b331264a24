"""Candidate search for one tile: coarse-to-fine scoring around the predicted position, selection, sub-pixel peak.

Geometry: the initial affine A maps optical pixel coordinates to SAR-view pixel coordinates. For a keypoint p
the prediction is p0 = A p, and a candidate offset d (integer, in optical pixels) stands for the SAR position
p0 + L d, L being A's linear part. Every SAR patch is sampled through L, so rotation and scale are taken out
before scoring, and all candidates of one keypoint are integer crops of ONE resampled search window: no
per-candidate interpolation. The sub-pixel peak offset found in d is mapped back through L as well.

Cost per keypoint: a coarse grid of step ``coarse_step`` inside the search disk, then a step-1 window of
+-coarse_step/2 around the best ``refine_top`` coarse maxima, then hill-climbing until the best has all eight
neighbours scored (for the quadratic fit). The ``n_evals`` column reports what each keypoint cost.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage as ndi

from geomatch.pipeline.keypoints import Keypoints
from geomatch.pipeline.patches import sample_patches

if TYPE_CHECKING:
    from geomatch.config import MatchConfig
    from geomatch.models.runtime import Scorer

COLUMNS = ["ref_x", "ref_y", "tgt_x", "tgt_y", "score", "ratio", "response", "n_evals", "init_dx", "init_dy"]

# Least-squares fit of f = a + b x + c y + d x^2 + e x y + f y^2 over the 3x3 neighbourhood.
_YY, _XX = np.mgrid[-1:2, -1:2]
_QUAD = np.linalg.pinv(np.column_stack([np.ones(9), _XX.ravel(), _YY.ravel(), _XX.ravel() ** 2,
                                        (_XX * _YY).ravel(), _YY.ravel() ** 2]))


def empty_matches() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "n_evals" else "float64") for c in COLUMNS})


def _subpixel(nb: np.ndarray) -> np.ndarray:
    """Peak offset (dx, dy) in [-0.5, 0.5] from 3x3 score neighbourhoods (N, 3, 3); NaN cells fall back to 1-D."""
    n = len(nb)
    out = np.zeros((n, 2))
    full = np.all(np.isfinite(nb.reshape(n, 9)), axis=1)
    if full.any():
        coef = nb[full].reshape(-1, 9) @ _QUAD.T
        _, b, c, d, e, f = coef.T
        det = 4 * d * f - e * e
        ok = (d < 0) & (det > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = (e * c - 2 * f * b) / det
            dy = (e * b - 2 * d * c) / det
        sel = np.nonzero(full)[0]
        out[sel[ok], 0] = dx[ok]
        out[sel[ok], 1] = dy[ok]
        rest = sel[~ok]
    else:
        rest = np.empty(0, int)
    rest = np.concatenate([rest, np.nonzero(~full)[0]])
    for axis, (lo, hi) in enumerate((((1, 0), (1, 2)), ((0, 1), (2, 1)))):
        sm, s0, sp = nb[rest, lo[0], lo[1]], nb[rest, 1, 1], nb[rest, hi[0], hi[1]]
        den = sm - 2 * s0 + sp
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(np.isfinite(den) & (den < 0), 0.5 * (sm - sp) / den, 0.0)
        out[rest, axis] = off
    return np.clip(np.nan_to_num(out), -0.5, 0.5)


class _Evaluator:
    """Scores (keypoint, offset) pairs in batches and records them in a dense (N, G, G) table."""

    def __init__(self, opt_patches, sar_windows, cand_valid, scorer, batch_size):
        self.opt = opt_patches
        p = opt_patches.shape[-1]
        self.views = sliding_window_view(sar_windows, (p, p), axis=(1, 2))  # (N, G, G, P, P), no copy
        self.cand_valid = cand_valid
        self.scorer = scorer
        self.batch = max(1, int(batch_size))
        n, g = cand_valid.shape[:2]
        self.scores = np.full((n, g, g), np.nan)

    def run(self, kp: np.ndarray, iy: np.ndarray, ix: np.ndarray, table: np.ndarray | None = None) -> None:
        table = self.scores if table is None else table
        keep = self.cand_valid[kp, iy, ix] & np.isnan(table[kp, iy, ix])
        kp, iy, ix = kp[keep], iy[keep], ix[keep]
        for a in range(0, len(kp), self.batch):
            k, y, x = kp[a:a + self.batch], iy[a:a + self.batch], ix[a:a + self.batch]
            s = np.asarray(self.scorer(self.opt[k], np.ascontiguousarray(self.views[k, y, x])), dtype=np.float64)
            table[k, y, x] = s.reshape(-1)


def _window_all_valid(valid_windows: np.ndarray, p: int) -> np.ndarray:
    """(N, B, B) bool -> (N, B-P+1, B-P+1): whether each P x P crop is entirely valid (integral image)."""
    n, b, _ = valid_windows.shape
    c = np.zeros((n, b + 1, b + 1), np.int32)
    c[:, 1:, 1:] = valid_windows.astype(np.int32).cumsum(1).cumsum(2)
    tot = c[:, p:, p:] - c[:, :-p, p:] - c[:, p:, :-p] + c[:, :-p, :-p]
    return tot == p * p


def match_points(optical: np.ndarray, sar: np.ndarray, opt_valid: np.ndarray, sar_valid: np.ndarray,
                 keypoints: Keypoints, initial_affine, scorer: Scorer, cfg: MatchConfig) -> pd.DataFrame:
    """Match each keypoint of the optical tile into the SAR-view tile; one row per matched keypoint.

    ``scorer`` scores patch pairs of its ``patch_size``; ``cfg`` is the match stage with its radius in pixels
    (the pipeline converts a radius in metres first).
    Columns: ref_x, ref_y (optical array coords), tgt_x, tgt_y (SAR-view array coords), score, ratio
    (runner-up peak / best, lower is less ambiguous), response, n_evals, init_dx, init_dy (tgt minus the
    initial prediction A p, in SAR-view pixels).
    """
    if cfg.search_units != "px":
        raise ValueError(f"match_points takes the search radius in pixels, got search_units={cfg.search_units!r}")
    n = len(keypoints)
    if n == 0:
        return empty_matches()
    p = int(scorer.patch_size)
    radius = float(cfg.search_radius)
    step = max(1, int(cfg.coarse_step))
    r = max(1, int(math.ceil(radius)))
    m = r + 1  # one extra ring so a peak on the search edge still gets a 3x3 fit
    g = 2 * m + 1
    a = np.asarray(initial_affine, dtype=np.float64).reshape(2, 3)
    lin, t = a[:, :2], a[:, 2]
    xy = keypoints.xy
    p0 = xy @ lin.T + t

    opt_ok = sample_patches(np.asarray(opt_valid, np.float32), xy, p, order=0).reshape(n, -1).min(1) > 0.5
    win = p + 2 * m
    sar_vwin = sample_patches(np.asarray(sar_valid, np.float32), p0, win, lin, order=1) > 0.999
    cand_valid = _window_all_valid(sar_vwin, p)
    keep = opt_ok & cand_valid[:, m, m]
    if not keep.any():
        return empty_matches()
    idx = np.nonzero(keep)[0]
    n = len(idx)
    xy, p0, cand_valid = xy[idx], p0[idx], cand_valid[idx]
    opt_p = sample_patches(np.asarray(optical, np.float32), xy, p)
    sar_w = sample_patches(np.asarray(sar, np.float32), p0, win, lin)

    d = np.arange(-m, m + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    in_disk = dx**2 + dy**2 <= radius**2 + 1e-9
    coarse = in_disk & (dx % step == 0) & (dy % step == 0)

    ev = _Evaluator(opt_p, sar_w, cand_valid, scorer, cfg.batch_size)
    sigma = float(cfg.coarse_sigma)
    cy, cx = np.nonzero(coarse)
    kk = np.repeat(np.arange(n), len(cy))
    ccy, ccx = np.tile(cy, n), np.tile(cx, n)
    if sigma > 0 and step > 1:
        # Blurred patches widen a sharp correlation peak so the coarse grid cannot step over it.
        blur = _Evaluator(ndi.gaussian_filter(opt_p, (0, sigma, sigma)),
                          ndi.gaussian_filter(sar_w, (0, sigma, sigma)), cand_valid, scorer, cfg.batch_size)
        blur.run(kk, ccy, ccx)
        coarse_tab = blur.scores
        n_blur = np.isfinite(coarse_tab).reshape(n, -1).sum(1)
    else:
        ev.run(kk, ccy, ccx)
        coarse_tab = ev.scores.copy()
        n_blur = np.zeros(n, int)

    # Local maxima of the coarse grid (against their coarse neighbours).
    sub = np.where(np.isfinite(coarse_tab), coarse_tab, -np.inf)[:, m % step::step, m % step::step]
    is_max = (sub == ndi.maximum_filter(sub, size=(1, 3, 3), mode="constant", cval=-np.inf)) & np.isfinite(sub)
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
    nb_y, nb_x = np.mgrid[-1:2, -1:2]
    for _ in range(4):
        best = _best_in_disk(ev.scores, in_disk)
        has = np.isfinite(ev.scores.reshape(n, -1)).any(1)
        by, bx = np.unravel_index(best, (g, g))
        yy = np.clip(by[:, None] + nb_y.ravel(), 0, g - 1)
        xx = np.clip(bx[:, None] + nb_x.ravel(), 0, g - 1)
        kk = np.repeat(np.arange(n), 9).reshape(n, 9)
        todo = has[:, None] & ev.cand_valid[kk, yy, xx] & np.isnan(ev.scores[kk, yy, xx])
        if not todo.any():
            break
        ev.run(kk[todo], yy[todo], xx[todo])

    s = ev.scores
    has = np.isfinite(s.reshape(n, -1)).any(1)
    best = _best_in_disk(s, in_disk)
    by, bx = np.unravel_index(best, (g, g))
    nbh = np.full((n, 3, 3), np.nan)
    for oy in range(3):
        for ox in range(3):
            yy, xx = by + oy - 1, bx + ox - 1
            inside = (yy >= 0) & (yy < g) & (xx >= 0) & (xx < g)
            nbh[inside, oy, ox] = s[np.nonzero(inside)[0], yy[inside], xx[inside]]
    frac = _subpixel(nbh)
    offs = np.column_stack([bx - m + frac[:, 0], by - m + frac[:, 1]])  # (dx, dy) in optical pixels
    tgt = p0 + offs @ lin.T
    best_score = s[np.arange(n), by, bx]
    excl = float(cfg.exclusion_px) or float(step)
    ratio = _ratio(coarse_tab, best_score, by, bx, step, m, excl, same_scale=n_blur.sum() == 0)
    n_evals = np.isfinite(s.reshape(n, -1)).sum(1) + n_blur
    out = pd.DataFrame({
        "ref_x": xy[:, 0], "ref_y": xy[:, 1], "tgt_x": tgt[:, 0], "tgt_y": tgt[:, 1],
        "score": best_score, "ratio": ratio, "response": keypoints.response[idx],
        "n_evals": n_evals.astype(np.int64), "init_dx": tgt[:, 0] - p0[:, 0], "init_dy": tgt[:, 1] - p0[:, 1],
    })
    return out[has].reset_index(drop=True)


def _best_in_disk(scores: np.ndarray, in_disk: np.ndarray) -> np.ndarray:
    n = len(scores)
    masked = np.where(np.isfinite(scores) & in_disk[None], scores, -np.inf).reshape(n, -1)
    return masked.argmax(1)


def _ratio(coarse_tab, best_score, by, bx, step, m, excl, same_scale: bool) -> np.ndarray:
    """Runner-up over best. The runner-up is the best coarse-grid local maximum farther than ``excl`` from the
    chosen peak; without one, the far shoulder (beyond 2 * excl) stands in. The best is the chosen peak's
    score, or, when the coarse grid was scored on blurred patches, the coarse score of its basin."""
    n, g, _ = coarse_tab.shape
    o = m % step
    sub = np.where(np.isfinite(coarse_tab), coarse_tab, -np.inf)[:, o::step, o::step]
    is_max = (sub == ndi.maximum_filter(sub, size=(1, 3, 3), mode="constant", cval=-np.inf)) & np.isfinite(sub)
    pos = o + step * np.arange(sub.shape[1])
    dist = np.hypot(pos[None, :, None] - by[:, None, None], pos[None, None, :] - bx[:, None, None])
    runner = np.where(is_max & (dist > excl), sub, -np.inf).reshape(n, -1).max(1)
    shoulder = np.where(dist > 2 * excl, sub, -np.inf).reshape(n, -1).max(1)
    runner = np.where(np.isfinite(runner), runner, shoulder)
    if same_scale:
        best = best_score
    else:
        near = np.where(dist <= excl, sub, -np.inf).reshape(n, -1).max(1)
        best = np.where(np.isfinite(near), near, sub.reshape(n, -1).max(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isfinite(runner) & (best > 0), runner / best, 0.0)
    return np.clip(ratio, 0.0, None)
