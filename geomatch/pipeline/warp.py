"""Warping the SAR onto the optical grid through a fitted model, and the outputs ``geomatch register`` writes.

The output grid is the optical raster's, taken as it is (CRS, transform, width, height): nothing is rounded
or re-derived, which is what ``gdalwarp`` on a GCP VRT does not give without ``-te/-tr/-t_srs``. Rows are
processed in blocks, each reading only the SAR window its source positions fall in, so memory is bounded by
the block, not the scene. Source positions are evaluated exactly on a lattice every ``step`` optical pixels
and interpolated bilinearly in between (GDAL's approximate transformer does the same); for the smooth models
here that costs under 0.01 px, and order-1 models are exact.

Files are written as a tiled GeoTIFF in a temporary folder beside the output, then copied by GDAL's COG
driver (tiles, overviews, compression) onto the atomic temporary path, which is renamed into place.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from scipy import ndimage as ndi

from geomatch.errors import GeomatchError, InputError
from geomatch.fileio import atomic_output
from geomatch.pipeline.affinetools import apply, compose

RESAMPLING = {"nearest": 0, "bilinear": 1, "cubic": 3}
COMPRESSION = ("deflate", "lzw", "zstd", "none")
BLOCK_ROWS = 512
TILE = 256  # COG tile side; small enough that a 448-pixel test scene still gets an overview level


def grid_of(path) -> dict:
    """The exact grid of a raster file: ``crs``, ``transform``, ``width``, ``height``."""
    with rasterio.open(path) as src:
        return {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}


def source_positions(model, row0: int, row1: int, width: int, step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """SAR pixel positions (col, row) sampled by optical pixel centres in rows ``row0:row1``."""
    rows = np.arange(row0, row1) + 0.5
    cols = np.arange(width) + 0.5
    if step <= 1:
        cc, rr = np.meshgrid(cols, rows)
        return model(cc, rr)
    lat_c = np.append(np.arange(0.5, width, step), width - 0.5)
    lat_r = np.append(np.arange(row0 + 0.5, row1, step), row1 - 0.5)
    cc, rr = np.meshgrid(lat_c, lat_r)
    sc, sr = model(cc, rr)
    # Lattice index of every pixel, for a bilinear read of the lattice values.
    ic = np.interp(cols, lat_c, np.arange(lat_c.size))
    ir = np.interp(rows, lat_r, np.arange(lat_r.size))
    gi, gj = np.meshgrid(ir, ic, indexing="ij")
    return (ndi.map_coordinates(sc, [gi, gj], order=1, mode="nearest"),
            ndi.map_coordinates(sr, [gi, gj], order=1, mode="nearest"))


def _default_nodata(dtype: str):
    return float("nan") if np.dtype(dtype).kind == "f" else 0


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return np.clip(np.rint(values), info.min, info.max).astype(dt)
    return values.astype(dt)


def _sample_block(src, sc: np.ndarray, sr: np.ndarray, order: int, dst_nodata) -> np.ndarray:
    """All bands of ``src`` at SAR positions (sc, sr); nodata where any contributing source pixel is invalid."""
    h, w = sc.shape
    out = np.full((src.count, h, w), dst_nodata, dtype=np.float64)
    ok = np.isfinite(sc) & np.isfinite(sr)
    if not ok.any():
        return out
    reach = 2 if order == 3 else 1
    c0 = max(int(np.floor(np.nanmin(sc[ok]))) - reach - 1, 0)
    r0 = max(int(np.floor(np.nanmin(sr[ok]))) - reach - 1, 0)
    c1 = min(int(np.ceil(np.nanmax(sc[ok]))) + reach + 1, src.width)
    r1 = min(int(np.ceil(np.nanmax(sr[ok]))) + reach + 1, src.height)
    if c1 <= c0 or r1 <= r0:
        return out
    win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
    # Continuous SAR position (GDAL: pixel centres at .5) -> index into the window array.
    coords = [np.where(ok, sr, -1e9) - 0.5 - r0, np.where(ok, sc, -1e9) - 0.5 - c0]
    for b in range(src.count):
        data = src.read(b + 1, window=win).astype(np.float64)
        bad = (src.read_masks(b + 1, window=win) == 0) | ~np.isfinite(data)
        if order == 3:  # a cubic reads 4 x 4 neighbours: grow the invalid area to match
            bad = ndi.binary_dilation(bad, iterations=1)
        values = ndi.map_coordinates(np.where(bad, 0.0, data), coords, order=order, mode="constant", cval=0.0,
                                     prefilter=order > 1)
        invalid = ndi.map_coordinates(bad.astype(np.float32), coords, order=min(order, 1), mode="constant",
                                      cval=1.0) > 1e-6
        out[b] = np.where(invalid | ~ok, dst_nodata, values)
    return out


def _cog_copy(tmp_tif: Path, dest: Path, compress: str, overview_resampling: str) -> None:
    opts = {"BLOCKSIZE": str(TILE), "OVERVIEWS": "AUTO", "OVERVIEW_RESAMPLING": overview_resampling,
            "BIGTIFF": "IF_SAFER", "COMPRESS": compress.upper() if compress != "none" else "NONE"}
    if compress in ("deflate", "zstd", "lzw"):
        opts["PREDICTOR"] = "YES"
    rasterio.shutil.copy(str(tmp_tif), str(dest), driver="COG", **opts)


def write_cog(dest, profile: dict, fill, overwrite: bool = False, compress: str = "deflate",
              overview_resampling: str = "AVERAGE", descriptions=None, tags: dict | None = None) -> Path:
    """Write a Cloud-Optimised GeoTIFF atomically; ``fill(dataset)`` writes the pixels into a tiled GeoTIFF."""
    if compress not in COMPRESSION:
        raise InputError(f"--compress {compress}: choose one of {', '.join(COMPRESSION)}")
    dest = Path(dest)
    with atomic_output(dest, overwrite) as tmp, tempfile.TemporaryDirectory(dir=dest.parent,
                                                                            prefix=".geomatch-") as work:
        tmp_tif = Path(work) / "stage.tif"
        prof = {**profile, "driver": "GTiff", "tiled": True, "blockxsize": TILE, "blockysize": TILE}
        with rasterio.open(tmp_tif, "w", **prof) as dst:
            fill(dst)
            for i, text in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, text)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
        _cog_copy(tmp_tif, tmp, compress, overview_resampling)
    return dest


def warp_onto_grid(sar_path, grid: dict, model, dest, *, resampling: str = "bilinear", dst_nodata=None,
                   compress: str = "deflate", step: int = 4, overwrite: bool = False, tags: dict | None = None) -> dict:
    """Resample every band of ``sar_path`` onto ``grid`` through ``model`` (optical px -> SAR px) into a COG.

    Returns ``{"path", "nodata", "valid_fraction"}``; raises GeomatchError if GDAL wrote another grid.
    """
    if resampling not in RESAMPLING:
        raise InputError(f"--resampling {resampling}: choose one of {', '.join(RESAMPLING)}")
    order = RESAMPLING[resampling]
    with rasterio.open(sar_path) as src:
        dtype = src.dtypes[0]
        nodata = src.nodata if dst_nodata is None and src.nodata is not None else dst_nodata
        nodata = _default_nodata(dtype) if nodata is None else nodata
        profile = {"count": src.count, "dtype": dtype, "nodata": nodata, "crs": grid["crs"],
                   "transform": grid["transform"], "width": grid["width"], "height": grid["height"]}
        valid = [0]

        def fill(dst):
            for r0 in range(0, grid["height"], BLOCK_ROWS):
                r1 = min(r0 + BLOCK_ROWS, grid["height"])
                sc, sr = source_positions(model, r0, r1, grid["width"], step)
                block = _sample_block(src, sc, sr, order, nodata)
                valid[0] += int((block[0] != nodata).sum()) if np.isfinite(nodata) else int(
                    np.isfinite(block[0]).sum())
                dst.write(_cast(block, dtype), window=rasterio.windows.Window(0, r0, grid["width"], r1 - r0))

        descriptions = [d or "" for d in src.descriptions] if any(src.descriptions) else None
        write_cog(dest, profile, fill, overwrite, compress, "NEAREST" if order == 0 else "AVERAGE",
                  descriptions, tags)
    written = grid_of(dest)
    if (written["crs"] != grid["crs"] or tuple(written["transform"]) != tuple(grid["transform"])
            or (written["width"], written["height"]) != (grid["width"], grid["height"])):
        raise GeomatchError(f"{dest}: GDAL wrote grid {written}, not the optical grid {grid}")
    return {"path": str(dest), "nodata": nodata, "valid_fraction": valid[0] / (grid["width"] * grid["height"])}


def sar_to_map_fn(sar_path, grid: dict):
    """SAR pixel (col, row) -> map (x, y) in the optical CRS, through the SAR's own georeferencing."""
    from rasterio.warp import transform as crs_transform

    with rasterio.open(sar_path) as src:
        s_crs, s_t = src.crs, src.transform

    def to_map(cols, rows):
        x, y = apply(s_t, cols, rows)
        if s_crs is not None and grid["crs"] is not None and s_crs != grid["crs"]:
            x, y = crs_transform(s_crs, grid["crs"], x.ravel(), y.ravel())
            return np.reshape(x, cols.shape), np.reshape(y, cols.shape)
        return x, y

    return to_map


def write_shift_field(sar_path, grid: dict, model, dest, step: int = 32, overwrite: bool = False,
                      compress: str = "deflate") -> Path:
    """2-band GeoTIFF on a grid ``step`` times coarser than the optical one: the model's shift at each node.

    Band 1 ``shift_x``, band 2 ``shift_y``: where the SAR shows a node's content minus the node's own position,
    in map units of the optical CRS (the tie-point table's ``shift_x``/``shift_y`` convention); NaN where the
    model puts a node outside the SAR raster.
    """
    w, h = -(-grid["width"] // step), -(-grid["height"] // step)
    transform = compose(grid["transform"], Affine.scale(step))
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    cols, rows = jj * step, ii * step  # node centres in optical pixels
    sc, sr = model(cols, rows)
    with rasterio.open(sar_path) as src:
        inside = (sc >= 0) & (sr >= 0) & (sc <= src.width) & (sr <= src.height)
    tx, ty = sar_to_map_fn(sar_path, grid)(sc, sr)
    rx, ry = apply(grid["transform"], cols, rows)
    field = np.stack([np.where(inside, tx - rx, np.nan), np.where(inside, ty - ry, np.nan)]).astype(np.float32)
    profile = {"count": 2, "dtype": "float32", "nodata": float("nan"), "crs": grid["crs"], "transform": transform,
               "width": w, "height": h}
    units = "map units of the optical CRS"
    if grid["crs"] is not None and grid["crs"].is_geographic:
        units = "degrees (geographic optical CRS)"
    return write_cog(dest, profile, lambda dst: dst.write(field), overwrite, compress, "AVERAGE",
                     [f"shift_x (target minus reference, {units})", f"shift_y (target minus reference, {units})"],
                     {"geomatch_field_step_px": step, "geomatch_units": units})
