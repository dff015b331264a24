"""Where things are: the optical grid, the SAR's own pixels, map space, the overlap and the pixel sizes.

The optical raster's pixel grid is the reference: every window, overview and coordinate handed to the
rest of the pipeline is on that grid (GDAL convention: (0, 0) is the upper-left corner of the
upper-left pixel, the centre of pixel (i, j) is (j + 0.5, i + 0.5) as (col, row)). The SAR may be in
another CRS and at another pixel size; its pixels are reached through map space.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geomatch.errors import RasterError
from geomatch.pipeline.affinetools import apply, compose
from geomatch.pipeline.raster.sources import Source, crs_label

_local = threading.local()  # pyproj transformers are not thread-safe: one cache per thread


def transformer(src_crs: CRS, dst_crs: CRS):
    """This thread's pyproj transformer between two CRS (x, y order)."""
    from pyproj import Transformer

    key = (src_crs.to_wkt(), dst_crs.to_wkt())
    cache = getattr(_local, "transformers", None)
    if cache is None:
        cache = _local.transformers = {}
    if key not in cache:
        cache[key] = Transformer.from_crs(key[0], key[1], always_xy=True)
    return cache[key]


@dataclass(frozen=True)
class Grid:
    """The optical raster's grid: everything between stages is in its pixel coordinates."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    def window_transform(self, window: Window) -> Affine:
        return compose(self.transform, Affine.translation(window.col_off, window.row_off))


def integer_offset(src: Source, dst_transform: Affine, dst_crs: CRS | None) -> tuple[int, int] | None:
    """Offset of the destination grid in the source's pixels when a plain windowed read is exact."""
    if src.crs != dst_crs and not (src.crs is None and dst_crs is None):
        return None
    m = compose(~src.transform, dst_transform)
    if abs(m.a - 1) > 1e-9 or abs(m.e - 1) > 1e-9 or abs(m.b) > 1e-9 or abs(m.d) > 1e-9:
        return None
    c, r = round(m.c), round(m.f)
    if abs(m.c - c) > 1e-6 or abs(m.f - r) > 1e-6:
        return None
    return int(c), int(r)


def _det_scale(m: Affine) -> float:
    return math.sqrt(abs(m.a * m.e - m.b * m.d))


class PairGeometry:
    """Coordinate maps between the two rasters, their overlap and their pixel sizes.

    ``overlap`` is an integer ``Window`` on the optical grid, clipped to it, covering only whole optical
    pixels inside the SAR's footprint. ``optical_res`` and ``sar_res`` are pixel sizes in map units of the
    optical CRS (the SAR's measured at the overlap centre, so approximate across CRSs), ``optical_res_m``
    metres per optical pixel (geodesic for a geographic CRS; None without a CRS) and
    ``sar_to_optical_scale`` optical pixels per SAR pixel (2.0 for 20 m SAR on 10 m optical).
    """

    def __init__(self, optical: Source, sar: Source, min_overlap_px: int):
        self.grid = Grid(optical.crs, optical.transform, optical.width, optical.height)
        self._sar = sar
        self.overlap = self._compute_overlap(optical, min_overlap_px)
        t = self.grid.transform
        self.optical_res = _det_scale(t)
        cc = self.overlap.col_off + self.overlap.width / 2
        cr = self.overlap.row_off + self.overlap.height / 2
        sc, sr = self.sar_pixel(np.array([cc]), np.array([cr]))
        pc, pr = self.optical_pixel(sc + np.array([0.0, 1.0, 0.0]), sr + np.array([0.0, 0.0, 1.0]))
        jac = np.array([[pc[1] - pc[0], pc[2] - pc[0]], [pr[1] - pr[0], pr[2] - pr[0]]])
        self.sar_to_optical_scale = float(math.sqrt(abs(np.linalg.det(jac))))
        self.sar_res = self.sar_to_optical_scale * self.optical_res
        self.optical_res_m = self._metres_per_pixel(cc, cr)

    def _compute_overlap(self, optical: Source, min_overlap_px: int) -> Window:
        s = self._sar
        t = np.linspace(0.0, 1.0, 65)
        edge_c = np.concatenate([t * s.width, np.full_like(t, s.width), t[::-1] * s.width, np.zeros_like(t)])
        edge_r = np.concatenate([np.zeros_like(t), t * s.height, np.full_like(t, s.height), t[::-1] * s.height])
        with np.errstate(invalid="ignore"):
            c, r = self.optical_pixel(edge_c, edge_r)
        ok = np.isfinite(c) & np.isfinite(r)
        where = f"{optical.path} ({crs_label(optical.crs)}) and {s.path} ({crs_label(s.crs)})"
        if not ok.any():
            raise RasterError(f"{where} do not overlap (the SAR footprint is not representable in the optical CRS); "
                              "check both files' georeferencing")
        c0 = max(0, math.ceil(c[ok].min() - 1e-6))
        r0 = max(0, math.ceil(r[ok].min() - 1e-6))
        c1 = min(optical.width, math.floor(c[ok].max() + 1e-6))
        r1 = min(optical.height, math.floor(r[ok].max() + 1e-6))
        if c1 <= c0 or r1 <= r0:
            raise RasterError(f"{where} do not overlap; check that they show the same place and that both CRS are "
                              "right")
        w, h = c1 - c0, r1 - r0
        if w < min_overlap_px or h < min_overlap_px:
            raise RasterError(
                f"{where} overlap by only {w}x{h} optical pixels, less than pair.min_overlap_px = {min_overlap_px}; "
                "use rasters that overlap more or lower pair.min_overlap_px"
            )
        return Window(c0, r0, w, h)

    def _metres_per_pixel(self, col: float, row: float) -> float | None:
        crs = self.grid.crs
        if crs is None:
            return None
        if crs.is_geographic:
            from pyproj import Geod

            x, y = self.to_map(np.array([col, col + 1, col]), np.array([row, row, row + 1]))
            geod = Geod(ellps="WGS84")
            _, _, dx = geod.inv(x[0], y[0], x[1], y[1])
            _, _, dy = geod.inv(x[0], y[0], x[2], y[2])
            return float(math.sqrt(abs(dx * dy)))
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:  # a CRS whose units GDAL cannot name: assume metres
            factor = 1.0
        return self.optical_res * factor

    # -- coordinate maps --------------------------------------------------------------------------

    def source_pixel(self, src: Source, x, y):
        """Map x, y in the optical CRS -> ``src``'s own pixel coordinates."""
        if src.crs is not None and self.grid.crs is not None and src.crs != self.grid.crs:
            x, y = transformer(self.grid.crs, src.crs).transform(x, y)
        return apply(~src.transform, x, y)

    def to_map(self, cols, rows):
        """Optical-grid pixel coordinates (continuous, GDAL convention) -> map x, y in the optical CRS."""
        return apply(self.grid.transform, cols, rows)

    def from_map(self, x, y):
        """Map x, y in the optical CRS -> optical-grid pixel coordinates."""
        return apply(~self.grid.transform, x, y)

    def sar_pixel(self, cols, rows):
        """Optical-grid pixel coordinates -> the SAR raster's own pixel coordinates (through map space)."""
        return self.source_pixel(self._sar, *self.to_map(cols, rows))

    def sar_to_map(self, sar_cols, sar_rows):
        """The SAR raster's own pixel coordinates -> map x, y in the optical CRS."""
        s = self._sar
        x, y = apply(s.transform, sar_cols, sar_rows)
        if s.crs is not None and self.grid.crs is not None and s.crs != self.grid.crs:
            x, y = transformer(s.crs, self.grid.crs).transform(x, y)
        return np.asarray(x, float), np.asarray(y, float)

    def optical_pixel(self, sar_cols, sar_rows):
        """The SAR raster's own pixel coordinates -> optical-grid pixel coordinates (inverse of sar_pixel)."""
        return self.from_map(*self.sar_to_map(sar_cols, sar_rows))

    # -- destination grids ------------------------------------------------------------------------

    def overview_grid(self, max_size: int) -> tuple[Affine, int, int, float]:
        """Transform, width, height and scale (overview px per optical px) of the overlap decimated to fit."""
        ov = self.overlap
        scale = min(1.0, max_size / max(ov.width, ov.height))
        w = max(1, math.ceil(ov.width * scale - 1e-9))
        h = max(1, math.ceil(ov.height * scale - 1e-9))
        transform = compose(self.grid.window_transform(ov), Affine.scale(1.0 / scale))
        return transform, w, h, scale

    def coverage(self, src: Source, max_size: int = 256) -> float:
        """Fraction of the overlap inside ``src``'s extent (its values, nodata included, do not matter)."""
        transform, w, h, _ = self.overview_grid(max_size)
        jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        with np.errstate(invalid="ignore"):
            c, r = self.source_pixel(src, *apply(transform, jj, ii))
            inside = (c >= 0) & (c < src.width) & (r >= 0) & (r < src.height)  # NaN (no projection): outside
        return float(inside.mean())

    def source_pixels_per_pixel(self, src: Source, transform: Affine) -> float:
        """Linear number of ``src`` pixels one pixel of the destination grid ``transform`` spans."""
        if src.crs == self.grid.crs or src.crs is None or self.grid.crs is None:
            return _det_scale(compose(~src.transform, transform))
        # Only the SAR can be in another CRS.
        return _det_scale(compose(~self.grid.transform, transform)) / self.sar_to_optical_scale
