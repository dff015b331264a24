"""Capture range of the coarse stage and honesty of the run verdict, on synthetic and real pairs.

Usage:  python benchmarks/coarse_capture.py [--sets camera visnir visnir-default real] [--limit N] [--out results.json]
        python benchmarks/coarse_capture.py --rejudge results.json   (new verdict thresholds, no rerun)
        python benchmarks/coarse_capture.py --baseline-coarse old_coarse.py --sets ... --out base.json

Sets (each case: coarse stage with its fine check -> Harris + NCC fine search -> filters -> verdict):

- ``camera``: skimage's 512 x 512 'camera' image against a SAR-like twin warped by a known similarity
  (gamma-mapped, speckled, blurred, nodata outside the frame) over rotation 0-20 deg, scale 0.9-1.1,
  shift 0-150 px: 60 cases, coarse stage only (capture), as before.
- ``visnir``: the 40 VIS-NIR field/forest pairs under the ``visnir`` pipeline (benchmarks/visnir_pairs.py
  reads and scores them).
- ``visnir-default``: the 20 field pairs under the ``default`` pipeline's coarse ranges (no rotation or
  scale search, NCC matcher): mostly failures, the verdict must flag them.
- ``real``: real optical/SAR material (Sen1Floods11 S2/S1 512 x 512, and verified Sentinel-1 3MOS tiles
  256 x 256) with the SAR side warped by large known similarities, under the ``visnir`` ranges.

Per case: capture (worst error of the coarse transform over the image; captured when under 12 px, the fine
search radius), correct (at least 6 kept points with a median error under ``TOL_PX``), and the verdict. A
failure is flagged when the verdict is not ``registered``; a false flag is a correct case not registered.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from rasterio.windows import Window
from scipy import ndimage as ndi
from skimage import data, io

sys.path.insert(0, str(Path(__file__).resolve().parent))
from visnir_pairs import affine_errors, capture_error, default_data, load_pair, pair_keys  # noqa: E402

from geomatch import config, registry  # noqa: E402
from geomatch.models.runtime import build_scorer  # noqa: E402
from geomatch.pipeline.budget import spread as budget_spread  # noqa: E402
from geomatch.pipeline.candidates import settle_initial  # noqa: E402
from geomatch.pipeline.filters import flag_outliers  # noqa: E402
from geomatch.pipeline.search import match_points  # noqa: E402
from geomatch.pipeline.verdict import coarse_notes, decide, judge  # noqa: E402

TOL_PX = 3.0  # VIS-NIR ground truth is good to about 2 px on a few pairs (data README)
MIN_KEPT = 6


def similarity(rot_deg, scale, shift, centre):
    th = np.radians(rot_deg)
    lin = scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    return np.hstack([lin, (centre + np.asarray(shift, float) - lin @ centre)[:, None]])


def warp(img, affine, speckle_seed=None):
    """The view in which optical pixel p sits at affine p (GDAL pixel centres); nodata outside the frame."""
    inv = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))
    rows, cols = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    p = inv @ np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5, np.ones(rows.size)])
    coords = np.stack([p[1] - 0.5, p[0] - 0.5])
    base = ndi.map_coordinates(img, coords, order=3, cval=0.0).reshape(img.shape)
    valid = ndi.map_coordinates(np.ones(img.shape), coords, order=0, cval=0.0).reshape(img.shape) > 0.5
    if speckle_seed is not None:
        rng = np.random.default_rng(speckle_seed)
        base = ndi.gaussian_filter(np.clip(base, 0, 1) ** 2.2 * rng.gamma(6.0, 1 / 6.0, img.shape), 0.6)
        base = base / np.percentile(base[valid], 99.5)
    return np.clip(base, 0, 1), ndi.binary_erosion(valid, iterations=2)


def stretch(a):
    lo, hi = np.nanpercentile(a, [1, 99])
    return np.clip((np.nan_to_num(a, nan=lo) - lo) / max(hi - lo, 1e-9), 0, 1)


class Runner:
    """One pipeline's coarse, fine and filter stages on in-memory pairs, and the verdict."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.scorer = build_scorer(cfg.match.plugin, cfg.match.weights, "cpu", cfg.match.batch_size,
                                   params=dict(cfg.match.params))
        self.detector = registry.load("detectors", cfg.detect.plugin)(**cfg.detect.params)

    def case(self, opt, opt_ok, sar, sar_ok, truth, coarse_only=False) -> dict:
        cfg, t0 = self.cfg, time.perf_counter()
        initial = settle_initial(opt, opt_ok, sar, sar_ok, 1.0, cfg, self.scorer, cfg.match.search_radius)
        row = {"capture_px": capture_error(initial.affine, truth, opt.shape), "coarse": initial.method,
               "coarse_confident": initial.confident, "fine_check": initial.details.get("fine_check")}
        row["captured"] = row["capture_px"] < 12.0
        if not coarse_only:
            # As the pipeline chooses them for a one-tile scene: every candidate, then the budget's spread.
            kps = self.detector.detect(opt.astype(np.float32), opt_ok, cfg.detect.max_points_per_tile or opt.size,
                                       cfg.detect.cell_size, cfg.detect.min_contrast, self.scorer.patch_size // 2)
            kps = kps.subset(budget_spread(kps, Window(0, 0, opt.shape[1], opt.shape[0]), cfg.detect.max_points,
                                           cfg.detect.cell_size))
            df = match_points(opt.astype(np.float32), sar.astype(np.float32), opt_ok, sar_ok, kps, initial.affine,
                              self.scorer, cfg.match)
            df, info = flag_outliers(df, cfg.filter)
            xy = df[["ref_x", "ref_y"]].to_numpy(float) if len(df) else np.zeros((0, 2))
            kept = df["outlier"].to_numpy() == 0 if len(df) else np.zeros(0, bool)
            err = affine_errors(xy, df[["tgt_x", "tgt_y"]].to_numpy(float), truth) if len(df) else np.zeros(0)
            med = float(np.median(err[kept])) if kept.any() else float("nan")
            v = judge(info, xy[kept], xy, (opt.shape[1], opt.shape[0]), cfg.filter.ransac_threshold_px,
                      initial.details, initial.confident, initial.method)
            row.update(kept=int(kept.sum()), median_px=med, correct=bool(kept.sum() >= MIN_KEPT and med < TOL_PX),
                       registered_2px=bool(kept.sum() >= MIN_KEPT and med < 2.0), verdict=v.status,
                       reasons=v.reasons, warnings=v.warnings, measures=v.measures,
                       coarse_reasons=coarse_notes(initial.details, initial.confident, initial.method)[0],
                       ransac_threshold_px=cfg.filter.ransac_threshold_px)
        row["seconds"] = time.perf_counter() - t0
        return row


def camera_cases():
    opt = data.camera().astype(np.float64) / 255.0
    for rot, scale, shift in itertools.product([0, 5, 10, 15, 20], [0.9, 1.0, 1.1], [0, 50, 100, 150]):
        truth = similarity(rot, scale, (shift * 0.8, -shift * 0.6), np.array([256.0, 256.0]))
        sar, ok = warp(opt, truth, speckle_seed=1)
        yield f"camera/r{rot}_s{scale}_t{shift}", (opt, np.ones(opt.shape, bool), sar, ok, truth)


def visnir_cases(data_dir, categories, limit):
    for cat, folder, key in pair_keys(data_dir, categories, limit):
        yield f"{cat}/{key}", load_pair(folder, key)


REAL_TRANSFORMS_512 = [(0, 1.0, 100), (10, 1.1, 60), (-15, 0.9, 120), (20, 1.0, 40), (-6, 1.12, 150)]
REAL_TRANSFORMS_256 = [(8, 1.05, 25), (-12, 0.95, 40)]


def real_cases(data_dir, limit):
    import rasterio

    base = data_dir / "s1s2" / "sen1floods11"
    s2 = next(base.glob("*_S2Hand.tif"), None)
    if s2 is not None:
        with rasterio.open(s2) as src:
            opt = stretch(src.read([4, 3, 2]).astype(np.float64).mean(0))
        with rasterio.open(str(s2).replace("_S2Hand", "_S1Hand")) as src:
            sar = stretch(src.read(1).astype(np.float64))
        for rot, sc, sh in REAL_TRANSFORMS_512[:limit]:
            truth = similarity(rot, sc, (sh * 0.8, -sh * 0.6), np.array([256.0, 256.0]))
            s, ok = warp(sar, truth)
            yield f"sen1floods11/r{rot}_s{sc}_t{sh}", (opt, np.ones(opt.shape, bool), s, ok, truth)
    check = data_dir / "3mos" / "alignment_check.csv"
    if check.exists():
        with open(check) as fh:
            rows = [r for r in csv.DictReader(fh) if r["opt_tile"].startswith("SEN_") and r[list(r)[-1]] == "1"]
        seen = set()
        for r in rows:
            scene = r["opt_tile"].split("_")[1]
            if scene in seen or len(seen) >= (limit or 6):
                continue
            seen.add(scene)
            opt = io.imread(data_dir / "3mos" / r["opt_tile"]).astype(np.float64)
            opt = stretch(opt.mean(-1) if opt.ndim == 3 else opt)
            sar = io.imread(data_dir / "3mos" / r["sar_tile"]).astype(np.float64)
            sar = stretch(sar[..., 0] if sar.ndim == 3 else sar)
            # The tile's own residual (shift to apply to the SAR) is taken out first.
            sar = ndi.shift(sar, (float(r["cfog_dy"]), float(r["cfog_dx"])), order=1, mode="nearest")
            for rot, sc, sh in REAL_TRANSFORMS_256:
                truth = similarity(rot, sc, (sh * 0.8, -sh * 0.6), np.array([128.0, 128.0]))
                s, ok = warp(sar, truth)
                yield f"3mos/{r['opt_tile'][:-8]}/r{rot}_s{sc}_t{sh}", (opt, np.ones(opt.shape, bool), s, ok, truth)


def summarise(rows: list[dict]) -> dict:
    out = {"cases": len(rows), "captured": sum(r["captured"] for r in rows)}
    fine = [r for r in rows if "verdict" in r]
    if fine:
        out.update(
            correct=sum(r["correct"] for r in fine), registered_2px=sum(r["registered_2px"] for r in fine),
            verdict={s: sum(r["verdict"] == s for r in fine) for s in ("registered", "uncertain", "failed")},
            wrong=sum(not r["correct"] for r in fine),
            wrong_flagged=sum(not r["correct"] and r["verdict"] != "registered" for r in fine),
            correct_flagged=sum(r["correct"] and r["verdict"] != "registered" for r in fine))
    return out


def rejudge(path: Path) -> dict:
    """Re-decide the stored cases of a results file with the verdict's current thresholds (no rerun)."""
    results = json.loads(path.read_text())
    for res in results["sets"].values():
        for r in res["cases"]:
            if "measures" in r:
                v = decide(r["measures"], r["ransac_threshold_px"], r["coarse_reasons"], r["warnings"])
                r["verdict"] = v.status
                r["reasons"] = v.reasons if v.status != "failed" else r["reasons"]
        res["summary"] = summarise(res["cases"])
        print(json.dumps(res["summary"]))
    path.write_text(json.dumps(results, indent=1, default=str))
    return results


def baseline(module_path: Path, sets: list[str], data_dir: Path) -> dict:
    """Capture only (no fine stage) with another version of the coarse module, e.g. the one before a change:
    ``git show REV:geomatch/pipeline/coarse.py > old_coarse.py``. Same cases and ranges as the sets."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_coarse", module_path)
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old  # its dataclasses look their module up there
    spec.loader.exec_module(old)
    sources = {"camera": ("visnir", lambda: camera_cases()),
               "visnir": ("visnir", lambda: visnir_cases(data_dir, ["field", "forest"], None)),
               "visnir-default": ("default", lambda: visnir_cases(data_dir, ["field"], None)),
               "real": ("visnir", lambda: real_cases(data_dir, None))}
    out = {}
    for name in sets:
        pipeline, cases = sources[name]
        cfg = config.load(pipeline).coarse
        rows = []
        for key, (opt, ok, sar, sok, truth) in cases():
            init = old.estimate_initial(opt, ok, sar, sok, cfg, 1.0)
            err = capture_error(init.affine, truth, opt.shape)
            rows.append({"case": key, "capture_px": err, "captured": err < 12.0, "coarse": init.method})
        out[name] = {"captured": sum(r["captured"] for r in rows), "cases": rows}
        print(name, out[name]["captured"], "of", len(rows), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--sets", nargs="+", default=["camera", "visnir", "visnir-default", "real"])
    ap.add_argument("--limit", type=int, default=None, help="first N cases per category")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--rejudge", type=Path, default=None, help="re-decide a results file's verdicts, run nothing")
    ap.add_argument("--baseline-coarse", type=Path, default=None,
                    help="capture only, with this coarse.py (e.g. the version before a change)")
    args = ap.parse_args(argv)
    if args.baseline_coarse:
        result = baseline(args.baseline_coarse, args.sets, args.data)
        if args.out:
            args.out.write_text(json.dumps({"baseline": str(args.baseline_coarse), "sets": result}, indent=1))
        return 0
    if args.rejudge:
        rejudge(args.rejudge)
        return 0
    visnir = Runner(config.load("visnir"))
    results = {}
    for name in args.sets:
        if name == "camera":
            runner, cases, coarse_only = visnir, camera_cases(), True
        elif name == "visnir":
            runner, cases, coarse_only = visnir, visnir_cases(args.data, ["field", "forest"], args.limit), False
        elif name == "visnir-default":
            runner = Runner(config.load("default", {"match.plugin": "ncc", "match.weights": "auto",
                                                    "detect.cell_size": 40}))
            cases, coarse_only = visnir_cases(args.data, ["field"], args.limit), False
        elif name == "real":
            runner, cases, coarse_only = visnir, real_cases(args.data, args.limit), False
        else:
            ap.error(f"unknown set {name!r}")
        rows = []
        for key, pair in cases:
            row = {"case": key, **runner.case(*pair, coarse_only=coarse_only)}
            rows.append(row)
            print(f"{name} {key}: capture {row['capture_px']:.1f} px, kept {row.get('kept', '-')}, median "
                  f"{row.get('median_px', float('nan')):.2f} px, verdict {row.get('verdict', '-')} "
                  f"({row['seconds']:.1f} s) {'; '.join(row.get('reasons', []))}", flush=True)
        results[name] = {"summary": summarise(rows), "cases": rows}
        print(name, json.dumps(results[name]["summary"]), flush=True)
        if args.out:
            args.out.write_text(json.dumps({"tol_px": TOL_PX, "sets": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
