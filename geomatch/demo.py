"""A built-in demo pair: a real optical photograph with a SIMULATED SAR counterpart.

The optical image is the left view of scikit-image's ``stereo_motorcycle`` (a real photograph shipped
inside the package, so nothing is downloaded). The SAR side is simulated: a nonlinear radiometry
dominated by bright edges (a crude stand-in for double bounce; real SAR and optical brightness are far
less related), multiplicative gamma speckle (4 looks), stored as linear intensity, and geometrically
displaced by a known, spatially varying field: a constant offset plus a smooth sinusoidal component.
Both rasters are georeferenced on a 10 m UTM grid (EPSG:32631), the SAR with a nodata border, so the
demo exercises the same code paths as real data and its error can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CRS = "EPSG:32631"
PIXEL = 10.0
ORIGIN = (440000.0, 4900000.0)
OFFSET = (3.3, -2.1)  # constant part of the displacement, pixels (x, y)
WAVE = 1.2  # amplitude of the smooth varying part, pixels


@dataclass(frozen=True)
class DemoPair:
    optical: Path
    sar: Path


def displacement(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Known displacement (dx, dy) in pixels at optical pixel-centre coordinates (x, y)."""
    h, w = shape
    dx = OFFSET[0] + WAVE * np.sin(2 * np.pi * y / h)
    dy = OFFSET[1] + WAVE * np.cos(2 * np.pi * x / w)
    return dx, dy


def true_target(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Where optical point (x, y) lies in the simulated SAR: q = p + d(q), solved by fixed-point iteration.

    The SAR was made by sampling the optical at q - d(q), so the exact correspondence of p is the q
    that maps back onto it.
    """
    qx, qy = np.asarray(x, float).copy(), np.asarray(y, float).copy()
    for _ in range(30):
        dx, dy = displacement(qx, qy, shape)
        qx, qy = x + dx, y + dy
    return qx, qy


def _optical() -> np.ndarray:
    from skimage import data
    from skimage.color import rgb2gray

    left, _right, _disparity = data.stereo_motorcycle()  # bundled with scikit-image, no download
    return rgb2gray(left).astype(np.float32)


def _simulate_sar(optical: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter, map_coordinates, sobel

    h, w = optical.shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = displacement(cols + 0.5, rows + 0.5, (h, w))
    # SAR(q) = OPT(q - d(q)): sample the optical at the displaced position (array index = centre - 0.5).
    warped = map_coordinates(optical, [rows - dy, cols - dx], order=1, mode="reflect")
    smooth = gaussian_filter(warped, 1.0)
    edges = np.hypot(sobel(smooth, 0), sobel(smooth, 1))
    edges /= edges.max() + 1e-9
    # SAR-like radiometry: bright edges (double bounce) over a compressed, nonlinear reflectance.
    backscatter = 0.1 + 0.6 * smooth**1.5 + 0.8 * edges**0.7
    speckle = rng.gamma(shape=4.0, scale=1.0 / 4.0, size=backscatter.shape)
    return (backscatter * speckle).astype(np.float32)  # linear intensity


def make_demo_pair(out_dir: Path, seed: int = 7) -> DemoPair:
    """Write the optical GeoTIFF and its simulated SAR twin into ``out_dir``."""
    import rasterio
    from rasterio.transform import from_origin

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    opt = _optical()
    sar = _simulate_sar(opt, rng)
    h, w = opt.shape
    nodata = -9999.0
    sar[:, -20:] = nodata  # a swath edge without data
    transform = from_origin(ORIGIN[0], ORIGIN[1], PIXEL, PIXEL)
    pair = DemoPair(out_dir / "optical.tif", out_dir / "sar_SIMULATED.tif")
    profile = dict(driver="GTiff", width=w, height=h, count=1, crs=CRS, transform=transform, dtype="float32")
    with rasterio.open(pair.optical, "w", **profile) as dst:
        dst.write(opt, 1)
        dst.update_tags(source="scikit-image stereo_motorcycle left view (real photograph)")
    with rasterio.open(pair.sar, "w", nodata=nodata, **profile) as dst:
        dst.write(sar, 1)
        dst.update_tags(SIMULATED="yes", description="SIMULATED SAR intensity with a known displacement")
    return pair


def errors_against_truth(gdf, shape: tuple[int, int]) -> np.ndarray:
    """Per-point error in pixels between the matched SAR position and the known displacement."""
    qx, qy = true_target(gdf["ref_col"].to_numpy(), gdf["ref_row"].to_numpy(), shape)
    # The SAR grid equals the optical grid here, so target pixel coordinates compare directly.
    return np.hypot(gdf["tgt_col"].to_numpy() - qx, gdf["tgt_row"].to_numpy() - qy)
