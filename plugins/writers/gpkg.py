"""GeoPackage writer: layer ``tiepoints`` (points in the optical CRS) and the non-spatial table ``runs``.

Written as GeoPackage 1.2 (``application_id`` GPKG, ``user_version`` 10200), not GDAL's default 1.4: GDAL
3.6 (Debian 12, Ubuntu 24.04) warns on opening a 1.4 file ("may only be partially supported") and its
``validate_gpkg.py`` rejects the 1.4 R-tree triggers (Req 75). 1.2 has everything these tables use (points,
R-tree index, ``gpkg_metadata``); GDAL 2.2 and later, QGIS and geopandas read it without a warning.
Flags are Boolean fields, ``runs.started``/``finished`` DateTime (UTC).
"""

from __future__ import annotations

import time
from pathlib import Path

from geomatch.pipeline.schema import SCHEMA_VERSION
from geomatch.pipeline.writer import Writer, runs_record

TIEPOINTS_LAYER = "tiepoints"
RUNS_LAYER = "runs"
GPKG_VERSION = "1.2"


def shift_units(crs) -> str:
    """What ``shift_x``/``shift_y`` are measured in, for the layer's metadata."""
    if crs is None:
        return "pixels (no CRS)"
    if crs.is_geographic:
        return "degrees; shift_east_m/shift_north_m/shift_abs_m in metres"
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    return f"{unit} (CRS units)"


class GeoPackageWriter(Writer):
    """One file that ``ogrinfo``, QGIS and geopandas open directly: tie points plus the run that made them."""

    name = "gpkg"
    suffix = ".gpkg"

    def _write(self, gdf, run_info: dict, path: Path) -> None:
        import pandas as pd
        import pyogrio

        t = time.perf_counter()
        pyogrio.write_dataframe(
            gdf, path, layer=TIEPOINTS_LAYER, driver="GPKG", geometry_type="Point",
            dataset_options={"VERSION": GPKG_VERSION},
            layer_options={"DESCRIPTION": "geomatch tie points; pixel convention: GDAL (0,0) = upper-left corner"},
            layer_metadata={"geomatch_schema_version": SCHEMA_VERSION,
                            "geomatch_shift_units": shift_units(getattr(gdf, "crs", None))},
        )
        runs = pd.DataFrame([runs_record(run_info, write_s=time.perf_counter() - t)])
        pyogrio.write_dataframe(runs, path, layer=RUNS_LAYER, driver="GPKG",
                                layer_options={"DESCRIPTION": "geomatch runs: the resolved pipeline and provenance"})
