"""An optical raster and a SAR raster paired on the optical grid.

The optical raster's pixel grid is the reference: every window, overview and coordinate handed to the
rest of the pipeline is on that grid (GDAL convention: (0, 0) is the upper-left corner of the
upper-left pixel, the centre of pixel (i, j) is (j + 0.5, i + 0.5) as (col, row)). The SAR is read as a
view warped onto that grid with a per-window ``WarpedVRT`` (a direct windowed read when its grid is the
optical grid up to an integer pixel offset), so memory is bounded by the window, never the raster.

Radiometric rules (grey, SAR scale, stretch, implicit border) live in ``normalise.py``.

Validity of a pixel on the optical grid: inside the source raster, not nodata (declared, or the
config's override; a multi-band pixel is nodata when all its read bands equal it), finite in every
read band, not in the implicit zero border, and nonzero in the mask raster when one is given. For
warped reads the border and extent tests look at every source pixel the resampling kernel touches,
so no border zero leaks into a valid pixel.
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geomatch.config import PairConfig
from geomatch.errors import RasterError
from geomatch.pipeline import normalise
from geomatch.pipeline.affinetools import apply, compose
from geomatch.pipeline.normalise import BorderRuns, Stretch

STATS_SIZE = 1024  # longer side of the decimated read the stretch percentiles come from
WARP_TOLERANCE = 1e-4  # px; GDAL's approximate transformer error bound (0 is refused by rasterio)
# Both rasters without a CRS: the warper still needs one, so both sides get the same stand-in and the
# warp reduces to the affine between their pixel grids.
_PIXEL_CRS = CRS.from_epsg(3857)
_RESAMPLING = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear, "cubic": Resampling.cubic}
_KERNEL_HALF = {Resampling.nearest: 0.0, Resampling.bilinear: 0.5, Resampling.cubic: 1.5, Resampling.average: 0.5}


@dataclass(frozen=True)
class Grid:
    """The optical raster's grid: everything between stages is in its pixel coordinates."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    def window_transform(self, window: Window) -> Affine:
        return compose(self.transform, Affine.translation(window.col_off, window.row_off))


@dataclass(frozen=True)
class _Source:
    """What the pair knows about one input file; picklable, holds no open handle."""

    role: str  # optical | sar | optical mask | sar mask
    path: str
    bands: tuple[int, ...]
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    nodata: float | None
    nodata_rule: str  # declared | override | implicit-border | none
    assigned_georef: bool = False  # a mask without its own georeferencing takes its image's
    border: BorderRuns | None = None


def _open(path: str, role: str):
    p = Path(path)
    if not p.exists():
        raise RasterError(f"{role} raster {path}: file not found; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RasterError(
            f"{role} raster {path}: cannot be read as a raster ({reason}); give a GDAL-readable image "
            "(GeoTIFF, JPEG, VRT...)"
        ) from exc


def _crs_label(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def _integer_offset(src: _Source, dst_transform: Affine, dst_crs: CRS | None) -> tuple[int, int] | None:
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


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RasterPair:
    """Both inputs opened lazily and validated; reads windows of either on the optical grid.

    Attributes: ``grid`` (the optical raster's crs, transform, width, height), ``overlap`` (an integer
    ``Window`` on the optical grid, clipped to it, covering only whole optical pixels inside the SAR's
    footprint), ``optical_res`` and ``sar_res`` (pixel size in map units of the optical CRS; the SAR's
    is measured at the overlap centre, so approximate across CRSs), ``optical_res_m`` (metres per
    optical pixel, geodesic for a geographic CRS; None without a CRS), ``sar_to_optical_scale``
    (optical pixels per SAR pixel, e.g. 2.0 for 20 m SAR on 10 m optical), ``sar_scale`` (``linear`` or
    ``db``: how the SAR values were read), ``optical_stretch`` and ``sar_stretch`` (shared percentiles).

    Picklable: only paths, config and computed statistics travel; each thread of each process opens
    its own dataset handles on first use (GDAL handles are not thread-safe).
    """

    def __init__(self, optical_path, sar_path, cfg: PairConfig | None = None):
        self.cfg = cfg or PairConfig()
        self._init_local()
        if self.cfg.resampling not in _RESAMPLING:
            raise RasterError(f"pair.resampling = {self.cfg.resampling!r}; choose one of {', '.join(_RESAMPLING)}")
        self._opt = self._inspect("optical", str(optical_path), self.cfg.optical_bands, self.cfg.optical_nodata,
                                  normalise.grey_bands)
        self._sar = self._inspect("sar", str(sar_path), self.cfg.sar_bands, self.cfg.sar_nodata, normalise.sar_bands)
        self._check_crs()
        self.grid = Grid(self._opt.crs, self._opt.transform, self._opt.width, self._opt.height)
        self._opt_mask = self._inspect_mask("optical", self.cfg.optical_mask, self._opt)
        self._sar_mask = self._inspect_mask("sar", self.cfg.sar_mask, self._sar)
        self.overlap = self._compute_overlap()
        self._compute_resolutions()
        self._opt = self._with_border(self._opt)
        self._sar = self._with_border(self._sar)
        self._sha: dict[str, str] = {}
        self.sar_scale = "db"
        self.optical_stretch = Stretch(0.0, 1.0)
        self.sar_stretch = Stretch(0.0, 1.0)
        self._compute_stats()

    # -- pickling and handles ---------------------------------------------------------------------

    def _init_local(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._handles: list = []

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_local", "_lock", "_handles"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_local()

    def _handle(self, src: _Source):
        cache = getattr(self._local, "handles", None)
        if cache is None:
            cache = self._local.handles = {}
        ds = cache.get(src.path)
        if ds is None or ds.closed:
            ds = cache[src.path] = _open(src.path, src.role)
            with self._lock:
                self._handles.append(ds)
        return ds

    def _transformer(self, src_crs: CRS, dst_crs: CRS):
        from pyproj import Transformer

        key = (src_crs.to_wkt(), dst_crs.to_wkt())
        cache = getattr(self._local, "transformers", None)
        if cache is None:
            cache = self._local.transformers = {}
        if key not in cache:
            cache[key] = Transformer.from_crs(key[0], key[1], always_xy=True)
        return cache[key]

    def close(self) -> None:
        """Close every dataset handle this object opened (in any thread); later reads reopen them."""
        with self._lock:
            handles, self._handles = self._handles, []
        for ds in handles:
            ds.close()
        self._local = threading.local()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- validation -------------------------------------------------------------------------------

    def _inspect(self, role: str, path: str, selected, override, band_rule) -> _Source:
        with _open(path, role) as ds:
            if ds.crs is None and (ds.gcps[0] or ds.rpcs):
                raise RasterError(
                    f"{role} raster {path} is georeferenced by GCPs/RPCs only; warp it onto a map grid first "
                    f"(e.g. gdalwarp -t_srs EPSG:XXXX {Path(path).name} warped.tif)"
                )
            bad = [b for b in selected if not 1 <= b <= ds.count]
            if bad:
                raise RasterError(
                    f"{role} raster {path} has {ds.count} band(s) but pair.{role}_bands asks for {bad}; "
                    f"choose bands between 1 and {ds.count}"
                )
            bands = band_rule(ds.count, tuple(selected))
            declared = ds.nodatavals[bands[0] - 1]
            if override is not None:
                nodata, rule = float(override), "override"
            elif declared is not None:
                nodata, rule = float(declared), "declared"
            else:
                nodata, rule = None, "none"
            return _Source(role, path, bands, ds.count, ds.dtypes[bands[0] - 1], ds.crs, ds.transform,
                           ds.width, ds.height, nodata, rule)

    def _check_crs(self) -> None:
        o, s = self._opt, self._sar
        for a, b in ((o, s), (s, o)):
            if a.crs is None and b.crs is not None:
                label = _crs_label(b.crs)
                raise RasterError(
                    f"{a.role} raster {a.path} has no CRS but {b.role} raster {b.path} has {label}; assign the "
                    f"CRS it was made in (e.g. gdal_edit.py -a_srs {label if label.startswith('EPSG') else 'EPSG:XXXX'}"
                    f" {Path(a.path).name}) or use two rasters without georeferencing"
                )

    def _inspect_mask(self, role: str, path: str, image: _Source) -> _Source | None:
        if not path:
            return None
        m = self._inspect(f"{role} mask", path, (1,), None, lambda count, sel: (1,))
        if m.crs is None and image.crs is not None:
            if (m.width, m.height) != (image.width, image.height):
                raise RasterError(
                    f"{role} mask {path} has no CRS and its size {m.width}x{m.height} differs from {image.path} "
                    f"({image.width}x{image.height}); georeference the mask or make it the image's size"
                )
            m = replace(m, crs=image.crs, transform=image.transform, assigned_georef=True)
        return m

    def _compute_overlap(self) -> Window:
        s = self._sar
        t = np.linspace(0.0, 1.0, 65)
        edge_c = np.concatenate([t * s.width, np.full_like(t, s.width), t[::-1] * s.width, np.zeros_like(t)])
        edge_r = np.concatenate([np.zeros_like(t), t * s.height, np.full_like(t, s.height), t[::-1] * s.height])
        with np.errstate(invalid="ignore"):
            c, r = self.optical_pixel(edge_c, edge_r)
        ok = np.isfinite(c) & np.isfinite(r)
        where = f"{self._opt.path} ({_crs_label(self._opt.crs)}) and {s.path} ({_crs_label(s.crs)})"
        if not ok.any():
            raise RasterError(f"{where} do not overlap (the SAR footprint is not representable in the optical CRS); "
                              "check both files' georeferencing")
        c0 = max(0, math.ceil(c[ok].min() - 1e-6))
        r0 = max(0, math.ceil(r[ok].min() - 1e-6))
        c1 = min(self._opt.width, math.floor(c[ok].max() + 1e-6))
        r1 = min(self._opt.height, math.floor(r[ok].max() + 1e-6))
        if c1 <= c0 or r1 <= r0:
            raise RasterError(f"{where} do not overlap; check that they show the same place and that both CRS are "
                              "right")
        w, h = c1 - c0, r1 - r0
        m = self.cfg.min_overlap_px
        if w < m or h < m:
            raise RasterError(
                f"{where} overlap by only {w}x{h} optical pixels, less than pair.min_overlap_px = {m}; use rasters "
                "that overlap more or lower pair.min_overlap_px"
            )
        return Window(c0, r0, w, h)

    def _compute_resolutions(self) -> None:
        t = self.grid.transform
        self.optical_res = float(math.sqrt(abs(t.a * t.e - t.b * t.d)))
        cc = self.overlap.col_off + self.overlap.width / 2
        cr = self.overlap.row_off + self.overlap.height / 2
        sc, sr = self.sar_pixel(np.array([cc]), np.array([cr]))
        pc, pr = self.optical_pixel(sc + np.array([0.0, 1.0, 0.0]), sr + np.array([0.0, 0.0, 1.0]))
        jac = np.array([[pc[1] - pc[0], pc[2] - pc[0]], [pr[1] - pr[0], pr[2] - pr[0]]])
        self.sar_to_optical_scale = float(math.sqrt(abs(np.linalg.det(jac))))
        self.sar_res = self.sar_to_optical_scale * self.optical_res
        self.optical_res_m = self._metres_per_pixel(cc, cr)

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

    def _with_border(self, src: _Source) -> _Source:
        """Scan the implicit zero border when the rule applies (no nodata declared or given)."""
        if src.nodata is not None or not self.cfg.implicit_border:
            return src
        ds = self._handle(src)
        w, h, idx = src.width, src.height, list(src.bands)

        def zero(window: Window) -> np.ndarray:
            return (ds.read(idx, window=window) == 0).all(axis=0)

        edges = [Window(0, 0, w, 1), Window(0, h - 1, w, 1), Window(0, 0, 1, h), Window(w - 1, 0, 1, h)]
        if not any(zero(e).any() for e in edges):
            return src  # nothing can be connected to the edge: skip the full pass
        runs = BorderRuns.scan(lambda r0, n: zero(Window(0, r0, w, n)), w, h)
        if runs.empty:
            return src
        return replace(src, border=runs, nodata_rule="implicit-border")

    def _compute_stats(self) -> None:
        transform, w, h, _ = self._overview_grid(STATS_SIZE)
        opt, opt_valid = self._read_raw(self._opt, self._opt_mask, transform, w, h, Resampling.nearest)
        sar, sar_valid = self._read_raw(self._sar, self._sar_mask, transform, w, h, Resampling.nearest)
        for src, valid in ((self._opt, opt_valid), (self._sar, sar_valid)):
            if not valid.any():
                raise RasterError(
                    f"{src.role} raster {src.path} has no valid pixel in the overlap (nodata: {src.nodata_rule}"
                    f"{'' if src.nodata is None else ' ' + repr(src.nodata)}); check pair.{src.role}_nodata, "
                    f"pair.{src.role}_mask and the band selection"
                )
        if not (opt_valid & sar_valid).any():
            raise RasterError(
                f"{self._opt.path} and {self._sar.path} have no pixel valid in both inside their overlap; "
                "check the nodata settings and masks"
            )
        self.optical_stretch = Stretch.fit(opt[opt_valid])
        if self.cfg.sar_scale == "auto":
            self.sar_scale = normalise.detect_sar_scale(sar[sar_valid])
        else:
            self.sar_scale = self.cfg.sar_scale
        values = sar[sar_valid]
        self.sar_stretch = Stretch.fit(normalise.to_db(values) if self.sar_scale == "linear" else values)

    # -- coordinates ------------------------------------------------------------------------------

    def _map_to_src_pixel(self, src: _Source, x, y):
        if src.crs is not None and self.grid.crs is not None and src.crs != self.grid.crs:
            x, y = self._transformer(self.grid.crs, src.crs).transform(x, y)
        return apply(~src.transform, x, y)

    def to_map(self, cols, rows):
        """Optical-grid pixel coordinates (continuous, GDAL convention) -> map x, y in the optical CRS."""
        return apply(self.grid.transform, cols, rows)

    def from_map(self, x, y):
        """Map x, y in the optical CRS -> optical-grid pixel coordinates."""
        return apply(~self.grid.transform, x, y)

    def sar_pixel(self, cols, rows):
        """Optical-grid pixel coordinates -> the SAR raster's own pixel coordinates (through map space)."""
        x, y = self.to_map(cols, rows)
        return self._map_to_src_pixel(self._sar, x, y)

    def sar_to_map(self, sar_cols, sar_rows):
        """The SAR raster's own pixel coordinates -> map x, y in the optical CRS."""
        x, y = apply(self._sar.transform, sar_cols, sar_rows)
        if self._sar.crs is not None and self.grid.crs is not None and self._sar.crs != self.grid.crs:
            x, y = self._transformer(self._sar.crs, self.grid.crs).transform(x, y)
        return np.asarray(x, float), np.asarray(y, float)

    def optical_pixel(self, sar_cols, sar_rows):
        """The SAR raster's own pixel coordinates -> optical-grid pixel coordinates (inverse of sar_pixel)."""
        return self.from_map(*self.sar_to_map(sar_cols, sar_rows))

    # -- reading ----------------------------------------------------------------------------------

    def _overview_grid(self, max_size: int):
        ov = self.overlap
        scale = min(1.0, max_size / max(ov.width, ov.height))
        w = max(1, math.ceil(ov.width * scale - 1e-9))
        h = max(1, math.ceil(ov.height * scale - 1e-9))
        transform = compose(self.grid.window_transform(ov), Affine.scale(1.0 / scale))
        return transform, w, h, scale

    def _read_bands(self, src: _Source, indexes: list[int], transform: Affine, w: int, h: int,
                    resampling: Resampling) -> np.ndarray:
        """(n, h, w) float32 on the destination grid; NaN outside the source and where nodata."""
        ds = self._handle(src)
        offset = _integer_offset(src, transform, self.grid.crs)
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
        dst_crs = self.grid.crs or _PIXEL_CRS
        kw = dict(crs=dst_crs, transform=transform, width=w, height=h, resampling=resampling, nodata=np.nan,
                  dtype="float32", tolerance=WARP_TOLERANCE)
        if src.crs is None or src.assigned_georef:
            kw.update(src_crs=src.crs or _PIXEL_CRS, src_transform=src.transform)
        if src.nodata is not None:
            kw["src_nodata"] = src.nodata
        with WarpedVRT(ds, **kw) as vrt:
            return vrt.read(indexes)

    def _src_pixels_per_dst_pixel(self, src: _Source, transform: Affine) -> float:
        if src.crs == self.grid.crs or src.crs is None or self.grid.crs is None:
            m = compose(~src.transform, transform)
            return math.sqrt(abs(m.a * m.e - m.b * m.d))
        m = compose(~self.grid.transform, transform)  # only the SAR can be in another CRS
        return math.sqrt(abs(m.a * m.e - m.b * m.d)) / self.sar_to_optical_scale

    def _rule_valid(self, src: _Source, transform: Affine, w: int, h: int, resampling: Resampling) -> np.ndarray:
        """Inside the source raster and clear of its implicit border, for every destination pixel."""
        offset = _integer_offset(src, transform, self.grid.crs)
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
            pc, pr = self._map_to_src_pixel(src, x, y)
        inside = np.isfinite(pc) & np.isfinite(pr) & (pc >= 0) & (pc < src.width) & (pr >= 0) & (pr < src.height)
        # Source pixels the resampling kernel can touch: its half-width, widened by the number of source
        # pixels one destination pixel spans when downsampling (GDAL scales the kernel the same way).
        half = 0.0 if resampling == Resampling.nearest else _KERNEL_HALF.get(resampling, 0.5) * max(
            1.0, self._src_pixels_per_dst_pixel(src, transform))
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

    def _read_raw(self, src: _Source, mask: _Source | None, transform: Affine, w: int, h: int,
                  resampling: Resampling) -> tuple[np.ndarray, np.ndarray]:
        """Band-averaged raw values (float32, h x w) and validity on the destination grid."""
        data = self._read_bands(src, list(src.bands), transform, w, h, resampling)
        valid = np.isfinite(data).all(axis=0) & self._rule_valid(src, transform, w, h, resampling)
        if mask is not None:
            m = self._read_bands(mask, [1], transform, w, h, Resampling.nearest)[0]
            valid &= np.isfinite(m) & (m != 0)
        values = data.mean(axis=0, dtype=np.float64).astype(np.float32) if len(src.bands) > 1 else data[0]
        return values, valid

    def _finish(self, values: np.ndarray, valid: np.ndarray, stretch: Stretch, db: bool):
        if db:
            values = normalise.to_db(values)
        image = stretch.apply(values)
        image[~valid] = 0.0
        return image, valid

    @staticmethod
    def _check_window(window: Window) -> Window:
        vals = (window.col_off, window.row_off, window.width, window.height)
        if any(float(v) != int(v) for v in vals) or window.width <= 0 or window.height <= 0:
            raise ValueError(f"window must be integer and non-empty, got {window}")
        return Window(*(int(v) for v in vals))

    def read_optical(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Grey optical image in [0, 1] (float32, h x w) and validity for a window on the optical grid.

        The window may extend past the raster: those pixels are 0 and invalid.
        """
        win = self._check_window(window)
        t = self.grid.window_transform(win)
        values, valid = self._read_raw(self._opt, self._opt_mask, t, win.width, win.height, Resampling.nearest)
        return self._finish(values, valid, self.optical_stretch, False)

    def read_sar(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """SAR (dB when stored linear) stretched to [0, 1], warped onto a window of the optical grid."""
        win = self._check_window(window)
        t = self.grid.window_transform(win)
        rs = _RESAMPLING[self.cfg.resampling]
        values, valid = self._read_raw(self._sar, self._sar_mask, t, win.width, win.height, rs)
        return self._finish(values, valid, self.sar_stretch, self.sar_scale == "linear")

    def read_overview(self, max_size: int = 1024):
        """The whole overlap, averaged down so its longer side is at most ``max_size``.

        Returns ``(optical, optical_valid, sar, sar_valid, scale)`` with ``scale`` the overview pixels per
        optical pixel (1.0 when the overlap already fits). Overview pixel coordinates (u, v) are optical
        pixel coordinates (overlap.col_off + u / scale, overlap.row_off + v / scale).
        """
        transform, w, h, scale = self._overview_grid(max_size)
        rs = Resampling.average if scale < 1.0 else Resampling.nearest
        opt, opt_valid = self._finish(*self._read_raw(self._opt, self._opt_mask, transform, w, h, rs),
                                      self.optical_stretch, False)
        rs_sar = Resampling.average if scale < 1.0 else _RESAMPLING[self.cfg.resampling]
        sar, sar_valid = self._finish(*self._read_raw(self._sar, self._sar_mask, transform, w, h, rs_sar),
                                      self.sar_stretch, self.sar_scale == "linear")
        return opt, opt_valid, sar, sar_valid, scale

    # -- reporting --------------------------------------------------------------------------------

    def _file_sha(self, path: str) -> str:
        if path not in self._sha:
            self._sha[path] = _sha256(path)
        return self._sha[path]

    def _describe_source(self, src: _Source, mask: _Source | None) -> dict:
        out = {
            "path": str(Path(src.path).resolve()),
            "sha256": self._file_sha(src.path),
            "crs": _crs_label(src.crs),
            "crs_wkt": src.crs.to_wkt() if src.crs else None,
            "width": src.width,
            "height": src.height,
            "count": src.count,
            "dtype": src.dtype,
            "bands": list(src.bands),
            "nodata": src.nodata,
            "nodata_rule": src.nodata_rule,
            "transform": list(src.transform)[:6],
            "mask": None,
        }
        if src.border is not None:
            out["implicit_border_px"] = src.border.pixels
        if mask is not None:
            out["mask"] = {"path": str(Path(mask.path).resolve()), "sha256": self._file_sha(mask.path)}
        return out

    def describe(self) -> dict:
        """Inputs for the run table (JSON-serialisable): paths, checksums, grids, bands, nodata, overlap."""
        ov = self.overlap
        x0, y0 = self.to_map(ov.col_off, ov.row_off)
        x1, y1 = self.to_map(ov.col_off + ov.width, ov.row_off + ov.height)
        optical = self._describe_source(self._opt, self._opt_mask)
        optical.update(grey_rule="mean of bands " + ",".join(map(str, self._opt.bands)),
                       stretch=[self.optical_stretch.lo, self.optical_stretch.hi], res=self.optical_res,
                       res_m=self.optical_res_m)
        sar = self._describe_source(self._sar, self._sar_mask)
        sar.update(scale=self.sar_scale, scale_rule=self.cfg.sar_scale, resampling=self.cfg.resampling,
                   stretch_db=[self.sar_stretch.lo, self.sar_stretch.hi], res=self.sar_res)
        return {
            "optical": optical,
            "sar": sar,
            "overlap": {
                "col_off": int(ov.col_off), "row_off": int(ov.row_off), "width": int(ov.width),
                "height": int(ov.height),
                "bounds": [float(min(x0, x1)), float(min(y0, y1)), float(max(x0, x1)), float(max(y0, y1))],
            },
            "sar_to_optical_scale": self.sar_to_optical_scale,
            "same_grid": _integer_offset(self._sar, self.grid.transform, self.grid.crs) is not None,
        }
