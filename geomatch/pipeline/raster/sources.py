"""Opening and inspecting the input rasters and masks: what the pair knows about each file.

Each input becomes a ``Source``: picklable facts (grid, bands, nodata rule), never an open handle, so a
pair can travel to dask workers and each thread opens its own handles with ``open_source``. Bad inputs
fail here, when the pair is opened, with one line naming the file: missing, not a raster, georeferenced
by GCPs/RPCs only, a band that does not exist, a CRS on one side only, or pixels that cannot be read. The
last is a truncated or corrupt file: GDAL opens it from its header and only fails when the missing block
is read, so the first and last pixel of every band used are read at open (``probe``).

Complex rasters (SAR SLC: CInt16, CFloat32...) are read as their amplitude |z| through a VRT of GDAL's
``mod`` pixel function, so warping and averaging act on the amplitude, never on the real part alone.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geomatch.errors import RasterError
from geomatch.pipeline.normalise import BorderRuns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """What the pair knows about one input file; picklable, holds no open handle."""

    role: str  # optical | sar | optical mask | sar mask
    path: str
    bands: tuple[int, ...]
    count: int
    dtype: str  # as stored; a complex one is read as float32 amplitude
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    nodata: float | None  # for a complex file, compared with the amplitude
    nodata_rule: str  # declared | override | implicit-border | none
    assigned_georef: bool = False  # a mask without its own georeferencing takes its image's
    border: BorderRuns | None = None

    @property
    def is_complex(self) -> bool:
        return self.dtype.startswith("complex")


def crs_label(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _open(name: str, role: str, path: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(name)
    except RasterioIOError as exc:
        raise RasterError(
            f"{role} raster {path}: cannot be read as a raster ({_first_line(exc)}); give a GDAL-readable image "
            "(GeoTIFF, JPEG, VRT...)"
        ) from exc


def _require(path: str, role: str) -> None:
    if not Path(path).exists():
        raise RasterError(f"{role} raster {path}: file not found; check the path")


def open_dataset(path: str, role: str):
    """The file as GDAL stores it; a missing or non-raster file is a one-line ``RasterError``."""
    _require(path, role)
    return _open(path, role, path)


def read_failure(role: str, path: str, exc: BaseException) -> RasterError:
    """The one-line error for pixels GDAL cannot read (its own message is chained as the cause)."""
    return RasterError(
        f"{role} raster {path}: its pixels cannot be read ({_first_line(exc.__cause__ or exc)}); the file is "
        "truncated or corrupt: copy, download or export it again"
    )


def probe(ds, role: str, path: str, bands) -> None:
    """Read the first and the last pixel of each band: a truncated file fails here, not mid-run."""
    indexes = list(bands)
    try:
        for window in (Window(0, 0, 1, 1), Window(ds.width - 1, ds.height - 1, 1, 1)):
            ds.read(indexes, window=window)
    except RasterioIOError as exc:
        raise read_failure(role, path, exc) from exc


def check_readable(path, role: str = "input") -> None:
    """Raise a one-line ``RasterError`` unless ``path`` opens as a raster and its pixels can be read.

    Cheap (two one-pixel reads per band, no statistics) and imports no torch: for checks that must finish
    before any heavy work. ``role`` names the file in the message ("optical", "sar", "optical mask"...).
    """
    with open_dataset(str(path), role) as ds:
        probe(ds, role, str(path), range(1, ds.count + 1))


def _amplitude_vrt(src: Source) -> str:
    """A VRT with every band of a complex file as float32 |z|; band numbers unchanged."""
    source = escape(os.path.abspath(src.path))
    head = [f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}">']
    if src.crs is not None:
        head.append(f"<SRS>{escape(src.crs.to_wkt())}</SRS>")
    head.append(f"<GeoTransform>{', '.join(repr(float(v)) for v in src.transform.to_gdal())}</GeoTransform>")
    bands = [
        f'<VRTRasterBand dataType="Float32" band="{b}" subClass="VRTDerivedRasterBand">'
        # Without a complex transfer type GDAL hands the pixel function the real part only.
        "<PixelFunctionType>mod</PixelFunctionType><SourceTransferType>CFloat64</SourceTransferType>"
        f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b in range(1, src.count + 1)
    ]
    return "".join(head + bands + ["</VRTDataset>"])


def open_source(src: Source):
    """A dataset to read ``src`` from: the file itself, or its amplitude VRT when it is complex."""
    if not src.is_complex:
        return open_dataset(src.path, src.role)
    _require(src.path, src.role)
    return _open(_amplitude_vrt(src), src.role, src.path)


def inspect(role: str, path: str, selected, override, band_rule) -> Source:
    """Validate one input and record what reading it needs; ``band_rule(count, selected)`` picks bands."""
    with open_dataset(path, role) as ds:
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
        probe(ds, role, path, bands)
        dtype = ds.dtypes[bands[0] - 1]
        declared = ds.nodatavals[bands[0] - 1]
        if override is not None:
            nodata, rule = float(override), "override"
        elif declared is not None:
            nodata, rule = float(declared), "declared"
        else:
            nodata, rule = None, "none"
        src = Source(role, path, bands, ds.count, dtype, ds.crs, ds.transform, ds.width, ds.height, nodata, rule)
    if src.is_complex:
        log.info("%s raster %s is complex (%s): using its amplitude |z|", role, path, dtype)
        if nodata is not None:
            src = replace(src, nodata=float(abs(nodata)))
    return src


def inspect_mask(role: str, path: str, image: Source) -> Source | None:
    """The mask for ``image`` (nonzero = valid); without georeferencing it must be the image's size."""
    if not path:
        return None
    m = inspect(f"{role} mask", path, (1,), None, lambda count, sel: (1,))
    if m.crs is None and image.crs is not None:
        if (m.width, m.height) != (image.width, image.height):
            raise RasterError(
                f"{role} mask {path} has no CRS and its size {m.width}x{m.height} differs from {image.path} "
                f"({image.width}x{image.height}); georeference the mask or make it the image's size"
            )
        m = replace(m, crs=image.crs, transform=image.transform, assigned_georef=True)
    return m


def check_crs(optical: Source, sar: Source) -> None:
    """Both rasters georeferenced, or neither: a CRS on one side only is a missing assignment."""
    for a, b in ((optical, sar), (sar, optical)):
        if a.crs is None and b.crs is not None:
            label = crs_label(b.crs)
            raise RasterError(
                f"{a.role} raster {a.path} has no CRS but {b.role} raster {b.path} has {label}; assign the "
                f"CRS it was made in (e.g. gdal_edit.py -a_srs {label if label.startswith('EPSG') else 'EPSG:XXXX'}"
                f" {Path(a.path).name}) or use two rasters without georeferencing"
            )


def with_border(ds, src: Source, enabled: bool) -> Source:
    """``src`` with its implicit zero border scanned, when the rule applies (no nodata declared or given)."""
    if src.nodata is not None or not enabled:
        return src
    w, h, idx = src.width, src.height, list(src.bands)

    def zero(window: Window) -> np.ndarray:
        try:
            return (ds.read(idx, window=window) == 0).all(axis=0)
        except RasterioIOError as exc:
            raise read_failure(src.role, src.path, exc) from exc

    edges = [Window(0, 0, w, 1), Window(0, h - 1, w, 1), Window(0, 0, 1, h), Window(w - 1, 0, 1, h)]
    if not any(zero(e).any() for e in edges):
        return src  # nothing can be connected to the edge: skip the full pass
    runs = BorderRuns.scan(lambda r0, n: zero(Window(0, r0, w, n)), w, h)
    if runs.empty:
        return src
    return replace(src, border=runs, nodata_rule="implicit-border")
