"""CSV writer: every tie-point column plus a WKT point, with the sidecars GDAL and QGIS read.

- ``<name>.prj``: the CRS as WKT, which GDAL's CSV driver (``ogrinfo``, QGIS) takes as the layer's CRS;
- ``<name>.csvt``: one GDAL type per column (``Integer(Boolean)`` flags, ``Real`` coordinates, ``WKT``
  geometry), so the columns are not read back as text;
- ``<name>.csv.json``: the run (as in the GeoPackage's ``runs`` table).

Flags are written as 0/1, the form both GDAL's Boolean subtype and spreadsheets read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from geomatch.pipeline.schema import SCHEMA_VERSION
from geomatch.pipeline.writer import Writer, atomic_output, runs_record


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def prj_path(path) -> Path:
    return Path(path).with_suffix(".prj")


def csvt_path(path) -> Path:
    return Path(path).with_suffix(".csvt")


def _gdal_type(dtype) -> str:
    kind = getattr(dtype, "kind", "O")  # pandas' string dtype is not a numpy dtype
    if kind == "b":
        return "Integer(Boolean)"
    if kind in "iu":
        return "Integer64" if dtype.itemsize > 4 else "Integer"
    if kind == "f":
        return "Real"
    return "String"


def table(gdf):
    """The CSV's columns: the table without its geometry, flags as 0/1, and a ``wkt`` point column."""
    frame = gdf.drop(columns=gdf.geometry.name) if hasattr(gdf, "geometry") else gdf.copy()
    types = [_gdal_type(frame[c].dtype) for c in frame.columns] + ["WKT"]
    for c in frame.columns:
        if getattr(frame[c].dtype, "kind", "O") == "b":
            frame[c] = frame[c].astype(np.int8)
    xs, ys = frame["ref_x"].to_numpy(float).tolist(), frame["ref_y"].to_numpy(float).tolist()
    frame["wkt"] = [f"POINT ({x!r} {y!r})" for x, y in zip(xs, ys, strict=True)]
    return frame, types


class CSVWriter(Writer):
    """Plain CSV for scripts and spreadsheets; ``ogrinfo`` and QGIS read it as points in its CRS (``.prj``)."""

    name = "csv"
    suffix = ".csv"

    def outputs(self, path) -> list[Path]:
        return [Path(path), prj_path(path), csvt_path(path), sidecar_path(path)]

    def write(self, gdf, run_info: dict, path, overwrite: bool = False) -> Path:
        self.check(path, overwrite)
        t = time.perf_counter()
        frame, types = table(gdf)
        crs = gdf.crs if getattr(gdf, "crs", None) is not None else None
        with atomic_output(csvt_path(path), overwrite) as tmp:
            tmp.write_text(",".join(f'"{t}"' for t in types) + "\n", encoding="utf-8")
        if crs is not None:
            with atomic_output(prj_path(path), overwrite) as tmp:
                tmp.write_text(crs.to_wkt(), encoding="utf-8")
        with atomic_output(path, overwrite) as tmp:
            frame.to_csv(tmp, index=False)
        with atomic_output(sidecar_path(path), overwrite) as tmp:
            sidecar = {"run": run_info, "runs_record": runs_record(run_info, write_s=time.perf_counter() - t),
                       "schema_version": SCHEMA_VERSION, "crs_wkt": crs.to_wkt() if crs is not None else None,
                       "points": int(len(gdf))}
            tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True, default=str), encoding="utf-8")
        return Path(path)
