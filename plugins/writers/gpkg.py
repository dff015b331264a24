"""GeoPackage writer: layer ``tiepoints`` (points in the optical CRS) and the non-spatial table ``runs``."""

from __future__ import annotations

from pathlib import Path

from geomatch.pipeline.schema import SCHEMA_VERSION
from geomatch.pipeline.writer import Writer, runs_record

TIEPOINTS_LAYER = "tiepoints"
RUNS_LAYER = "runs"


class GeoPackageWriter(Writer):
    """One file that ``ogrinfo``, QGIS and geopandas open directly: tie points plus the run that made them."""

    name = "gpkg"
    suffix = ".gpkg"

    def _write(self, gdf, run_info: dict, path: Path) -> None:
        import pandas as pd
        import pyogrio

        pyogrio.write_dataframe(
            gdf, path, layer=TIEPOINTS_LAYER, driver="GPKG", geometry_type="Point",
            layer_metadata={"geomatch_schema_version": SCHEMA_VERSION,
                            "DESCRIPTION": "geomatch tie points; pixel convention: GDAL (0,0) = upper-left corner"},
        )
        runs = pd.DataFrame([runs_record(run_info)])
        pyogrio.write_dataframe(runs, path, layer=RUNS_LAYER, driver="GPKG")
