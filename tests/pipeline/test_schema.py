"""The tie-point schema: names, dtypes, shift columns, GeoDataFrame conversion."""

from __future__ import annotations

import numpy as np
import pytest
from factories import make_tiepoints, optical_transform
from rasterio.crs import CRS

from geomatch.pipeline.schema import (
    COLUMNS,
    EXTRA_COLUMNS,
    SCHEMA_VERSION,
    add_shift_columns,
    empty_frame,
    to_geodataframe,
)

DESIGN_ORDER = ["point_id", "ref_col", "ref_row", "ref_x", "ref_y", "tgt_col", "tgt_row", "tgt_x", "tgt_y", "shift_x",
                "shift_y", "shift_abs", "shift_angle", "score", "ratio", "response", "tile_id", "outlier_score",
                "outlier_local", "outlier_model", "outlier", "matcher", "weights"]


def test_columns_are_the_public_contract():
    assert list(COLUMNS) == DESIGN_ORDER
    assert not set(EXTRA_COLUMNS) & set(COLUMNS)
    assert SCHEMA_VERSION == "1.1"  # 1.1: Boolean flags, metre shift columns for geographic CRSs
    assert all(COLUMNS[f].kind == "b" for f in ("outlier_score", "outlier_local", "outlier_model", "outlier"))
    empty = empty_frame()
    assert list(empty.columns) == DESIGN_ORDER + list(EXTRA_COLUMNS) and len(empty) == 0


@pytest.mark.parametrize("dx, dy, angle", [(0, 10, 0), (10, 0, 90), (0, -10, 180), (-10, 0, 270), (5, 5, 45),
                                           (-5, 5, 315)])
def test_shift_angle_is_degrees_from_north_clockwise(dx, dy, angle):
    df = make_tiepoints(4)
    df["tgt_x"] = df["ref_x"] + dx
    df["tgt_y"] = df["ref_y"] + dy
    add_shift_columns(df, optical_transform())
    np.testing.assert_allclose(df["shift_angle"], angle, atol=1e-9)
    np.testing.assert_allclose(df["shift_abs"], np.hypot(dx, dy))
    np.testing.assert_allclose(df["shift_x"], dx)
    # 10 m pixels, north-up: +y (north) is a negative row shift.
    np.testing.assert_allclose(df["shift_col_px"], dx / 10, atol=1e-9)
    np.testing.assert_allclose(df["shift_row_px"], -dy / 10, atol=1e-9)


def test_pixel_shifts_without_transform_come_from_the_ref_columns():
    df = add_shift_columns(make_tiepoints(10, shift_px=(1.5, -2.0)))
    np.testing.assert_allclose(df["shift_col_px"], 1.5, atol=1e-9)
    np.testing.assert_allclose(df["shift_row_px"], -2.0, atol=1e-9)
    # Pixel-space grids (no CRS: y grows downwards): north is -y, i.e. up in the image.
    from affine import Affine

    px = make_tiepoints(6, transform=Affine.identity(), shift_px=(0.0, -3.0))
    add_shift_columns(px)
    np.testing.assert_allclose(px["shift_angle"], 0.0, atol=1e-9)


def test_to_geodataframe_types_order_geometry_and_errors():
    df = add_shift_columns(make_tiepoints(8), optical_transform())
    df["view_col"] = 1.0  # extra columns pass through, after the schema's
    shuffled = df[list(reversed(df.columns))]
    gdf = to_geodataframe(shuffled, CRS.from_epsg(32631))
    assert list(gdf.columns[:len(COLUMNS)]) == DESIGN_ORDER
    assert gdf.columns[-1] == "geometry" and "view_col" in gdf.columns
    for name, dt in COLUMNS.items():
        if dt.kind != "O":
            assert gdf[name].dtype == dt, name
    assert gdf.crs.to_epsg() == 32631
    np.testing.assert_allclose(gdf.geometry.x, df["ref_x"])
    np.testing.assert_allclose(gdf.geometry.y, df["ref_y"])
    with pytest.raises(ValueError, match="lacks required column\\(s\\): score, weights"):
        to_geodataframe(df.drop(columns=["score", "weights"]), None)
    bad = df.copy()
    bad.loc[0, "outlier"] = np.nan
    with pytest.raises(ValueError, match="outlier has missing values"):
        to_geodataframe(bad, None)
    assert len(to_geodataframe(empty_frame(), "EPSG:4326")) == 0
    flags = to_geodataframe(df, None)
    assert flags["outlier"].dtype == bool and list(flags["outlier"]) == [True, True] + [False] * 6
