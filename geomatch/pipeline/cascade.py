"""Dense matchers in the fine search, alone or as the proposer of a cascade that a network decides.

A dense matcher is a registered matcher whose class has ``features(image, valid) -> (C, H, W)`` (one
image's feature channels, zero where undefined), ``correlate(patch_features (N, C, P, P), window_features
(N, C, W, W)) -> (N, W - P + 1, W - P + 1)`` (the score of every patch-sized crop, on the scale of its
patch-pair score) and ``dense_context`` (pixels its features need around a crop). Why a second entry point:
scoring a search window pair by pair repeats the same feature and correlation work for each of its ~700
offsets, and overlapping windows repeat it again; the features of a tile are computed once and one FFT
product per keypoint gives all its offsets.

Cascade (``match.mode = "cascade"``): the proposer scores every offset and its ``top_k`` local maxima in the
disk go to the network; each scored offset gets ``w * network + (1 - w) * proposer`` (w = ``cascade_weight``)
and the best combined one wins. ``cascade_verify`` says what the network scores:

- ``peak`` (default): the peak centres only, ``top_k`` evaluations per keypoint; the sub-pixel fit reads the
  proposer's surface around the chosen peak (the proposer has every neighbour, the network none).
- ``block``: each peak's 3x3 neighbourhood too, the fit on the combined scores; if the best is on the rim of
  its block its missing neighbours are scored once more (at most 5): at most ``9 * top_k + 5`` evaluations.

The ratio is the best other proposal's combined score over the chosen one's (with a single proposal, the
proposer's own runner-up over its peak). Why: the network alone is 20-30x the cost of NCC (issue 9) and its
scores saturate on unseen sensors; the classical surface knows where the few plausible peaks are, the network
which of them is right. ``peak`` was chosen on validation tiles as the one within 3x of NCC's match time
(benchmarks/cascade_verify.md); measured: benchmarks/cascade.md, benchmarks/matcher_tables.md.
"""

from __future__ import annotations

import threading

import numpy as np

from geomatch import registry
from geomatch.errors import ConfigError
from geomatch.pipeline.score_table import Evaluator, FeatureViews, Windows, best_in_disk, local_maxima, ratio

CLIMB_EVALS = 5  # most new neighbours one step off a 3x3 block's centre can need


def dense_matcher(name: str, params: dict, role: str | None = None):
    """The built matcher ``name`` if it scores densely, else None (or, with ``role``, a ConfigError naming it).

    Built once per process and options (tiles on threads or dask workers share it: it holds no state)."""
    if not hasattr(registry.load("matchers", name), "correlate"):
        if role is None:
            return None
        dense = [n for n in registry.names("matchers") if hasattr(registry.load("matchers", n), "correlate")]
        raise ConfigError(f"{role} = {name!r} cannot score a search window densely; use one of: {', '.join(dense)}")
    key = (name, tuple(sorted((k, repr(v)) for k, v in params.items())))
    with _LOCK:
        if key not in _BUILT:
            from geomatch.models.factory import build_matcher

            _BUILT[key] = build_matcher(name, params=dict(params)).eval()
        return _BUILT[key]


_BUILT: dict[tuple, object] = {}
_LOCK = threading.Lock()


def surface(w: Windows, dense, views: FeatureViews) -> np.ndarray:
    """The dense matcher's (N, G, G) table from its feature ``views``, NaN where the crop leaves the valid SAR."""
    xy = w.xy / w.zoom
    opt_f, sar_f = views.crops(xy, w.opt.shape[-1], xy + w.shift, w.sar.shape[-1])
    s = np.asarray(dense.correlate(opt_f, sar_f), np.float64)
    return np.where(w.cand_valid, s, np.nan)


def dense_table(w: Windows, table: np.ndarray, excl: float):
    """Search with a dense matcher alone: every offset scored; ``n_evals`` counts them."""
    n_evals = np.isfinite(table).reshape(len(table), -1).sum(1)
    disk = np.where(w.in_disk, table, np.nan)

    def ratio_of(best_score, by, bx):
        return ratio(disk, best_score, by, bx, 1, w.m, excl, same_scale=True)

    return table, n_evals, ratio_of


def top_peaks(table: np.ndarray, in_disk: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keypoint, row, col) of each keypoint's ``k`` highest 3x3 local maxima inside the disk."""
    sub, is_max = local_maxima(np.where(in_disk, table, np.nan))
    n, g, _ = table.shape
    vals = np.where(is_max, sub, -np.inf).reshape(n, -1)
    k = min(k, vals.shape[1])
    order = np.argsort(-vals, axis=1, kind="stable")[:, :k]
    ok = np.isfinite(np.take_along_axis(vals, order, 1))
    kk = np.repeat(np.arange(n), k).reshape(n, k)
    iy, ix = np.unravel_index(order, (g, g))
    return kk[ok], iy[ok], ix[ok]


def cascade_table(w: Windows, prop: np.ndarray, scorer, cfg, excl: float):
    """The proposer's table ``prop`` everywhere, the network on its ``top_k`` peaks; returns the combined table,
    the evaluations per keypoint, the ratio function and the table the sub-pixel fit reads (``prop`` when the
    network scored peak centres only, ``cascade_verify = "peak"``)."""
    n, g = len(prop), w.g
    wt = float(cfg.cascade_weight)
    ev = Evaluator(w.opt, w.sar, w.cand_valid, scorer, cfg.batch_size)
    kk, py, px = top_peaks(prop, w.in_disk, int(cfg.top_k))

    def combined():
        return np.where(np.isfinite(ev.scores), wt * ev.scores + (1 - wt) * prop, np.nan)

    if cfg.cascade_verify == "peak":
        ev.run(kk, py, px)
        table, fit = combined(), prop
    else:
        ev.around(kk, py, px)
        table = combined()
        by, bx = np.unravel_index(best_in_disk(table, w.in_disk), (g, g))
        has = np.nonzero((np.isfinite(table) & w.in_disk).reshape(n, -1).any(1))[0]
        ev.around(has, by[has], bx[has])  # one climbing step: only a best on a block's rim has neighbours left
        table = fit = combined()
    n_evals = np.isfinite(ev.scores).reshape(n, -1).sum(1)
    disk = np.where(w.in_disk, table, np.nan)
    prop_disk = np.where(w.in_disk, prop, np.nan)

    def ratio_of(best_score, by, bx):
        # Against the other proposals, combined; a keypoint with one proposal falls back on the proposer's
        # own runner-up (its surface holds every offset).
        r = ratio(disk, best_score, by, bx, 1, w.m, excl, same_scale=True)
        alone = ratio(prop_disk, prop[np.arange(n), by, bx], by, bx, 1, w.m, excl, same_scale=True)
        return np.where(_other_proposal(disk, by, bx, excl), r, alone)

    return table, n_evals, ratio_of, fit


def _other_proposal(disk: np.ndarray, by: np.ndarray, bx: np.ndarray, excl: float) -> np.ndarray:
    """Whether any scored offset lies farther than ``excl`` from (by, bx), per keypoint."""
    g = disk.shape[1]
    yy, xx = np.mgrid[0:g, 0:g]
    dist = np.hypot(yy[None] - by[:, None, None], xx[None] - bx[:, None, None])
    return (np.isfinite(disk) & (dist > excl)).reshape(len(disk), -1).any(1)
