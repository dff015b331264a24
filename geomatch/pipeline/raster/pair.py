"""``RasterPair``: both inputs opened and validated once, then read as windows of the optical grid.

A facade over the package's three parts: ``sources`` (what each file is, and whether it can be read),
``geometry`` (grid, overlap, resolutions, coordinate maps) and ``reader`` (warped reads, the validity
rule, the shared stretches). Radiometric rules (grey, SAR scale, stretch, implicit border) live in
``geomatch/pipeline/normalise.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from geomatch.config import PairConfig
from geomatch.errors import RasterError
from geomatch.fileio import sha256_file
from geomatch.pipeline import normalise
from geomatch.pipeline.raster import sources
from geomatch.pipeline.raster.geometry import PairGeometry, integer_offset
from geomatch.pipeline.raster.reader import RESAMPLING, WindowReader, check_window, finish, fit_radiometry
from geomatch.pipeline.raster.sources import Source


@dataclass(frozen=True)
class Overview:
    """The whole overlap decimated: images in [0, 1] with their validity, both on one overview grid.

    Overview pixel (u, v) is optical pixel (overlap.col_off + u / scale, overlap.row_off + v / scale);
    ``scale`` is overview pixels per optical pixel (1.0 when the overlap already fits).
    """

    optical: np.ndarray
    optical_valid: np.ndarray
    sar: np.ndarray
    sar_valid: np.ndarray
    scale: float


class _Geometry:
    """A read-only attribute of the pair's ``geometry`` (see ``geometry.PairGeometry``), under the same name."""

    def __set_name__(self, owner, name: str):
        self.name = name

    def __get__(self, pair, owner=None):
        return self if pair is None else getattr(pair.geometry, self.name)


class RasterPair:
    """An optical and a SAR raster, validated when constructed; reads windows of either on the optical grid.

    Attributes: ``grid`` (the optical raster's crs, transform, width, height), ``overlap``, ``optical_res``,
    ``sar_res``, ``optical_res_m`` and ``sar_to_optical_scale`` (see ``geometry.PairGeometry``),
    ``sar_scale`` (``linear`` or ``db``: how the SAR values were read), ``optical_stretch`` and
    ``sar_stretch`` (percentiles shared by every window).

    Picklable (it is sent to dask workers): only paths, config and computed statistics travel; each
    thread of each process opens its own dataset handles on first use.
    """

    def __init__(self, optical_path, sar_path, cfg: PairConfig | None = None):
        self.cfg = cfg or PairConfig()
        if self.cfg.resampling not in RESAMPLING:
            raise RasterError(f"pair.resampling = {self.cfg.resampling!r}; choose one of {', '.join(RESAMPLING)}")
        opt = sources.inspect("optical", str(optical_path), self.cfg.optical_bands, self.cfg.optical_nodata,
                              normalise.grey_bands)
        sar = sources.inspect("sar", str(sar_path), self.cfg.sar_bands, self.cfg.sar_nodata, normalise.sar_bands)
        sources.check_crs(opt, sar)
        self._opt_mask = sources.inspect_mask("optical", self.cfg.optical_mask, opt)
        self._sar_mask = sources.inspect_mask("sar", self.cfg.sar_mask, sar)
        self.geometry = PairGeometry(opt, sar, self.cfg.min_overlap_px)
        self._reader = WindowReader(self.geometry)
        handles = self._reader.handles
        self._opt = sources.with_border(handles.get(opt), opt, self.cfg.implicit_border)
        self._sar = sources.with_border(handles.get(sar), sar, self.cfg.implicit_border)
        radiometry = fit_radiometry(self._reader, (self._opt, self._sar), (self._opt_mask, self._sar_mask), self.cfg)
        self.sar_scale = radiometry.sar_scale
        self.optical_stretch = radiometry.optical_stretch
        self.sar_stretch = radiometry.sar_stretch
        self._sha: dict[str, str] = {}

    def close(self) -> None:
        """Close every dataset handle this object opened (in any thread); later reads reopen them."""
        self._reader.handles.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- geometry: attributes and coordinate maps of geometry.PairGeometry, under the pair's name ----

    grid = _Geometry()
    overlap = _Geometry()
    optical_res = _Geometry()
    sar_res = _Geometry()
    optical_res_m = _Geometry()
    sar_to_optical_scale = _Geometry()
    to_map = _Geometry()
    from_map = _Geometry()
    sar_pixel = _Geometry()
    optical_pixel = _Geometry()

    # -- reading ----------------------------------------------------------------------------------

    def read_optical(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Grey optical image in [0, 1] (float32, h x w) and validity for a window on the optical grid.

        The window may extend past the raster: those pixels are 0 and invalid.
        """
        win = check_window(window)
        t = self.grid.window_transform(win)
        values, valid = self._reader.raw(self._opt, self._opt_mask, t, win.width, win.height, Resampling.nearest)
        return finish(values, valid, self.optical_stretch, False)

    def read_sar(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """SAR (dB when stored linear) stretched to [0, 1], warped onto a window of the optical grid."""
        win = check_window(window)
        t = self.grid.window_transform(win)
        rs = RESAMPLING[self.cfg.resampling]
        values, valid = self._reader.raw(self._sar, self._sar_mask, t, win.width, win.height, rs)
        return finish(values, valid, self.sar_stretch, self.sar_scale == "linear")

    def read_overview(self, max_size: int = 1024) -> Overview:
        """The whole overlap, averaged down so its longer side is at most ``max_size``."""
        transform, w, h, scale = self.geometry.overview_grid(max_size)
        rs_opt = Resampling.average if scale < 1.0 else Resampling.nearest
        rs_sar = Resampling.average if scale < 1.0 else RESAMPLING[self.cfg.resampling]
        opt, opt_valid = finish(*self._reader.raw(self._opt, self._opt_mask, transform, w, h, rs_opt),
                                self.optical_stretch, False)
        sar, sar_valid = finish(*self._reader.raw(self._sar, self._sar_mask, transform, w, h, rs_sar),
                                self.sar_stretch, self.sar_scale == "linear")
        return Overview(opt, opt_valid, sar, sar_valid, scale)

    # -- provenance -------------------------------------------------------------------------------

    def _file_sha(self, path: str) -> str:
        if path not in self._sha:
            self._sha[path] = sha256_file(path)
        return self._sha[path]

    def _describe_source(self, src: Source, mask: Source | None) -> dict:
        out = {
            "path": str(Path(src.path).resolve()),
            "sha256": self._file_sha(src.path),
            "crs": sources.crs_label(src.crs),
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
        if src.is_complex:
            out["complex_rule"] = "amplitude"
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
            "same_grid": integer_offset(self._sar, self.grid.transform, self.grid.crs) is not None,
        }
