"""Reading either raster on a window of the optical grid, the validity rule, and the shared stretches.

The SAR is read as a view warped onto the optical grid with a per-window ``WarpedVRT`` (a direct windowed
read when its grid is the optical grid up to an integer pixel offset), so memory is bounded by the
window, never the raster.

Validity of a pixel on the optical grid: inside the source raster, not nodata (declared, or the
config's override; a multi-band pixel is nodata when all its read bands equal it), finite in every
read band, not in the implicit zero border, and nonzero in the mask raster when one is given. For
warped reads the border and extent tests look at every source pixel the resampling kernel touches,
so no border zero leaks into a valid pixel.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geomatch.config import PairConfig
from geomatch.errors import RasterError
from geomatch.pipeline import normalise
from geomatch.pipeline.affinetools import apply
from geomatch.pipeline.normalise import Stretch
from geomatch.pipeline.raster.geometry import PairGeometry, integer_offset
from geomatch.pipeline.raster.sources import Source, open_source, read_failure

log = logging.getLogger(__name__)

STATS_SIZE = 1024  # longer side of the decimated read the stretch percentiles come from
WARP_TOLERANCE = 1e-4  # px; GDAL's approximate transformer error bound (0 is refused by rasterio)
# A mask's footprint below WARN of the overlap is named in a warning, below MIN it is an error: a mask
# on another extent otherwise shows up only as "no reliable tie points".
MASK_COVERAGE_WARN = 0.99
MASK_COVERAGE_MIN = 0.01
# Both rasters without a CRS: the warper still needs one, so both sides get the same stand-in and the
# warp reduces to the affine between their pixel grids.
_PIXEL_CRS = CRS.from_epsg(3857)
RESAMPLING = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear, "cubic": Resampling.cubic}
_KERNEL_HALF = {Resampling.nearest: 0.0, Resampling.bilinear: 0.5, Resampling.cubic: 1.5, Resampling.average: 0.5}


class Handles:
    """Dataset handles, one per file per thread (GDAL handles are not thread-safe); pickles empty."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list = []

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._reset()

    def get(self, src: Source):
        cache = getattr(self._local, "handles", None)
        if cache is None:
            cache = self._local.handles = {}
        ds = cache.get(src.path)
        if ds is None or ds.closed:
            ds = cache[src.path] = open_source(src)
            with self._lock:
                self._opened.append(ds)
        return ds

    def close(self) -> None:
        """Close every handle opened (in any thread); later reads reopen them."""
        with self._lock:
            opened, self._opened = self._opened, []
        for ds in opened:
            ds.close()
        self._local = threading.local()


def check_window(window: Window) -> Window:
    vals = (window.col_off, window.row_off, window.width, window.height)
    if any(float(v) != int(v) for v in vals) or window.width <= 0 or window.height <= 0:
        raise ValueError(f"window must be integer and non-empty, got {window}")
    return Window(*(int(v) for v in vals))


class WindowReader:
    """Raw values and validity of any source on any destination grid aligned with the optical CRS."""

    def __init__(self, geometry: PairGeometry):
        self.geometry = geometry
        self.handles = Handles()

    def bands(self, src: Source, indexes: list[int], transform: Affine, w: int, h: int,
              resampling: Resampling) -> np.ndarray:
        """(n, h, w) float32 on the destination grid; NaN outside the source and where nodata."""
        try:
            return self._bands(src, indexes, transform, w, h, resampling)
        except RasterioIOError as exc:  # a block the open-time probe did not reach
            raise read_failure(src.role, src.path, exc) from exc

    def _bands(self, src, indexes, transform, w, h, resampling) -> np.ndarray:
        ds = self.handles.get(src)
        grid_crs = self.geometry.grid.crs
        offset = integer_offset(src, transform, grid_crs)
        if offset is not None:
            c0, r0 = offset
            out = np.full((len(indexes), h, w), np.nan, np.float32)
            cc0, rr0 = max(c0, 0), max(r0, 0)
            cc1, rr1 = min(c0 + w, src.width), min(r0 + h, src.height)
            if cc1 > cc0 and rr1 > rr0:
                data = ds.read(indexes, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0), out_dtype=np.float32)
                if src.nodata is not None:
                    data[:, (data == np.float32(src.nodata)).all(axis=0)] = np.nan
                out[:, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = data
            return out
        kw = dict(crs=grid_crs or _PIXEL_CRS, transform=transform, width=w, height=h, resampling=resampling,
                  nodata=np.nan, dtype="float32", tolerance=WARP_TOLERANCE)
        if src.crs is None or src.assigned_georef:
            kw.update(src_crs=src.crs or _PIXEL_CRS, src_transform=src.transform)
        if src.nodata is not None:
            kw["src_nodata"] = src.nodata
        with WarpedVRT(ds, **kw) as vrt:
            return vrt.read(indexes)

    def rule_valid(self, src: Source, transform: Affine, w: int, h: int, resampling: Resampling) -> np.ndarray:
        """Inside the source raster and clear of its implicit border, for every destination pixel."""
        offset = integer_offset(src, transform, self.geometry.grid.crs)
        if offset is not None:
            c0, r0 = offset
            cols = np.arange(c0, c0 + w)
            rows = np.arange(r0, r0 + h)
            inside = ((rows >= 0) & (rows < src.height))[:, None] & ((cols >= 0) & (cols < src.width))[None, :]
            if src.border is not None:
                inside &= ~src.border.is_border(cols[None, :], rows[:, None])
            return inside
        if src.border is None:
            return np.ones((h, w), bool)  # the warper already leaves pixels outside the source as NaN
        jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        x, y = apply(transform, jj, ii)
        with np.errstate(invalid="ignore"):
            pc, pr = self.geometry.source_pixel(src, x, y)
        inside = np.isfinite(pc) & np.isfinite(pr) & (pc >= 0) & (pc < src.width) & (pr >= 0) & (pr < src.height)
        # Source pixels the resampling kernel can touch: its half-width, widened by the number of source
        # pixels one destination pixel spans when downsampling (GDAL scales the kernel the same way).
        half = 0.0 if resampling == Resampling.nearest else _KERNEL_HALF.get(resampling, 0.5) * max(
            1.0, self.geometry.source_pixels_per_pixel(src, transform))
        half = max(half - 1e-6, 0.0)
        pc = np.where(inside, pc, 0.0)
        pr = np.where(inside, pr, 0.0)
        offsets = [(0.0, 0.0)]
        if half > 0:
            offsets += [(-half, -half), (-half, half), (half, -half), (half, half)]
        border = np.zeros(pc.shape, bool)
        for dc, dr in offsets:
            border |= src.border.is_border(np.floor(pc + dc).astype(np.int64), np.floor(pr + dr).astype(np.int64))
        return inside & ~border

    def raw(self, src: Source, mask: Source | None, transform: Affine, w: int, h: int,
            resampling: Resampling) -> tuple[np.ndarray, np.ndarray]:
        """Band-averaged raw values (float32, h x w) and validity on the destination grid."""
        data = self.bands(src, list(src.bands), transform, w, h, resampling)
        valid = np.isfinite(data).all(axis=0) & self.rule_valid(src, transform, w, h, resampling)
        if mask is not None:
            m = self.bands(mask, [1], transform, w, h, Resampling.nearest)[0]
            valid &= np.isfinite(m) & (m != 0)
        values = data.mean(axis=0, dtype=np.float64).astype(np.float32) if len(src.bands) > 1 else data[0]
        return values, valid


def finish(values: np.ndarray, valid: np.ndarray, stretch: Stretch, db: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw values -> the [0, 1] image (dB first when ``db``), 0 where invalid."""
    if db:
        values = normalise.to_db(values)
    image = stretch.apply(values)
    image[~valid] = 0.0
    return image, valid


@dataclass(frozen=True)
class Radiometry:
    """How raw values become images, shared by every window: one stretch per side over the overlap."""

    sar_scale: str  # linear | db: how the SAR values are stored
    optical_stretch: Stretch
    sar_stretch: Stretch  # in dB


def _check_mask_coverage(geometry: PairGeometry, mask: Source) -> None:
    covered = geometry.coverage(mask)
    if covered >= MASK_COVERAGE_WARN:
        return
    text = (f"{mask.role} {mask.path} covers only {100 * covered:.1f} % of the overlap of the two rasters; "
            "pixels outside it are invalid")
    if covered < MASK_COVERAGE_MIN:
        raise RasterError(f"{text}: check its georeferencing or give a mask of the overlap's extent")
    log.warning("%s (check its georeferencing if that is not intended)", text)


def fit_radiometry(reader: WindowReader, sources: tuple[Source, Source], masks: tuple[Source | None, Source | None],
                   cfg: PairConfig) -> Radiometry:
    """Stretches and SAR scale from a decimated read of the overlap; fails when either side has no valid pixel."""
    for mask in masks:
        if mask is not None:
            _check_mask_coverage(reader.geometry, mask)
    transform, w, h, _ = reader.geometry.overview_grid(STATS_SIZE)
    (opt, opt_valid), (sar, sar_valid) = (
        reader.raw(src, mask, transform, w, h, Resampling.nearest) for src, mask in zip(sources, masks, strict=True))
    for src, valid in zip(sources, (opt_valid, sar_valid), strict=True):
        if not valid.any():
            raise RasterError(
                f"{src.role} raster {src.path} has no valid pixel in the overlap (nodata: {src.nodata_rule}"
                f"{'' if src.nodata is None else ' ' + repr(src.nodata)}); check pair.{src.role}_nodata, "
                f"pair.{src.role}_mask and the band selection"
            )
    if not (opt_valid & sar_valid).any():
        raise RasterError(
            f"{sources[0].path} and {sources[1].path} have no pixel valid in both inside their overlap; "
            "check the nodata settings and masks"
        )
    sar_scale = normalise.detect_sar_scale(sar[sar_valid]) if cfg.sar_scale == "auto" else cfg.sar_scale
    values = sar[sar_valid]
    return Radiometry(sar_scale, Stretch.fit(opt[opt_valid]),
                      Stretch.fit(normalise.to_db(values) if sar_scale == "linear" else values))
