"""SIFT + RANSAC baseline on the VIS-NIR field/forest pairs, scored exactly as benchmarks/visnir_pairs.py.

Usage:  python benchmarks/visnir_sift.py [--data DIR] [--out benchmarks/visnir_pairs_sift.json]

SIFT (OpenCV's by default, or scikit-image's) on the grey VIS and the NIR image, nearest neighbours with
Lowe's ratio test, then RANSAC on an affine model (3 px threshold); the RANSAC inliers are the kept points.
A pair counts as registered under the same rule as geomatch's run (at least MIN_KEPT kept points with a median
error under 2 px against the known affine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from skimage.feature import SIFT, match_descriptors
from skimage.measure import ransac
from skimage.transform import AffineTransform, rescale
from visnir_pairs import MIN_KEPT, affine_errors, default_data, load_pair, pair_keys, summarise

RATIO = 0.8  # Lowe's ratio test


def opencv_points(vis, nir):
    """Candidate pairs from OpenCV's SIFT (the common reference implementation) at full resolution."""
    import cv2

    sift = cv2.SIFT_create()
    (k1, d1), (k2, d2) = (sift.detectAndCompute((img * 255).astype(np.uint8), None) for img in (vis, nir))
    good = [m for m, n in cv2.BFMatcher().knnMatch(d1, d2, k=2) if m.distance < RATIO * n.distance]
    # OpenCV puts pixel centres on integers; GDAL, and the ground truth here, on .5.
    return (np.float64([k1[g.queryIdx].pt for g in good]).reshape(-1, 2) + 0.5,
            np.float64([k2[g.trainIdx].pt for g in good]).reshape(-1, 2) + 0.5)


def skimage_points(vis, nir, max_side=1000):
    """Candidate pairs from scikit-image's SIFT (no extra install; minutes per pair at full size)."""
    f = min(1.0, max_side / max(vis.shape))
    pts, desc = [], []
    for img in (vis, nir):
        sift = SIFT()
        sift.detect_and_extract(rescale(img, f, anti_aliasing=True) if f < 1 else img)
        pts.append((sift.keypoints[:, ::-1] + 0.5) / f)  # (row, col), centres on integers -> GDAL xy
        desc.append(sift.descriptors)
    matches = match_descriptors(desc[0], desc[1], max_ratio=RATIO, cross_check=True)
    return pts[0][matches[:, 0]], pts[1][matches[:, 1]]


def sift_register(vis, nir, impl="opencv", threshold_px=3.0, seed=0):
    """Kept point pairs ((n, 2) VIS xy, (n, 2) NIR xy): the RANSAC affine inliers among SIFT matches."""
    a, b = (opencv_points if impl == "opencv" else skimage_points)(vis, nir)
    if len(a) < 3:
        return a[:0], b[:0]
    _, inliers = ransac((a, b), AffineTransform, min_samples=3, residual_threshold=threshold_px,
                        max_trials=2000, rng=seed)
    if inliers is None:
        return a[:0], b[:0]
    return a[inliers], b[inliers]


def run(data: Path, categories, limit=None, impl="opencv") -> list[dict]:
    rows = []
    for cat, folder, key in pair_keys(data, categories, limit):
        vis, _, nir, _, truth = load_pair(folder, key)
        t0 = time.perf_counter()
        a, b = sift_register(vis, nir, impl)
        err = affine_errors(a, b, truth)
        med = float(np.median(err)) if len(err) else float("nan")
        row = {"pair": f"{cat}/{key}", "kept": int(len(err)), "median_px": med,
               "within_1px": float((err < 1).mean()) if len(err) else 0.0,
               "registered": bool(len(err) >= MIN_KEPT and med < 2.0),
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"{row['pair']}: kept {row['kept']}, median {med:.2f} px, registered {row['registered']}",
              flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--categories", nargs="+", default=["field", "forest"])
    ap.add_argument("--limit", type=int, default=None, help="first N pairs per category")
    ap.add_argument("--impl", choices=["opencv", "skimage"], default="opencv",
                    help="opencv needs `pip install opencv-python-headless` (not a geomatch dependency)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.data / "vis-nir").is_dir():
        print(f"no vis-nir data under {args.data}: set GEOMATCH_DATA or --data", file=sys.stderr)
        return 2
    rows = run(args.data, args.categories, args.limit, args.impl)
    summary = {"impl": args.impl, **summarise(rows)}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "pairs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
