"""Factories for tests: tiny GeoTIFFs in tmp_path with known grids, nodata and shifts.

The scene is a continuous function of OPTICAL pixel coordinates (a sum of Gaussian blobs), so any
raster on any grid samples the same ground truth: the optical raster samples it at its pixel centres,
the SAR twin at the optical position of each of its pixel centres minus ``shift``. Hence the optical
point p (optical pixels) truly appears in the SAR at optical-grid position p + shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from geomatch.pipeline.affinetools import apply

OPTICAL_CRS = "EPSG:32631"
OPTICAL_ORIGIN = (400000.0, 5100000.0)


def write_raster(path, array, transform=None, crs=None, nodata=None, dtype=None) -> Path:
    """Write a (h, w) or (bands, h, w) array as a GeoTIFF; ``transform``/``crs`` None: ungeoreferenced."""
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    dtype = np.dtype(dtype or arr.dtype)
    profile = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
               "dtype": dtype.name}
    if transform is not None:
        profile["transform"] = transform
    if crs is not None:
        profile["crs"] = CRS.from_user_input(crs)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr.astype(dtype))
    return Path(path)


@dataclass(frozen=True)
class Scene:
    """Gaussian blobs in optical pixel coordinates; values roughly in [0, 1]."""

    cx: np.ndarray
    cy: np.ndarray
    sigma: np.ndarray
    amp: np.ndarray

    @classmethod
    def random(cls, width: int, height: int, n: int = 160, seed: int = 0) -> Scene:
        rng = np.random.default_rng(seed)
        return cls(rng.uniform(-10, width + 10, n), rng.uniform(-10, height + 10, n), rng.uniform(2.0, 6.0, n),
                   rng.uniform(0.3, 1.0, n))

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.full(np.shape(u), 0.1)
        for cx, cy, s, a in zip(self.cx, self.cy, self.sigma, self.amp, strict=True):
            out += a * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * s * s))
        return np.tanh(out)  # smooth saturation: no plateau of equal values


@dataclass(frozen=True)
class SyntheticPair:
    optical: Path
    sar: Path
    shift: tuple[float, float]  # optical pixels: optical p appears in the warped SAR at p + shift
    optical_transform: Affine
    optical_crs: str
    sar_transform: Affine
    sar_crs: str
    scene: Scene


def optical_transform(res: float = 10.0) -> Affine:
    return from_origin(*OPTICAL_ORIGIN, res, res)


def make_pair(tmp_path, shift=(0.0, 0.0), sar_crs=None, sar_res=None, size=(120, 160), optical_res=10.0,
              optical_bands=3, sar_db=False, speckle_looks=8.0, seed=0, sar_margin=0.0) -> SyntheticPair:
    """A textured optical raster and a speckled SAR twin (linear intensity, or dB with ``sar_db``).

    ``size`` is the optical (height, width). ``sar_crs`` defaults to the optical CRS; ``sar_res`` is the
    SAR pixel size in its own CRS units (default: the optical resolution, converted to degrees for a
    geographic CRS). The SAR grid covers the optical footprint grown by ``sar_margin`` optical pixels.
    """
    tmp_path = Path(tmp_path)
    h, w = size
    scene = Scene.random(w, h, seed=seed)
    rng = np.random.default_rng(seed + 1)
    t_opt = optical_transform(optical_res)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    base = scene(jj, ii)
    bands = [np.clip(base * (0.8 + 0.1 * b) + 0.02 * b, 0, 1) for b in range(optical_bands)]
    optical = write_raster(tmp_path / "optical.tif", (np.stack(bands) * 10000).astype(np.uint16), t_opt,
                           OPTICAL_CRS)

    sar_crs = sar_crs or OPTICAL_CRS
    left, top = apply(t_opt, -sar_margin, -sar_margin)
    right, bottom = apply(t_opt, w + sar_margin, h + sar_margin)
    bounds = transform_bounds(OPTICAL_CRS, sar_crs, left, bottom, right, top, densify_pts=21)
    if sar_res is None:
        sar_res = optical_res if not CRS.from_user_input(sar_crs).is_geographic else optical_res / 111320.0
    sw = int(np.ceil((bounds[2] - bounds[0]) / sar_res))
    sh = int(np.ceil((bounds[3] - bounds[1]) / sar_res))
    t_sar = from_origin(bounds[0], bounds[3], sar_res, sar_res)
    sj, si = np.meshgrid(np.arange(sw) + 0.5, np.arange(sh) + 0.5)
    sx, sy = apply(t_sar, sj.ravel(), si.ravel())
    if sar_crs != OPTICAL_CRS:
        sx, sy = warp_transform(sar_crs, OPTICAL_CRS, sx, sy)
    u, v = apply(~t_opt, sx, sy)
    truth = scene(np.asarray(u) - shift[0], np.asarray(v) - shift[1]).reshape(sh, sw)
    # Cross-modal: bright optical is dark SAR. Backscatter spans -20..-5 dB, so linear intensity is
    # heavy-tailed like real SAR.
    reflectivity = 10.0 ** ((-20.0 + 15.0 * (1.0 - truth)) / 10.0)
    speckle = rng.gamma(speckle_looks, 1.0 / speckle_looks, size=reflectivity.shape) if speckle_looks else 1.0
    intensity = (reflectivity * speckle).astype(np.float32)
    data = 10 * np.log10(intensity) if sar_db else intensity
    sar = write_raster(tmp_path / "sar.tif", data.astype(np.float32), t_sar, sar_crs)
    return SyntheticPair(optical, sar, tuple(map(float, shift)), t_opt, OPTICAL_CRS, t_sar, sar_crs, scene)


def make_tiepoints(n: int = 12, transform: Affine | None = None, seed: int = 0, outliers: int = 2,
                   shift_px=(1.5, -2.0)) -> pd.DataFrame:
    """A schema-complete tie-point table (before add_shift_columns) on a 10 m UTM grid."""
    rng = np.random.default_rng(seed)
    transform = transform or optical_transform()
    ref_col = rng.uniform(10, 150, n)
    ref_row = rng.uniform(10, 110, n)
    ref_x, ref_y = apply(transform, ref_col, ref_row)
    tgt_x, tgt_y = apply(transform, ref_col + shift_px[0], ref_row + shift_px[1])
    flags = np.zeros(n, np.int16)
    flags[:outliers] = 1
    return pd.DataFrame({
        "point_id": np.arange(1, n + 1), "ref_col": ref_col, "ref_row": ref_row, "ref_x": ref_x, "ref_y": ref_y,
        "tgt_col": ref_col + shift_px[0], "tgt_row": ref_row + shift_px[1], "tgt_x": tgt_x, "tgt_y": tgt_y,
        "shift_x": 0.0, "shift_y": 0.0, "shift_abs": 0.0, "shift_angle": 0.0,
        "score": rng.uniform(0.5, 1.0, n), "ratio": rng.uniform(0.1, 0.9, n), "response": rng.uniform(0, 1, n),
        "tile_id": np.arange(n) % 3, "outlier_score": flags, "outlier_local": np.zeros(n, np.int16),
        "outlier_model": flags, "outlier": flags, "matcher": "ncc", "weights": "none",
    })
