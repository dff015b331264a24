"""Probe: do per-point features tell which of the default cascade's kept points are under 1 px?

    cd benchmarks && OMP_NUM_THREADS=1 python point_quality_probe.py [N_3MOS] [SETS_JSON] [OUT.json]
    python point_quality_probe.py --auc [OUT.json]      # the table of AUCs from the dump

On the validation tiles of network_thresholds.py, one default run per tile with the score floor and ambiguity
ceiling off; every matched point with its error, its flags and features read at its chosen peak: f_prop (CFOG's
score), f_net (the network's), curvatures of CFOG's 3x3 fit, CFOG's best peak more than 3 px away, the surface's
mean and spread, the offset from the prediction, the optical patch's contrast. ``--auc``: per tile, the AUC of
each feature for "error under 1 px" among the points the filters keep. An investigation, not a pipeline option.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import network_thresholds as nt
from cascade import run_mod

from geomatch import config
from geomatch.pipeline import cascade as cas
from geomatch.pipeline import score_table as st
from geomatch.pipeline import search

_orig_finish, _orig_ct = search._finish, cas.cascade_table
STASH = {}


def ct(w, prop, scorer, cfg, excl):
    table, n_evals, ratio_of, fit = _orig_ct(w, prop, scorer, cfg, excl)
    STASH["prop"] = prop
    STASH["net"] = (table - (1 - float(cfg.cascade_weight)) * prop) / float(cfg.cascade_weight)
    return table, n_evals, ratio_of, fit


def finish(w, table, n_evals, ratio_of, response, fit=None, settle=None):
    df = _orig_finish(w, table, n_evals, ratio_of, response, fit, settle)
    n, g = len(w.xy), w.g
    has = np.isfinite(table.reshape(n, -1)).any(1)
    by, bx = np.unravel_index(st.best_in_disk(table, w.in_disk), (g, g))
    prop, net = STASH["prop"], STASH["net"]
    nb = st.neighbourhoods(prop, by, bx)
    coef = np.nan_to_num(nb.reshape(n, 9)) @ st._QUAD.T
    pk = prop[np.arange(n), by, bx]
    # proposer's own best other peak (outside 3 px)
    yy, xx = np.mgrid[0:g, 0:g]
    far = np.hypot(yy[None] - by[:, None, None], xx[None] - bx[:, None, None]) > 3
    pd = np.where(far & w.in_disk[None] & np.isfinite(prop), prop, -np.inf).reshape(n, -1).max(1)
    # surface statistics in the disk
    disk = np.where(w.in_disk[None] & np.isfinite(prop), prop, np.nan).reshape(n, -1)
    feats = {
        "f_prop": pk,
        "f_net": net[np.arange(n), by, bx],
        "f_curv_x": -coef[:, 3],
        "f_curv_y": -coef[:, 5],
        "f_cross": coef[:, 4],
        "f_prop_second": pd,
        "f_prop_mean": np.nanmean(disk, 1),
        "f_prop_std": np.nanstd(disk, 1),
        "f_offset": np.hypot(bx - w.m, by - w.m),
        "f_optstd": w.opt.reshape(n, -1).std(1),
    }
    for k, v in feats.items():
        df[k] = np.asarray(v, float)[has]
    return df


search._finish, cas.cascade_table = finish, ct


def _one(errors, row):
    e = np.asarray(errors(row), float).ravel()
    return float(e[0]) if len(e) else np.nan


def main(with_3mos, sets, out_path):
    out = {}
    for sid, optical, sar, errors, extra in nt.built_pairs(with_3mos):
        cfg = config.load(
            "default", {"write.plot": False, **extra, "filter.min_score": -1.0, "filter.max_ratio": 1.0,
                        "match.refine_patch": 0, **sets}  # recorded before settling
        )
        res = run_mod.run_pipeline(str(optical), str(sar), cfg)
        g = res.gdf
        # errors() may drop points off scored ground: compute per point via single-row calls
        err = np.array([_one(errors, g.iloc[[i]].reset_index(drop=True)) for i in range(len(g))])
        cols = ["score", "ratio", "outlier", "response"] + [c for c in g.columns if c.startswith("f_")]
        out[sid] = {"err": err.tolist(), **{c: g[c].astype(float).tolist() for c in cols}}
        print(sid, len(g), int((g["outlier"] == 0).sum()), flush=True)
    Path(out_path).write_text(json.dumps(out))


def auc_table(path):
    d = json.load(open(path))

    def auc(x, y):
        x, y = np.asarray(x), np.asarray(y, bool)
        if y.all() or (~y).all():
            return np.nan
        r = np.argsort(np.argsort(x)) + 1
        return (r[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum())

    feats = [
        "score",
        "f_prop",
        "f_net",
        "f_curv_x",
        "f_curv_y",
        "f_prop_second",
        "f_prop_std",
        "f_optstd",
        "response",
        "ratio",
    ]
    derived = {
        "curv": lambda p: np.minimum(p["f_curv_x"], p["f_curv_y"]),
        "gap": lambda p: p["f_prop"] - p["f_prop_second"],
        "z": lambda p: (p["f_prop"] - p["f_prop_mean"]) / p["f_prop_std"],
        "curvsum": lambda p: p["f_curv_x"] + p["f_curv_y"],
    }
    tab = {}
    for sid, p in d.items():
        p = {k: np.asarray(v, float) for k, v in p.items()}
        ok = (p["outlier"] == 0) & np.isfinite(p["err"])
        y = p["err"][ok] < 1
        row = {}
        for f in feats:
            row[f] = auc(p[f][ok], y)
        for f, fn in derived.items():
            row[f] = auc(fn(p)[ok], y)
        tab[sid] = row
    names = list(next(iter(tab.values())))
    print("pair".ljust(24) + " ".join(n[:8].rjust(8) for n in names))
    for sid, row in tab.items():
        print(sid[:24].ljust(24) + " ".join(f"{row[n]:8.2f}" for n in names))
    print("mean".ljust(24) + " ".join(f"{np.nanmean([r[n] for r in tab.values()]):8.2f}" for n in names))


if __name__ == "__main__":
    default = str(Path(__file__).with_name("point_quality_probe.json"))
    if sys.argv[1:2] == ["--auc"]:
        print(
            "AUC of each feature for 'error under 1 px' among the kept points, per validation tile "
            "(`python point_quality_probe.py --auc > point_quality_probe.md`; 0.5: no better than chance)\n"
        )
        auc_table(sys.argv[2] if len(sys.argv) > 2 else default)
    else:
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 12,
            json.loads(sys.argv[2]) if len(sys.argv) > 2 else {},
            sys.argv[3] if len(sys.argv) > 3 else default,
        )
