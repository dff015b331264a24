"""The fine search's working set: each keypoint's patch, its resampled search window, and a table of scores
over the window's integer offsets, with the peak's sub-pixel fit and the runner-up ratio read from it.

Every mode of :func:`geomatch.pipeline.search.match_points` (coarse-to-fine, dense, cascade) fills the same
(N, G, G) table, G = 2 m + 1 offsets -m..m per axis, m = ceil(radius) + 1 (one ring beyond the disk, so a
peak on the search edge still gets its 3x3 fit). Table cell [k, y, x] is keypoint k against the window crop
whose corner is (y, x): offset (x - m, y - m) in patch pixels, i.e. ``zoom`` optical pixels each.

Zoom (scale-aware patches, :mod:`geomatch.pipeline.gsd`): at ``zoom`` z every patch, window and valid mask is
sampled through z times A's linear part, anti-aliased (:func:`~geomatch.pipeline.patches.sample_zoomed`), so a
network trained at another ground sampling distance sees its own; the radius shrinks to radius / z patch
pixels (never below 2 unless the radius itself is smaller) and an offset d maps back as ``p0 + (z L) d``.
z = 1 is today's sampling, bit for bit: one code path for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage as ndi

from geomatch.pipeline.cfog_features import box_sums
from geomatch.pipeline.patches import sample_patches, sample_zoomed


def quadratic_pinv(radius: int = 1) -> np.ndarray:
    """(6, K) least-squares fit of f = a + b x + c y + d x^2 + e x y + f y^2 over a (2 r + 1)^2 neighbourhood."""
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    x, y = xx.ravel(), yy.ravel()
    return np.linalg.pinv(np.column_stack([np.ones(x.size), x, y, x**2, x * y, y**2]))


_QUAD = quadratic_pinv(1)


@dataclass
class Windows:
    """The keypoints that can be matched (optical patch valid, zero offset valid) and what they are matched on."""

    idx: np.ndarray  # into the keypoints given
    xy: np.ndarray  # (N, 2) optical positions
    p0: np.ndarray  # (N, 2) window centres in the SAR view: A p, or the positions given
    lin: np.ndarray  # (2, 2) linear part of A
    m: int
    in_disk: np.ndarray  # (G, G) offsets inside the search disk
    cand_valid: np.ndarray  # (N, G, G) crops entirely on valid SAR
    opt: np.ndarray  # (N, P, P) optical patches
    sar: np.ndarray  # (N, W, W) SAR windows, W = P + 2 m
    affine: np.ndarray  # (2, 3) the initial affine A
    zoom: float  # optical pixels per patch pixel
    shift: np.ndarray  # (N, 2) p0 - A p in patch pixels (through z L); zero unless p0 was given

    @property
    def g(self) -> int:
        return 2 * self.m + 1

    @property
    def grid(self) -> np.ndarray:
        """(2, 2) SAR-view pixels per patch pixel: what an offset in the table is mapped back through."""
        return self.zoom * self.lin


def sample_windows(optical, sar, opt_valid, sar_valid, xy, initial_affine, p: int, radius: float,
                   zoom: float = 1.0, p0=None, pixels: bool = True) -> Windows | None:
    """Cut every keypoint's patch and search window (through ``zoom`` times A's linear part); None when none is
    usable. ``radius`` is in optical pixels; ``p0`` (N, 2) centres the windows elsewhere than at A p (the
    refinements around found positions); ``pixels=False`` leaves ``opt`` and ``sar`` as zeros of their shapes
    (a dense matcher reads its features from the images, :func:`feature_views`, never these)."""
    n = len(xy)
    z = float(zoom)
    r = max(min(radius, 2.0), radius / z)  # patch pixels; at z = 1 exactly the radius
    m = max(1, int(math.ceil(r))) + 1
    a = np.asarray(initial_affine, dtype=np.float64).reshape(2, 3)
    lin, t = a[:, :2], a[:, 2]
    if p0 is None:
        p0, shift = xy @ lin.T + t, np.zeros((n, 2))
    else:
        p0 = np.asarray(p0, np.float64).reshape(-1, 2)
        shift = np.linalg.solve(z * lin, (p0 - (xy @ lin.T + t)).T).T
    # Masks go through the same anti-aliasing as the images: a sample the filter mixed nodata into is not valid.
    opt_ok = sample_zoomed(np.asarray(opt_valid, np.float32), xy, p, z).reshape(n, -1).min(1) > 0.5
    win = p + 2 * m
    sar_vwin = sample_zoomed(np.asarray(sar_valid, np.float32), p0, win, z, lin) > 0.999
    cand_valid = _window_all_valid(sar_vwin, p)
    keep = opt_ok & cand_valid[:, m, m]
    if not keep.any():
        return None
    idx = np.nonzero(keep)[0]
    xy, p0, cand_valid, shift = xy[idx], p0[idx], cand_valid[idx], shift[idx]
    d = np.arange(-m, m + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    if pixels:
        opt, sar_w = (sample_zoomed(np.asarray(optical, np.float32), xy, p, z),
                      sample_zoomed(np.asarray(sar, np.float32), p0, win, z, lin))
    else:
        opt, sar_w = (np.broadcast_to(np.float32(0), (len(idx), s, s)) for s in (p, win))
    return Windows(idx, xy, p0, lin, m, dx**2 + dy**2 <= r**2 + 1e-9, cand_valid, opt, sar_w, a, z, shift)


@dataclass
class FeatureViews:
    """A dense matcher's feature channels, computed once per tile: the optical ones (the whole tile at zoom 1,
    else a view on the patch grid) and the SAR ones on one view resampled through A around the keypoints;
    positions are patch-grid coordinates (optical x / z), ``*_lo`` each view's origin in them."""

    opt: np.ndarray  # (C, H, W)
    opt_ok: np.ndarray  # (H, W) bool
    opt_lo: np.ndarray  # (2,)
    sar: np.ndarray  # (C, h, w)
    sar_ok: np.ndarray  # (h, w) bool
    sar_lo: np.ndarray  # (2,)

    def crops(self, at_opt, p: int, at_sar, win: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, p, p) optical crops at ``at_opt`` and (N, C, win, win) SAR crops at ``at_sar`` (centres)."""
        return (np.stack([sample_patches(ch, at_opt - self.opt_lo, p) for ch in self.opt], 1),
                np.stack([sample_patches(ch, at_sar - self.sar_lo, win) for ch in self.sar], 1))

    def inside(self, at_opt, p: int, at_sar, win: int) -> np.ndarray:
        """(N,) whether both crops lie wholly on valid pixels of their views."""
        def all_ok(ok, at, lo, size):
            return sample_patches(ok.astype(np.float32), at - lo, size).reshape(len(at), -1).min(1) > 0.5
        return all_ok(self.opt_ok, at_opt, self.opt_lo, p) & all_ok(self.sar_ok, at_sar, self.sar_lo, win)


def feature_views(optical, opt_valid, sar, sar_valid, w: Windows, features, margin: int,
                  reach: int = 0) -> FeatureViews:
    """The :class:`FeatureViews` for the keypoints of ``w``, from ``features(image, valid) -> (C, H, W)``
    computed once per image instead of once per overlapping window.

    The SAR is first resampled onto the optical grid around the keypoints through A (one interpolation, the
    samples the per-keypoint windows would take), so on pixel-centre keypoints every crop is a plain copy.
    The SAR view reaches ``max(window / 2, reach)`` pixels around each window centre (``reach``: a larger crop
    to come, the refinement's), plus ``margin`` so the features' own edge effects stay off the crops. At a zoom
    z the views are on the patch grid (optical x is view x / z) and the optical image gets one too.
    """
    win = w.sar.shape[-1]
    z = w.zoom
    xy = w.xy / z
    if z == 1:  # features of the whole tile, as they always were: the channels normalise per image
        ok = np.asarray(opt_valid, bool)
        fo, olo = features(np.asarray(optical, np.float32), ok), np.zeros(2)
    else:
        eye = np.hstack([np.eye(2), np.zeros((2, 1))])
        view, ok, olo = _view(optical, opt_valid, xy, eye, z, max(win // 2, reach) + margin)
        fo = features(view, ok)
    view, view_ok, lo = _view(sar, sar_valid, xy + w.shift, w.affine, z, max(win // 2, reach) + margin)
    return FeatureViews(fo, ok, olo, features(view, view_ok), view_ok, lo)


def _view(image, valid, pos, affine, z: float, reach: int):
    """One square resampled view covering ``reach`` patch pixels around every position ``pos`` (patch-grid
    coordinates, optical x / z), through z times the linear part of ``affine``; with its valid mask and the
    view's origin in those coordinates."""
    lo = np.floor(pos.min(0)) - reach
    size = int(np.ceil((pos.max(0) - lo).max())) + reach + 1
    centre = (lo + size // 2 + 0.5) * z
    at = affine[:, :2] @ centre + affine[:, 2]
    lin = affine[:, :2]
    view = sample_zoomed(np.asarray(image, np.float32), at[None], size, z, lin)[0]
    view_ok = sample_zoomed(np.asarray(valid, np.float32), at[None], size, z, lin)[0] > 0.999
    return view, view_ok, lo


class Evaluator:
    """Scores (keypoint, offset) pairs with a patch scorer in batches and records them in an (N, G, G) table."""

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

    def around(self, kp: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> None:
        """Score the 3x3 neighbourhood of each (keypoint, row, col) given."""
        g = self.scores.shape[1]
        nb_y, nb_x = np.mgrid[-1:2, -1:2]
        yy = np.clip(cy[:, None] + nb_y.ravel(), 0, g - 1)
        xx = np.clip(cx[:, None] + nb_x.ravel(), 0, g - 1)
        self.run(np.repeat(kp, 9), yy.ravel(), xx.ravel())


def _window_all_valid(valid_windows: np.ndarray, p: int) -> np.ndarray:
    """(N, B, B) bool -> (N, B-P+1, B-P+1): whether each P x P crop is entirely valid (integral image)."""
    return box_sums(valid_windows, p) == p * p  # float64 counts: exact


def peak_positions(w: Windows, table: np.ndarray, fit: np.ndarray | None = None):
    """(has, by, bx, tgt): whether each keypoint has a scored offset, its best one in the disk (row, col of the
    table) and that offset's sub-pixel position, fitted on ``fit`` (default: the table) and mapped back into
    the SAR view, (N, 2)."""
    n, g = len(w.xy), w.g
    has = np.isfinite(table.reshape(n, -1)).any(1)
    by, bx = np.unravel_index(best_in_disk(table, w.in_disk), (g, g))
    frac = subpixel(neighbourhoods(table if fit is None else fit, by, bx))
    offs = np.column_stack([bx - w.m + frac[:, 0], by - w.m + frac[:, 1]])  # (dx, dy) in patch pixels
    return has, by, bx, w.p0 + offs @ w.grid.T


def best_in_disk(scores: np.ndarray, in_disk: np.ndarray) -> np.ndarray:
    n = len(scores)
    masked = np.where(np.isfinite(scores) & in_disk[None], scores, -np.inf).reshape(n, -1)
    return masked.argmax(1)


def neighbourhoods(table: np.ndarray, by: np.ndarray, bx: np.ndarray, radius: int = 1) -> np.ndarray:
    """(N, 2 r + 1, 2 r + 1) scores around (by, bx); NaN off the table."""
    n, g, _ = table.shape
    k = 2 * radius + 1
    nbh = np.full((n, k, k), np.nan)
    for oy in range(k):
        for ox in range(k):
            yy, xx = by + oy - radius, bx + ox - radius
            inside = (yy >= 0) & (yy < g) & (xx >= 0) & (xx < g)
            nbh[inside, oy, ox] = table[np.nonzero(inside)[0], yy[inside], xx[inside]]
    return nbh


def subpixel(nb: np.ndarray) -> np.ndarray:
    """Peak offset (dx, dy) in [-0.5, 0.5] from 3x3 score neighbourhoods (N, 3, 3); NaN cells fall back to 1-D."""
    n = len(nb)
    out = np.zeros((n, 2))
    full = np.all(np.isfinite(nb.reshape(n, 9)), axis=1)
    if full.any():
        dxy, ok = quadratic_peak(nb[full].reshape(-1, 9) @ _QUAD.T)
        sel = np.nonzero(full)[0]
        out[sel[ok]] = dxy[ok]
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


def quadratic_peak(coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) stationary points (dx, dy) of fitted quadratics ``coef`` (N, 6), and whether each is a maximum."""
    _, b, c, d, e, f = coef.T
    det = 4 * d * f - e * e
    with np.errstate(divide="ignore", invalid="ignore"):
        dxy = np.column_stack([(e * c - 2 * f * b) / det, (e * b - 2 * d * c) / det])
    return dxy, (d < 0) & (det > 0)


def local_maxima(table: np.ndarray, step: int = 1, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(sub-grid of the table with -inf for unscored cells, where each cell is a 3x3 local maximum of it)."""
    sub = np.where(np.isfinite(table), table, -np.inf)[:, offset::step, offset::step]
    is_max = (sub == ndi.maximum_filter(sub, size=(1, 3, 3), mode="constant", cval=-np.inf)) & np.isfinite(sub)
    return sub, is_max


def ratio(coarse_tab, best_score, by, bx, step, m, excl, same_scale: bool) -> np.ndarray:
    """Runner-up over best. The runner-up is the best local maximum of the (step-``step``) grid farther than
    ``excl`` from the chosen peak; without one, the far shoulder (beyond 2 * excl) stands in. The best is the
    chosen peak's score, or, when the grid was scored on blurred patches, the grid score of its basin."""
    n = len(coarse_tab)
    o = m % step
    sub, is_max = local_maxima(coarse_tab, step, o)
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
        out = np.where(np.isfinite(runner) & (best > 0), runner / best, 0.0)
    return np.clip(out, 0.0, None)
