"""The GeFolki accuracy fixture, for the tests and the benchmarks (not part of the installed package).

GeFolki (ONERA EvalGeFolki): Sentinel-2 against Sentinel-1 warped by a reference displacement field, so the
true correspondence of every pixel is known exactly. Built from the shared data folder (GEOMATCH_DATA), never
shipped. Importable as ``gefolki_fixture`` from the benchmark scripts (their own folder) and from the tests
(``pythonpath = benchmarks`` in setup.cfg's pytest section). The VIS-NIR pairs' truth is in visnir_pairs.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class GefolkiFixture:
    optical: Path
    sar: Path
    flow: np.ndarray  # (rows, cols, 2): displacement (x, y) in pixels at each pixel


def _fixed_point_target(x, y, flow_at):
    """q with q - f(q) = p (the warp sampled S1 at q - f(q)), by fixed-point iteration."""
    qx, qy = np.asarray(x, float).copy(), np.asarray(y, float).copy()
    for _ in range(30):
        fx, fy = flow_at(qx, qy)
        qx, qy = x + fx, y + fy
    return qx, qy


def _bilinear(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    # Pixel-centre coordinates -> array indices.
    return map_coordinates(field, [np.asarray(y) - 0.5, np.asarray(x) - 0.5], order=1, mode="nearest")


def build_gefolki(data_dir: Path, out_dir: Path) -> GefolkiFixture:
    """Write S2 (optical) and S1 warped by the reference field (SAR) as GeoTIFFs in ``out_dir``.

    The warp samples S1 at q - f(q) for every output pixel q (component 0 of the field is x, 1 is y),
    so an optical point p truly lies at the q that solves q - f(q) = p.
    """
    import rasterio
    import tifffile
    from scipy.ndimage import map_coordinates

    src_dir = Path(data_dir) / "gefolki"
    flow = tifffile.imread(src_dir / "Flow_patch11.tif").astype(np.float64)
    out_dir.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src_dir / "S1_patch11.tif") as src:
        s1 = src.read().astype(np.float32)
        profile = src.profile
    h, w = s1.shape[1:]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    warped = np.stack([
        map_coordinates(b, [rows - flow[..., 1], cols - flow[..., 0]], order=1, mode="constant", cval=np.nan)
        for b in s1
    ]).astype(np.float32)
    profile.update(nodata=np.nan, dtype="float32")
    sar = out_dir / "S1_patch11_warped.tif"
    with rasterio.open(sar, "w", **profile) as dst:
        dst.write(warped)
    return GefolkiFixture(src_dir / "S2_patch11.tif", sar, flow)


def gefolki_errors(fix: GefolkiFixture, ref_col, ref_row, tgt_col, tgt_row) -> np.ndarray:
    """Error in pixels of matched targets against the exact correspondence."""
    ref_col, ref_row = np.asarray(ref_col, float), np.asarray(ref_row, float)
    qx, qy = _fixed_point_target(
        ref_col, ref_row, lambda x, y: (_bilinear(fix.flow[..., 0], x, y), _bilinear(fix.flow[..., 1], x, y))
    )
    return np.hypot(np.asarray(tgt_col) - qx, np.asarray(tgt_row) - qy)


def error_stats(err: np.ndarray) -> dict:
    """Count, median, RMSE and the shares within 1 and 3 px of point errors (None fields when there are none)."""
    err = np.asarray(err, float)
    if err.size == 0:
        return {"kept": 0, "median_px": None, "rmse_px": None, "within_1px": None, "within_3px": None}
    return {
        "kept": int(err.size),
        "median_px": float(np.median(err)),
        "rmse_px": float(np.sqrt(np.mean(err**2))),
        "within_1px": float(np.mean(err < 1.0)),
        "within_3px": float(np.mean(err < 3.0)),
    }
