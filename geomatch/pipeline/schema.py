"""The tie-point table: a public contract (see ../shared/DESIGN.md and the README's output section).

Pixel coordinates follow GDAL/rasterio: (0, 0) is the upper-left corner of the upper-left pixel, so the
centre of pixel (i, j) is (j + 0.5, i + 0.5) as (col, row). ``ref_*`` are on the optical raster's grid,
``tgt_col``/``tgt_row`` on the SAR raster's OWN grid (not the warped view), all ``*_x``/``*_y`` in map
units of the optical CRS. Columns may be added; none may be renamed, removed or retyped without bumping
``SCHEMA_VERSION`` (recorded in every run's ``runs`` row).

Units: ``shift_x``/``shift_y``/``shift_abs`` are in the optical CRS's units, i.e. DEGREES when that CRS is
geographic; then ``shift_east_m``/``shift_north_m``/``shift_abs_m`` give the same shift in metres (geodesic,
on the CRS's ellipsoid) and are written only then. ``shift_col_px``/``shift_row_px`` are optical pixels.

1.1: the outlier flags are Boolean (were int16); the runs table's timestamps are DateTime; metre columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCHEMA_VERSION = "1.1"

_F8 = np.dtype("float64")
_FLAG = np.dtype(bool)  # GeoPackage and CSV (.csvt) store these as Integer(Boolean): QGIS shows a checkbox

COLUMNS: dict[str, np.dtype] = {
    "point_id": np.dtype("int64"),
    "ref_col": _F8,
    "ref_row": _F8,
    "ref_x": _F8,
    "ref_y": _F8,
    "tgt_col": _F8,
    "tgt_row": _F8,
    "tgt_x": _F8,
    "tgt_y": _F8,
    "shift_x": _F8,  # target minus reference, map units
    "shift_y": _F8,
    "shift_abs": _F8,
    "shift_angle": _F8,  # degrees from north, clockwise, in [0, 360)
    "score": _F8,
    "ratio": _F8,
    "response": _F8,
    "tile_id": np.dtype("int32"),
    "outlier_score": _FLAG,
    "outlier_local": _FLAG,
    "outlier_model": _FLAG,
    "outlier": _FLAG,
    "matcher": np.dtype(object),
    "weights": np.dtype(object),
}

# Optional, written when present, always after the required columns.
EXTRA_COLUMNS: dict[str, np.dtype] = {
    "shift_col_px": _F8,  # target minus reference in optical pixels (columns)
    "shift_row_px": _F8,
    "residual_px": _F8,  # distance to the fitted model, optical pixels
    "simulated": np.dtype(bool),  # True for the demo's simulated SAR
    "shift_east_m": _F8,  # geographic CRS only: the shift in metres, east and north components
    "shift_north_m": _F8,
    "shift_abs_m": _F8,
}
METRE_COLUMNS = ("shift_east_m", "shift_north_m", "shift_abs_m")

_FLAGS = ("outlier_score", "outlier_local", "outlier_model", "outlier")


def empty_frame() -> pd.DataFrame:
    """A zero-row table with every required and extra column at its dtype."""
    cols = {**COLUMNS, **EXTRA_COLUMNS}
    return pd.DataFrame({name: pd.Series([], dtype=str if dt.kind == "O" else dt) for name, dt in cols.items()})


def pixel_affine(df: pd.DataFrame, transform=None):
    """(x, y) -> (col, row) on the optical grid, from the grid transform or fitted on the ref columns."""
    if transform is not None:
        inv = ~transform
        return np.array([[inv.a, inv.b, inv.c], [inv.d, inv.e, inv.f]])
    if not {"ref_col", "ref_row"} <= set(df.columns) or len(df) < 3:
        return None
    design = np.column_stack([df["ref_x"], df["ref_y"], np.ones(len(df))]).astype(float)
    if np.linalg.matrix_rank(design - design.mean(axis=0) * [1, 1, 0]) < 3:
        return None  # collinear points do not determine the grid
    target = np.column_stack([df["ref_col"], df["ref_row"]]).astype(float)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return coef.T


def add_shift_columns(df: pd.DataFrame, transform=None) -> pd.DataFrame:
    """Fill shift_x/y/abs/angle (and shift_col_px/row_px) from ref_x/y and tgt_x/y; returns ``df``.

    The angle is measured from north (the optical grid's up direction) clockwise: 0 = north, 90 = east.
    ``transform`` is the optical grid's affine; without it the pixel shifts come from fitting the grid
    on the ref columns (exact for three or more non-collinear points) and are NaN otherwise.
    """
    dx = df["tgt_x"].to_numpy(float) - df["ref_x"].to_numpy(float)
    dy = df["tgt_y"].to_numpy(float) - df["ref_y"].to_numpy(float)
    aff = pixel_affine(df, transform)
    # North is where rows decrease: +y for north-up rasters, -y for pixel-space grids (y down).
    north_sign = 1.0 if aff is None or aff[1, 1] <= 0 else -1.0
    df["shift_x"] = dx
    df["shift_y"] = dy
    df["shift_abs"] = np.hypot(dx, dy)
    df["shift_angle"] = np.degrees(np.arctan2(dx, north_sign * dy)) % 360.0
    if aff is not None:
        df["shift_col_px"] = aff[0, 0] * dx + aff[0, 1] * dy
        df["shift_row_px"] = aff[1, 0] * dx + aff[1, 1] * dy
    elif "shift_col_px" not in df.columns:
        df["shift_col_px"] = np.nan
        df["shift_row_px"] = np.nan
    return df


def add_metre_shifts(df: pd.DataFrame, crs) -> pd.DataFrame:
    """For a geographic ``crs`` (x = longitude, y = latitude, degrees): the shifts in metres; returns ``df``.

    Geodesic on the CRS's ellipsoid from each reference point to its target, split into east and north by
    the forward azimuth. Other CRSs are left alone: their ``shift_x``/``shift_y`` are already map units.
    """
    from pyproj import CRS as ProjCRS
    from pyproj import Geod

    if crs is None or df.empty:
        return df
    pcrs = ProjCRS.from_user_input(_crs_arg(crs))
    if not pcrs.is_geographic:
        return df
    ell = pcrs.ellipsoid
    geod = Geod(ellps="WGS84") if ell is None else Geod(a=ell.semi_major_metre, b=ell.semi_minor_metre)
    az, _, dist = geod.inv(df["ref_x"].to_numpy(float), df["ref_y"].to_numpy(float),
                           df["tgt_x"].to_numpy(float), df["tgt_y"].to_numpy(float))
    az = np.radians(np.asarray(az, float))
    df["shift_east_m"] = dist * np.sin(az)
    df["shift_north_m"] = dist * np.cos(az)
    df["shift_abs_m"] = np.asarray(dist, float)
    return df


def _crs_arg(crs):
    if crs is None:
        return None
    to_wkt = getattr(crs, "to_wkt", None)
    return to_wkt() if callable(to_wkt) else crs


def to_geodataframe(df: pd.DataFrame, crs):
    """Typed GeoDataFrame in schema column order with Point(ref_x, ref_y) geometry in ``crs``.

    Adds the metre shift columns when ``crs`` is geographic (:func:`add_metre_shifts`). Raises ValueError
    naming any missing required column or a NaN in an integer or Boolean column.
    """
    import geopandas as gpd

    missing = [c for c in COLUMNS if c not in df.columns]
    if not missing and not set(METRE_COLUMNS) <= set(df.columns):
        df = add_metre_shifts(df.copy(), crs)
    if missing:
        raise ValueError(f"tie-point table lacks required column(s): {', '.join(missing)}")
    out = {}
    for name, dt in {**COLUMNS, **{k: v for k, v in EXTRA_COLUMNS.items() if k in df.columns}}.items():
        col = df[name]
        if dt.kind in "iub":
            if col.isna().any():
                raise ValueError(f"tie-point column {name} has missing values; it must be {dt}")
            out[name] = col.to_numpy().astype(dt)
        elif dt.kind == "O":
            out[name] = col.astype(str).to_numpy()
        else:
            out[name] = col.to_numpy(dtype=dt)
    for name in df.columns:
        if name not in out and name != "geometry":
            out[name] = df[name].to_numpy()
    frame = pd.DataFrame(out, index=pd.RangeIndex(len(df)))
    geometry = gpd.points_from_xy(frame["ref_x"], frame["ref_y"])
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=_crs_arg(crs))
