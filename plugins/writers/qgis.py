"""QGIS Georeferencer ``.points`` export (File > Load GCP Points on the SAR raster).

Format (QGIS 3): a ``#CRS: <WKT>`` line, then ``mapX,mapY,sourceX,sourceY,enable,dX,dY,residual``.
``mapX``/``mapY`` are ``ref_x``/``ref_y`` in the optical CRS. The source side follows what QGIS writes:
for a raster without georeferencing, pixel column and the NEGATIVE pixel row (QGIS shows such a
raster with y = -row), i.e. ``(tgt_col, -tgt_row)``; for a georeferenced SAR raster, the SAR's own map
coordinates of that pixel position (pass its ``source_transform``). Outliers are written with
``enable = 0`` so they can be inspected and re-enabled; ``residual`` is ``residual_px`` when present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geomatch.pipeline.affinetools import apply
from geomatch.pipeline.writer import Writer, atomic_output

HEADER = "mapX,mapY,sourceX,sourceY,enable,dX,dY,residual"


def _is_identity(t) -> bool:
    return t is None or tuple(t)[:6] == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def qgis_points_text(gdf, source_transform=None) -> str:
    col, row = gdf["tgt_col"].to_numpy(float), gdf["tgt_row"].to_numpy(float)
    if _is_identity(source_transform):
        sx, sy = col, -row
    else:
        sx, sy = apply(source_transform, col, row)
    enable = (gdf["outlier"].to_numpy() == 0).astype(int)
    resid = gdf["residual_px"].to_numpy(float) if "residual_px" in gdf.columns else np.zeros(len(gdf))
    resid = np.nan_to_num(resid)
    lines = []
    if getattr(gdf, "crs", None) is not None:
        lines.append("#CRS: " + gdf.crs.to_wkt().replace("\n", " "))
    lines.append(HEADER)
    mx, my = gdf["ref_x"].to_numpy(float).tolist(), gdf["ref_y"].to_numpy(float).tolist()
    sx, sy = np.asarray(sx, float).tolist(), np.asarray(sy, float).tolist()
    resid, enable = resid.tolist(), enable.tolist()
    for i in range(len(gdf)):
        lines.append(f"{mx[i]!r},{my[i]!r},{sx[i]!r},{sy[i]!r},{enable[i]},0,0,{resid[i]!r}")
    return "\n".join(lines) + "\n"


def write_qgis_points(gdf, path, source_transform=None, overwrite: bool = False) -> Path:
    """Write a QGIS ``.points`` file atomically; ``source_transform`` is the SAR raster's affine, if any."""
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(qgis_points_text(gdf, source_transform), encoding="utf-8")
    return Path(path)


class QGISPointsWriter(Writer):
    name = "points"
    suffix = ".points"

    def _write(self, gdf, run_info: dict, path: Path) -> None:
        import rasterio

        from geomatch_plugins.writers.vrt import sar_path_from

        with rasterio.open(sar_path_from(run_info)) as src:
            transform = None if src.crs is None else src.transform
        path.write_text(qgis_points_text(gdf, transform), encoding="utf-8")
