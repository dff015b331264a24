"""CSV writer: every tie-point column plus a WKT point, and a ``<name>.json`` sidecar with the run."""

from __future__ import annotations

import json
from pathlib import Path

from geomatch.pipeline.schema import SCHEMA_VERSION
from geomatch.pipeline.writer import Writer, atomic_output, runs_record


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


class CSVWriter(Writer):
    """Plain CSV for scripts and spreadsheets; QGIS loads it as delimited text from the ``wkt`` column
    (or ``ref_x``/``ref_y``) with the CRS recorded in the sidecar."""

    name = "csv"
    suffix = ".csv"

    def outputs(self, path) -> list[Path]:
        return [Path(path), sidecar_path(path)]

    def write(self, gdf, run_info: dict, path, overwrite: bool = False) -> Path:
        self.check(path, overwrite)
        crs = gdf.crs.to_wkt() if getattr(gdf, "crs", None) is not None else None
        with atomic_output(sidecar_path(path), overwrite) as tmp:
            sidecar = {"run": run_info, "runs_record": runs_record(run_info), "schema_version": SCHEMA_VERSION,
                       "crs_wkt": crs, "points": int(len(gdf))}
            tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True, default=str), encoding="utf-8")
        return super().write(gdf, run_info, path, overwrite=True)  # checked above, before the sidecar

    def _write(self, gdf, run_info: dict, path: Path) -> None:
        frame = gdf.drop(columns=gdf.geometry.name) if hasattr(gdf, "geometry") else gdf.copy()
        xs, ys = frame["ref_x"].to_numpy(float).tolist(), frame["ref_y"].to_numpy(float).tolist()
        frame["wkt"] = [f"POINT ({x!r} {y!r})" for x, y in zip(xs, ys, strict=True)]
        frame.to_csv(path, index=False)
