"""Probe: how much do other sub-pixel fits at the default cascade's chosen integer peak move the errors?

    cd benchmarks && OMP_NUM_THREADS=1 python subpixel_probe.py [N_3MOS] [SETS_JSON] [OUT.json]

On the validation tiles of network_thresholds.py (volkov-s1s2 scenes with a crop truth + N_3MOS 3mos tiles), one
default run per tile; for each kept point the position is recomputed from the same integer peak with: cfog3 (the
pipeline's: 3x3 quadratic on CFOG's surface), cfog5 (5x5 quadratic), cfoggauss (1-D Gaussian fits), ncc3 (3x3
quadratic on raw-intensity NCC scores), avg (mean of cfog3 and ncc3), int (the integer peak). Per tile:
[median error, points under 1 px] of each; volkov also the median signed error (x, y) and the spread around it.
An investigation, not a pipeline option: no variant was adopted (README, "The issue's bar is still not met").
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import network_thresholds as nt
from cascade import CROP, WARP, _affine, run_mod
from numpy.lib.stride_tricks import sliding_window_view

from geomatch import config
from geomatch.pipeline import score_table as st
from geomatch.pipeline import search

_orig = search._finish


def quadfit(nb, clip):
    """Peak offsets of least-squares quadratics over (N, K, K) neighbourhoods (zero where not a maximum or not
    all scored), clipped to +-clip."""
    n = len(nb)
    dxy, ok = st.quadratic_peak(np.nan_to_num(nb.reshape(n, -1)) @ st.quadratic_pinv(nb.shape[1] // 2).T)
    ok &= np.all(np.isfinite(nb.reshape(n, -1)), 1)
    return np.clip(np.where(ok[:, None], dxy, 0.0), -clip, clip)


def gauss1d(nb):
    n = len(nb)
    out = np.zeros((n, 2))
    lg = np.log(np.clip(nb, 1e-6, None))
    for ax, (a, b) in enumerate((((1, 0), (1, 2)), ((0, 1), (2, 1)))):
        sm, s0, sp = lg[:, a[0], a[1]], lg[:, 1, 1], lg[:, b[0], b[1]]
        den = sm - 2 * s0 + sp
        with np.errstate(all="ignore"):
            out[:, ax] = np.where(np.isfinite(den) & (den < 0), 0.5 * (sm - sp) / den, 0)
    return np.clip(np.nan_to_num(out), -0.5, 0.5)


def ncc_table(w, by, bx, r=1):
    p = w.opt.shape[-1]
    views = sliding_window_view(w.sar, (p, p), axis=(1, 2))
    n, g = len(by), w.g
    out = np.full((n, 2 * r + 1, 2 * r + 1), np.nan)
    a = w.opt.reshape(n, -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    for oy in range(-r, r + 1):
        for ox in range(-r, r + 1):
            yy, xx = np.clip(by + oy, 0, g - 1), np.clip(bx + ox, 0, g - 1)
            b = views[np.arange(n), yy, xx].reshape(n, -1).astype(np.float64)
            b = b - b.mean(1, keepdims=True)
            out[:, oy + r, ox + r] = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)
    return out


def finish(w, table, n_evals, ratio_of, response, fit=None, settle=None):
    df = _orig(w, table, n_evals, ratio_of, response, fit, settle)
    n, g = len(w.xy), w.g
    has = np.isfinite(table.reshape(n, -1)).any(1)
    by, bx = np.unravel_index(st.best_in_disk(table, w.in_disk), (g, g))
    f = table if fit is None else fit
    alts = {}
    nb3 = st.neighbourhoods(f, by, bx)
    alts["cfog3"] = st.subpixel(nb3)
    alts["cfog5"] = quadfit(st.neighbourhoods(f, by, bx, radius=2), 1.0)
    alts["cfoggauss"] = gauss1d(nb3)
    nn = ncc_table(w, by, bx, 1)
    alts["ncc3"] = st.subpixel(nn)
    alts["avg"] = 0.5 * (alts["cfog3"] + alts["ncc3"])
    alts["int"] = np.zeros((n, 2))
    rec = {}
    for k, fr in alts.items():
        offs = np.column_stack([bx - w.m + fr[:, 0], by - w.m + fr[:, 1]])
        rec[k] = (w.p0 + offs @ w.grid.T)[has]
    for k in alts:
        df[f"d_{k}_x"] = rec[k][:, 0] - rec["cfog3"][:, 0]
        df[f"d_{k}_y"] = rec[k][:, 1] - rec["cfog3"][:, 1]
    return df


search._finish = finish


def main(with_3mos=12, sets=None):
    sets = {"match.refine_patch": 0, **(sets or {})}  # recorded before settling: positions at the search's peaks
    allres = {}
    for sid, optical, sar, errors, extra in nt.built_pairs(with_3mos):
        cfg = config.load("default", {"write.plot": False, **extra, **sets})
        res = run_mod.run_pipeline(str(optical), str(sar), cfg)
        kept = res.gdf[res.gdf["outlier"] == 0].copy()
        base = errors(kept)
        out = {"kept": len(kept)}
        for k in ("cfog3", "cfog5", "cfoggauss", "ncc3", "avg", "int"):
            alt = kept.copy()
            alt["tgt_col"] = kept["tgt_col"] + kept[f"d_{k}_x"]
            alt["tgt_row"] = kept["tgt_row"] + kept[f"d_{k}_y"]
            e = np.asarray(errors(alt))
            out[k] = [round(float(np.median(e)), 3), int((e < 1).sum())] if len(e) else None
        if sid.startswith("volkov"):
            a = _affine(WARP[0], WARP[1], WARP[2], (CROP / 2, CROP / 2))
            t = a @ np.stack([kept["ref_col"], kept["ref_row"], np.ones(len(kept))])
            for k in ("cfog3", "ncc3"):
                ex = kept["tgt_col"] + kept[f"d_{k}_x"] - t[0]
                ey = kept["tgt_row"] + kept[f"d_{k}_y"] - t[1]
                out["bias_" + k] = [
                    round(float(np.median(ex)), 2),
                    round(float(np.median(ey)), 2),
                    round(float(np.median(np.hypot(ex - np.median(ex), ey - np.median(ey)))), 2),
                ]
        out["base"] = [round(float(np.median(base)), 3), int((np.asarray(base) < 1).sum())] if len(base) else None
        allres[sid] = out
        print(sid, json.dumps(out), flush=True)
    return allres


if __name__ == "__main__":
    res = main(int(sys.argv[1]) if len(sys.argv) > 1 else 12, json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
    Path(sys.argv[3] if len(sys.argv) > 3 else Path(__file__).with_name("subpixel_probe.json")).write_text(
        json.dumps(res, indent=1)
    )
