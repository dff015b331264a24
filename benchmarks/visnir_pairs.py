"""VIS-NIR field/forest pairs: coarse stage + NCC search + filters against the known affine.

Usage:  python benchmarks/visnir_pairs.py [--data DIR] [--categories field forest] [--out results.json]

Each pair: the VIS image (RGB -> grey, the "optical" side) is registered onto the NIR image (the warped
reference, the "SAR" side). Ground truth: the pair's 2x3 matrix M maps a VIS pixel p to the NIR pixel M p in
pixel-index coordinates (checked: pixel centres on integers, as OpenCV warps); it is converted here to the
GDAL pixel-centre convention the pipeline uses. Per pair it reports the capture (worst error of the coarse
transform over the image), the kept points and their median error, and whether the pair counts as registered:
at least ``MIN_KEPT`` kept points with a median error under 2 px.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage import color, io

from geomatch.config import CoarseConfig, DetectConfig, FilterConfig, MatchConfig
from geomatch.models.runtime import build_scorer
from geomatch.pipeline.coarse import estimate_initial
from geomatch.pipeline.filters import flag_outliers
from geomatch.pipeline.search import match_points
from geomatch_plugins.detectors.corners import Harris

MIN_KEPT = 6
PATCH = 64
COARSE = CoarseConfig(max_shift_px=160.0, max_rotation_deg=20.0, scale_range=(0.85, 1.15), downsample=4)
DETECT = DetectConfig(plugin="harris", max_points_per_tile=400, cell_size=40, min_contrast=0.02)
MATCH = MatchConfig(plugin="ncc", search_radius=12.0, coarse_step=4)
FILTER = FilterConfig(min_score=0.6, max_ratio=0.95, local_radius_px=150.0, local_max_dev_px=3.0,
                      model="affine", ransac_threshold_px=2.0)


def _grey(path: Path) -> np.ndarray:
    a = io.imread(path).astype(np.float32) / 255.0
    return color.rgb2gray(a).astype(np.float32) if a.ndim == 3 else a


def nodata_border(img: np.ndarray, level: float = 0.03, grow: int = 3) -> np.ndarray:
    """Valid mask: dark regions connected to the image edge (the warp's fill, JPEG-blurred) are nodata."""
    dark, _ = ndi.label(img < level)
    edge = np.unique(np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]]))
    fill = np.isin(dark, edge[edge > 0])
    return ~ndi.binary_dilation(fill, iterations=grow)


class VisNirPair(NamedTuple):
    vis: np.ndarray  # grey, float32 in [0, 1]
    vis_ok: np.ndarray  # valid mask
    nir: np.ndarray
    nir_ok: np.ndarray
    truth: np.ndarray  # 2x3 affine VIS -> NIR pixel, GDAL pixel-centre coordinates


class Registration(NamedTuple):
    points: object  # DataFrame of matches, outliers flagged
    model_info: dict  # the filter's model fit
    initial: object  # the coarse stage's estimate
    timings: dict  # seconds per stage


def load_pair(folder: Path, key: str) -> VisNirPair:
    """The pair ``key`` of ``folder`` with its true affine."""
    vis = _grey(folder / f"{key}_rgb.jpg")
    nir = _grey(folder / f"{key}_nir.jpg")
    m = np.load(folder / f"{key}_nir.npy").astype(np.float64)
    lin, t = m[:, :2], m[:, 2]
    truth = np.hstack([lin, (t + 0.5 - lin @ [0.5, 0.5])[:, None]])
    return VisNirPair(vis, np.ones(vis.shape, bool), nir, nodata_border(nir), truth)


def default_data() -> Path:
    return Path(os.environ.get("GEOMATCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def register(vis, vis_ok, nir, nir_ok, coarse=COARSE, detect=DETECT, match=MATCH, filt=FILTER,
             scorer=None) -> Registration:
    """The matching half of the pipeline on one in-memory pair.

    ``scorer``: any :func:`build_scorer` result; default NCC at ``PATCH`` pixels.
    """
    if scorer is None:
        scorer = build_scorer("ncc", device="cpu", batch_size=match.batch_size, params={"patch_size": PATCH})
    t = {}
    t0 = time.perf_counter()
    initial = estimate_initial(vis, vis_ok, nir, nir_ok, coarse, 1.0)
    t["coarse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    kps = Harris(**detect.params).detect(vis, vis_ok, detect.max_points_per_tile, detect.cell_size,
                                         detect.min_contrast, scorer.patch_size // 2)
    t["detect"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    df = match_points(vis, nir, vis_ok, nir_ok, kps, initial.affine, scorer, match)
    t["match"] = time.perf_counter() - t0
    df, info = flag_outliers(df, filt)
    return Registration(df, info, initial, t)


def affine_errors(ref: np.ndarray, tgt: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Distance of each (n, 2) target point from where the true affine puts its (n, 2) reference point."""
    return np.hypot(*(ref @ truth[:, :2].T + truth[:, 2] - tgt).T)


def errors(df, truth: np.ndarray) -> np.ndarray:
    return affine_errors(df[["ref_x", "ref_y"]].to_numpy(float), df[["tgt_x", "tgt_y"]].to_numpy(float), truth)


def pair_keys(data: Path, categories, limit: int | None = None):
    """(category, folder, key) of each VIS-NIR pair, the first ``limit`` per category."""
    for cat in categories:
        folder = data / "vis-nir" / cat
        for key in sorted(p.name[:4] for p in folder.glob("*_rgb.jpg"))[:limit]:
            yield cat, folder, key


def capture_error(affine: np.ndarray, truth: np.ndarray, shape) -> float:
    """Worst distance between the coarse transform and the truth over a 9 x 9 grid spanning the image."""
    h, w = shape
    g = np.stack(np.meshgrid(np.linspace(0, w, 9), np.linspace(0, h, 9)), -1).reshape(-1, 2)
    return float(np.hypot(*(g @ (affine[:, :2] - truth[:, :2]).T + affine[:, 2] - truth[:, 2]).T).max())


def run(data: Path, categories, limit: int | None = None, **overrides) -> list[dict]:
    rows = []
    for cat, folder, key in pair_keys(data, categories, limit):
        vis, vis_ok, nir, nir_ok, truth = load_pair(folder, key)
        df, info, initial, t = register(vis, vis_ok, nir, nir_ok, **overrides)
        err = errors(df, truth)
        kept = df["outlier"].to_numpy() == 0 if len(df) else np.zeros(0, bool)
        med = float(np.median(err[kept])) if kept.any() else float("nan")
        row = {
            "pair": f"{cat}/{key}", "capture_px": capture_error(initial.affine, truth, vis.shape),
            "coarse": initial.method, "found": int(len(df)), "kept": int(kept.sum()), "median_px": med,
            "within_1px": float((err[kept] < 1).mean()) if kept.any() else 0.0,
            "registered": bool(kept.sum() >= MIN_KEPT and med < 2.0),
            "n_evals_mean": float(df["n_evals"].mean()) if len(df) else 0.0,
            "rmse_model_px": info.get("rmse_px"), "seconds": t,
        }
        rows.append(row)
        print(f"{row['pair']}: capture {row['capture_px']:.1f} px, found {row['found']}, kept {row['kept']}, "
              f"median {med:.2f} px, registered {row['registered']}, evals/kp {row['n_evals_mean']:.0f}, "
              f"coarse {t['coarse']:.1f}s match {t['match']:.1f}s", flush=True)
    return rows


def summarise(rows: list[dict]) -> dict:
    """Per category and overall; capture and evaluation counts only where the rows carry them."""
    out = {}
    for cat in sorted({r["pair"].split("/")[0] for r in rows}) + ["all"]:
        sel = [r for r in rows if cat == "all" or r["pair"].startswith(cat + "/")]
        reg = [r for r in sel if r["registered"]]
        out[cat] = {
            "pairs": len(sel), "registered": len(reg),
            "median_px_registered": float(np.median([r["median_px"] for r in reg])) if reg else None,
            "kept_median": float(np.median([r["kept"] for r in sel])),
        }
        if all("capture_px" in r for r in sel):
            out[cat]["captured_lt_12px"] = sum(r["capture_px"] < 12 for r in sel)
            out[cat]["n_evals_per_keypoint"] = float(np.mean([r["n_evals_mean"] for r in sel]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--categories", nargs="+", default=["field", "forest"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--search-radius", type=float, default=MATCH.search_radius)
    ap.add_argument("--matcher", default="ncc", help="any matcher plugin, scored through build_scorer")
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--min-score", type=float, default=FILTER.min_score)
    ap.add_argument("--max-points", type=int, default=DETECT.max_points_per_tile)
    ap.add_argument("--limit", type=int, default=None, help="first N pairs per category")
    args = ap.parse_args(argv)
    if not (args.data / "vis-nir").is_dir():
        print(f"no vis-nir data under {args.data}: set GEOMATCH_DATA or --data", file=sys.stderr)
        return 2
    scorer = None
    if args.matcher != "ncc":
        scorer = build_scorer(args.matcher, args.weights, "cpu")
    rows = run(args.data, args.categories, limit=args.limit, match=replace(MATCH, search_radius=args.search_radius),
               filt=replace(FILTER, min_score=args.min_score),
               detect=replace(DETECT, max_points_per_tile=args.max_points), scorer=scorer)
    summary = summarise(rows)
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "pairs": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
