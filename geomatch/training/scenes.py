"""Reading one optical/SAR scene (found by :mod:`geomatch.training.scene_files`) onto one grid, aligned.

Every scene is read through the pipeline's own :class:`geomatch.pipeline.raster.RasterPair` (bands stored
one file each are stacked in a temporary VRT first), so the training patches see exactly what ``geomatch
run`` sees: the optical bands averaged to grey, the SAR warped onto the optical grid (bilinear), its scale
detected by the same rule (dB kept, linear converted to dB), both stretched from their 1st-99th
percentiles and nodata marked invalid.

Alignment (``align=True``, the default): the residual optical->SAR shift of each scene is measured with the
pipeline's coarse stage (CFOG descriptors, ±12 px) and, when the estimate is confident or agrees with the
folder's own measurement, taken out in whole pixels (:func:`align_scene`; recorded per scene in the
manifest). Measured on the shared folder: ssl4eo-s12's S1 is 3-4 px off its S2 in both axes after resampling
by the stored transforms; the other s1s2 sources 0.5-2 px; volkov-s1s2 1-8 px.

Scenes of two dates (changedet) lose their changed pixels and a ``CHANGE_MARGIN_PX`` band around them
before anything is measured or cut: only unchanged ground shows the same thing in both images.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform_bounds
from scipy import ndimage as ndi

from geomatch.config import PairConfig
from geomatch.errors import InputError
from geomatch.training.scene_files import DEFAULT_EXCLUDE, SceneFiles, find_scenes

# A scene may be as small as one patch; the pipeline's 96-pixel default is for whole scenes.
MIN_OVERLAP_PX = 64
ALIGN_MAX_SHIFT = 12.0  # px: residual misregistration searched for when aligning a scene
ALIGN_MIN_CONFIDENCE = 1.25  # best/runner-up peak ratio needed before a measured shift is applied
# An unconfident measurement within this distance of the folder's own (independent) one is taken as confirmed:
# measured on volkov-s1s2, the coarse stage's best peak lies within 1.5 px of the table on most pairs whose
# peak ratio stays below 1.25 (broad SAR/optical peaks).
ALIGN_AGREE_PX = 1.5
CHANGE_MARGIN_PX = 8  # px around a change mask also left out: mask edges are drawn by hand
TRUSTED = ("measured", "confirmed")  # alignment statuses whose shift was applied
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


@dataclass
class ScenePair:
    """One co-registered scene on the optical grid: ``optical`` and ``sar`` float32 (h, w) in [0, 1].

    ``valid`` is True where both are valid. ``place`` names the ground location: scenes that share it (or
    whose footprints overlap) are one unit for splitting. ``bounds`` is the lon/lat footprint (west, south,
    east, north). ``info`` records the files, the radiometry applied (SAR scale, stretches) and the alignment.
    """

    scene_id: str
    source: str
    optical: np.ndarray
    sar: np.ndarray
    valid: np.ndarray
    place: str = ""
    bounds: tuple[float, float, float, float] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.place = self.place or self.scene_id

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.optical.shape)



def _stack_vrt(files: tuple[Path, ...], folder: Path) -> Path:
    """A VRT stacking single-band files of one grid, so the pipeline can read them as one raster."""
    with rasterio.open(files[0]) as ds:
        width, height, crs, transform = ds.width, ds.height, ds.crs, ds.transform
    bands = []
    for i, f in enumerate(files, 1):
        with rasterio.open(f) as ds:
            if (ds.width, ds.height, ds.crs, ds.transform) != (width, height, crs, transform):
                raise InputError(f"{f}: its grid differs from {files[0]}; the optical bands of a scene must share one")
            gdal_type = _GDAL_TYPES.get(ds.dtypes[0], "Float32")
            nodata = "" if ds.nodata is None else f"<NoDataValue>{ds.nodata!r}</NoDataValue>"
        bands.append(
            f'<VRTRasterBand dataType="{gdal_type}" band="{i}">{nodata}<SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{escape(str(Path(f).resolve()))}</SourceFilename>'
            f"<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        )
    srs = f"<SRS>{escape(crs.to_wkt())}</SRS>" if crs else ""
    gt = ", ".join(repr(v) for v in transform.to_gdal())
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{srs}<GeoTransform>{gt}</GeoTransform>'
           + "".join(bands) + "</VRTDataset>")
    path = folder / "optical.vrt"
    path.write_text(xml)
    return path


def _mat_to_rasters(files: SceneFiles, folder: Path) -> tuple[Path, Path]:
    """The optical and SAR arrays of a ``.mat`` scene written as plain (non-georeferenced) GeoTIFFs, so the
    pipeline reads them like any other raster."""
    from scipy.io import loadmat

    try:
        arrays = loadmat(files.optical[0])
        out = []
        for role, key in zip(("optical", "sar"), files.mat_keys, strict=True):
            a = np.asarray(arrays[key])
            a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
            path = folder / f"{role}.tif"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path, "w", driver="GTiff", width=a.shape[2], height=a.shape[1],
                                   count=a.shape[0], dtype=a.dtype) as ds:
                    ds.write(a)
            out.append(path)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{files.optical[0]}: cannot read arrays {', '.join(files.mat_keys)} ({exc})") from exc
    return out[0], out[1]


def _unchanged(files: SceneFiles, window) -> np.ndarray | None:
    """True where the two dates show the same ground (outside the change mask and its margin), on ``window``."""
    if files.change_mask is None:
        return None
    if files.change_key:
        from scipy.io import loadmat

        mask = np.asarray(loadmat(files.change_mask)[files.change_key], dtype=np.float64)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(files.change_mask) as ds:
                mask = ds.read(1).astype(np.float64)
    mask = mask[..., 0] if mask.ndim == 3 else mask
    changed = mask > (mask.max() / 2 if mask.max() > 0 else 0)  # 0/1 or 0/255 masks alike
    changed = ndi.binary_dilation(changed, structure=np.ones((3, 3), bool), iterations=CHANGE_MARGIN_PX)  # square band
    r, c = int(window.row_off), int(window.col_off)
    return ~changed[r:r + int(window.height), c:c + int(window.width)]


def load_scene(files: SceneFiles, cfg: PairConfig | None = None, align: bool = True) -> ScenePair:
    """Read one scene through the pipeline's RasterPair, over the optical/SAR overlap; with ``align``, take out
    a measured or confirmed residual shift (see :func:`align_scene`)."""
    from geomatch.pipeline.raster import RasterPair

    with tempfile.TemporaryDirectory(prefix="geomatch-scene-") as tmp:
        sar_path = files.sar
        if files.mat_keys:
            (optical_path, sar_path), bands = _mat_to_rasters(files, Path(tmp)), files.optical_bands
        elif files.optical_bands:
            optical_path, bands = files.optical[0], files.optical_bands
        else:
            optical_path, bands = _stack_vrt(files.optical, Path(tmp)), tuple(range(1, len(files.optical) + 1))
        base = cfg or PairConfig(min_overlap_px=MIN_OVERLAP_PX)
        pair_cfg = replace(base, optical_bands=bands, sar_bands=(files.sar_band,),
                           sar_scale=base.sar_scale if files.sar_scale == "auto" else files.sar_scale)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # display images carry no georeference
            with RasterPair(optical_path, sar_path, pair_cfg) as pair:
                window = pair.overlap
                optical, opt_valid = pair.read_optical(window)
                sar, sar_valid = pair.read_sar(window)
                w_, s_, e_, n_ = rasterio.windows.bounds(window, pair.grid.transform)
                bounds = files.bounds
                if pair.grid.crs is not None:
                    bounds = tuple(float(v) for v in transform_bounds(pair.grid.crs, "EPSG:4326", w_, s_, e_, n_))
                info = {
                    "optical": [str(p) for p in files.optical],
                    "optical_bands": list(files.optical_bands) or [p.name for p in files.optical],
                    "sar": str(files.sar),
                    "sar_band": files.sar_band,
                    "sar_scale": pair.sar_scale,
                    "optical_stretch": [pair.optical_stretch.lo, pair.optical_stretch.hi],
                    "sar_stretch": [pair.sar_stretch.lo, pair.sar_stretch.hi],
                    "window": [int(window.col_off), int(window.row_off), int(window.width), int(window.height)],
                }
    unchanged = _unchanged(files, window)
    if unchanged is not None:  # both images: changed ground must not steer the shift measurement either
        opt_valid, sar_valid = opt_valid & unchanged, sar_valid & unchanged
        info["change_mask"] = {"file": str(files.change_mask), "key": files.change_key or None,
                               "margin_px": CHANGE_MARGIN_PX, "unchanged_fraction": round(float(unchanged.mean()), 4)}
    optical, sar = optical.astype(np.float32), sar.astype(np.float32)
    if align:
        sar, sar_valid, info["alignment"] = align_scene(optical, opt_valid, sar, sar_valid,
                                                        reference=files.reference_shift, confirm=files.must_align)
        info["alignment"]["required"] = files.must_align
    return ScenePair(files.scene_id, files.source, optical, sar, opt_valid & sar_valid, files.place, bounds, info)


def left_out_reason(pair: ScenePair) -> str | None:
    """Why a scene must not give positives: its source is known to be misaligned by several pixels
    (``must_align``) and its shift was neither measured confidently nor confirmed."""
    rec = pair.info.get("alignment")
    if rec is None or not rec.get("required") or rec["status"] in TRUSTED:
        return None
    return f"residual shift not established ({rec['status']}: {rec['method']})"


def _shift_image(img: np.ndarray, valid: np.ndarray, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """``out[y, x] = img[y + dy, x + dx]``; pixels with no source are 0 and invalid."""
    h, w = img.shape
    out, ok = np.zeros_like(img), np.zeros_like(valid)
    dst = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    src = slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx))
    out[dst], ok[dst] = img[src], valid[src]
    return out, ok


def align_scene(optical: np.ndarray, optical_valid: np.ndarray, sar: np.ndarray, sar_valid: np.ndarray,
                max_shift: float = ALIGN_MAX_SHIFT, min_confidence: float = ALIGN_MIN_CONFIDENCE,
                reference: tuple[float, float] | None = None, agree_px: float = ALIGN_AGREE_PX,
                confirm: bool = False):
    """Measure the residual optical->SAR shift with the pipeline's coarse stage and remove it in whole pixels.

    Why: the sources' georeferencing is not always as good as their READMEs say. Measured here with this
    estimator, ssl4eo-s12's S1 sits ~3-4 px off its S2 in both axes once resampled by the stored transforms
    (both dates, the same way), while the other s1s2 sources are within ~1-2 px. A positive pair 5 px off
    teaches a matcher the wrong thing. The shift is applied when the estimate is confident (best peak /
    runner-up >= ``min_confidence``: status ``measured``) or, failing that and with ``confirm`` (the sources
    known to be off by several pixels), when its best peak is confirmed (status ``confirmed``): within
    ``agree_px`` of an independent ``reference`` measurement (dx, dy), or of the best peaks of at least three
    of the scene's four quadrants, measured on their own. Otherwise nothing moves (``unconfirmed``;
    ``unusable`` when the estimator could not run). Only an integer shift is applied, so the
    SAR pixels keep their speckle statistics (no resampling blur).
    Returns (sar, sar_valid, record) with the measurement, the reference and the shift applied.
    """
    from geomatch.config import CoarseConfig

    cfg = CoarseConfig(max_shift_px=float(max_shift), downsample=1, min_confidence=float(min_confidence))
    measured, confident, est = _best_shift(optical, optical_valid, sar, sar_valid, cfg)
    confidence = float(est.details.get("confidence", 0.0))
    status, confirmed_by = ("measured" if confident else "unconfirmed" if measured is not None else "unusable"), None
    if status == "unconfirmed" and confirm:
        if reference is not None and np.hypot(*np.subtract(measured, reference)) <= agree_px:
            status, confirmed_by = "confirmed", "reference"
        elif (agree := _quadrants_agreeing(optical, optical_valid, sar, sar_valid, cfg, measured, agree_px)) >= 3:
            status, confirmed_by = "confirmed", f"{agree} of 4 quadrants"
    record = {"measured_shift_px": _rounded_xy(measured), "confidence": _rounded(confidence),
              "reference_shift_px": _rounded_xy(reference),
              "status": status, "confirmed_by": confirmed_by, "applied_shift_px": [0, 0], "method": est.method}
    if status not in TRUSTED:
        return sar, sar_valid, record
    dx, dy = (int(round(v)) for v in measured)
    if dx or dy:
        sar, sar_valid = _shift_image(sar, sar_valid, dx, dy)
        record["applied_shift_px"] = [dx, dy]
    return sar, sar_valid, record


CORNER_SHARE = 0.625  # side of each corner window, as a share of the region's side: overlapping, yet apart


def region_shift(optical: np.ndarray, optical_valid: np.ndarray, sar: np.ndarray, sar_valid: np.ndarray,
                 agree_px: float = ALIGN_AGREE_PX) -> tuple[np.ndarray | None, dict]:
    """The residual optical->SAR shift (dx, dy) of one region (a crop used as a benchmark's truth), or None when
    the region has no single shift; with a record of how it was judged.

    Why: a scene's shift, measured over the whole scene, need not hold in part of it. Measured on the
    volkov-s1s2 validation scenes' 448 px centre crops, the crop's own shift differs from its scene's by
    0.1-4.5 px, and every matcher's mean signed error on the crop follows that difference. The region is measured
    with the same estimator as :func:`align_scene` (best peak, confident or not), and so are its four corner
    windows (``CORNER_SHARE`` of its side each); the shift stands when at least three corners put their best
    peak within ``agree_px`` of the region's. Fewer: the misregistration varies across the region and no
    translation is its truth.
    """
    from geomatch.config import CoarseConfig

    cfg = CoarseConfig(max_shift_px=ALIGN_MAX_SHIFT, downsample=1, min_confidence=ALIGN_MIN_CONFIDENCE)
    measured, _, est = _best_shift(optical, optical_valid, sar, sar_valid, cfg)
    h, w = optical.shape
    qh, qw = int(round(CORNER_SHARE * h)), int(round(CORNER_SHARE * w))
    corners = _window_shifts(optical, optical_valid, sar, sar_valid, cfg, (slice(0, qh), slice(h - qh, h)),
                             (slice(0, qw), slice(w - qw, w)))
    agree = 0 if measured is None else _agreeing(corners, measured, agree_px)
    record = {"region_shift_px": _rounded_xy(measured), "corner_shifts_px": [_rounded_xy(c) for c in corners],
              "corners_agreeing": agree, "confidence": _rounded(est.details.get("confidence", 0.0))}
    return (np.asarray(measured, float) if agree >= 3 else None), record


def tile_shifts(optical: np.ndarray, optical_valid: np.ndarray, sar: np.ndarray, sar_valid: np.ndarray,
                tile: int) -> tuple[np.ndarray, dict]:
    """Per-tile residual shifts of an aligned scene: (2, h, w) float32 of whole pixels (dx, dy: optical p sits at
    SAR p + shift), NaN over tiles with no single shift (:func:`region_shift`); and a record of them.

    Why: a scene's one shift need not hold across it. Measured on the volkov-s1s2 training scenes after their
    scene alignment, in 256 px tiles: in most scenes several tiles sit a pixel or more off the scene's shift
    and several have no single shift at all, so a positive cut there shows two places pixels apart. Tiles are
    about ``tile`` px (the scene split evenly); a tile less than half valid is left NaN (too little to measure).
    """
    h, w = optical.shape
    out = np.full((2, h, w), np.nan, np.float32)
    tiles = []
    for rows in _even_spans(h, tile):
        for cols in _even_spans(w, tile):
            ok = optical_valid[rows, cols] & sar_valid[rows, cols]
            shift = None
            if ok.mean() >= 0.5:
                shift, _ = region_shift(optical[rows, cols], optical_valid[rows, cols], sar[rows, cols],
                                        sar_valid[rows, cols])
            if shift is not None:
                out[:, rows, cols] = np.round(shift)[:, None, None]
            tiles.append([rows.start, cols.start, _rounded_xy(shift)])
    measured = [t[2] for t in tiles if t[2] is not None]
    record = {"tile_px": int(tile), "tiles": len(tiles), "no_single_shift": len(tiles) - len(measured),
              "moved": sum(bool(np.round(s).any()) for s in measured),
              "max_px": max((float(np.abs(s).max()) for s in measured), default=None), "shifts": tiles}
    return out, record


def _even_spans(length: int, tile: int) -> list[slice]:
    """``length`` cut into round(length / tile) (at least one) nearly equal spans."""
    n = max(1, int(round(length / tile)))
    edges = np.linspace(0, length, n + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _rounded(value) -> float | None:
    value = float(value)
    return round(value, 3) if np.isfinite(value) else None


def _rounded_xy(shift) -> list[float] | None:
    return None if shift is None else [round(float(v), 2) for v in shift]


def _window_shifts(optical, optical_valid, sar, sar_valid, cfg, rows, cols) -> list:
    """The best peak (or None) of each window ``rows`` x ``cols`` (two slices each, rows first), measured alone."""
    return [_best_shift(optical[r, c], optical_valid[r, c], sar[r, c], sar_valid[r, c], cfg)[0]
            for r in rows for c in cols]


def _agreeing(shifts: list, shift, agree_px: float) -> int:
    """How many of ``shifts`` lie within ``agree_px`` of ``shift``."""
    return sum(q is not None and np.hypot(*np.subtract(q, shift)) <= agree_px for q in shifts)


def _best_shift(optical, optical_valid, sar, sar_valid, cfg):
    """(shift (dx, dy) or None, confident, estimate): the coarse stage's best peak, refined, even when it is
    not confident on its own (then its first alternative)."""
    from geomatch.pipeline.coarse import centre_shift, estimate_initial

    est = estimate_initial(optical, optical_valid, sar, sar_valid, cfg)
    if est.details.get("shift_px") is not None and est.score > 0:
        return list(est.details["shift_px"]), True, est
    if est.alternatives:
        return centre_shift(est.alternatives[0].affine, optical.shape, 1.0), False, est
    return None, False, est


def _quadrants_agreeing(optical, optical_valid, sar, sar_valid, cfg, shift, agree_px: float) -> int:
    """How many of the four quadrants, measured alone, put their best peak within ``agree_px`` of ``shift``
    (0 when the quadrants are too small to measure: under 128 px a side)."""
    h, w = optical.shape
    if min(h, w) < 256:
        return 0
    quadrants = _window_shifts(optical, optical_valid, sar, sar_valid, cfg, (slice(0, h // 2), slice(h // 2, h)),
                               (slice(0, w // 2), slice(w // 2, w)))
    return _agreeing(quadrants, shift, agree_px)


def iter_scene_pairs(data_dir, sources: tuple[str, ...] | None = None, exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
                     cfg: PairConfig | None = None, align: bool = True) -> Iterator[ScenePair]:
    """Load every scene pair found under ``data_dir`` (see :func:`find_scenes`), one at a time."""
    for files in find_scenes(data_dir, sources, exclude):
        yield load_scene(files, cfg, align)


def load_scene_pairs(data_dir, sources: tuple[str, ...] | None = None, exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
                     cfg: PairConfig | None = None, align: bool = True) -> list[ScenePair]:
    return list(iter_scene_pairs(data_dir, sources, exclude, cfg, align))

