"""GDAL GCP export: a VRT of the original SAR raster carrying the kept tie points as GCPs.

Each GCP maps the SAR's own pixel/line (``tgt_col``, ``tgt_row``, GDAL convention) to the reference
position (``ref_x``, ``ref_y``) in the optical CRS, which is the GCP projection. So
``gdalwarp -tps tiepoints.vrt sar_registered.tif`` (or ``-order 1`` for an affine) puts the SAR onto
the optical raster's georeferencing. Only points with ``outlier == 0`` are written.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from geomatch.errors import InputError
from geomatch.pipeline.writer import Writer

log = logging.getLogger(__name__)

_GDAL_TYPES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
    "uint64": "UInt64", "int64": "Int64", "float32": "Float32", "float64": "Float64",
    "complex64": "CFloat32", "complex128": "CFloat64",
}


def sar_path_from(run_info: dict) -> str:
    path = run_info.get("sar_path") or (run_info.get("inputs") or {}).get("sar", {}).get("path")
    if not path:
        raise InputError("the VRT writer needs the SAR raster's path (run_info['inputs']['sar']['path'])")
    return str(Path(path).resolve())


def gcp_vrt_xml(gdf, sar_path: str, metadata: dict | None = None) -> str:
    """The VRT document (text) for the kept points of ``gdf`` over the raster at ``sar_path``."""
    import rasterio

    kept = gdf[gdf["outlier"].to_numpy() == 0]
    with rasterio.open(sar_path) as src:
        width, height, dtypes, nodatavals = src.width, src.height, src.dtypes, src.nodatavals
        blocks = src.block_shapes
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    gcps = ET.SubElement(root, "GCPList")
    if getattr(gdf, "crs", None) is not None:
        gcps.set("Projection", gdf.crs.to_wkt())
    cols = {c: kept[c].to_numpy(float) for c in ("tgt_col", "tgt_row", "ref_x", "ref_y")}
    ids = kept["point_id"].to_numpy()
    scores = kept["score"].to_numpy(float)
    for i in range(len(kept)):
        ET.SubElement(gcps, "GCP", Id=str(int(ids[i])), Info=f"score={scores[i]:.4f}",
                      Pixel=repr(float(cols["tgt_col"][i])), Line=repr(float(cols["tgt_row"][i])),
                      X=repr(float(cols["ref_x"][i])), Y=repr(float(cols["ref_y"][i])), Z="0")
    if metadata:
        md = ET.SubElement(root, "Metadata")
        for key, value in metadata.items():
            ET.SubElement(md, "MDI", key=str(key)).text = str(value)
    for band, dtype in enumerate(dtypes, start=1):
        gdal_type = _GDAL_TYPES.get(np.dtype(dtype).name, "Float64")
        vb = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(band))
        if nodatavals[band - 1] is not None:
            ET.SubElement(vb, "NoDataValue").text = repr(float(nodatavals[band - 1]))
        source = ET.SubElement(vb, "SimpleSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = sar_path
        ET.SubElement(source, "SourceBand").text = str(band)
        by, bx = blocks[band - 1]
        ET.SubElement(source, "SourceProperties", RasterXSize=str(width), RasterYSize=str(height),
                      DataType=gdal_type, BlockXSize=str(bx), BlockYSize=str(by))
        ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(width), ySize=str(height))
        ET.SubElement(source, "DstRect", xOff="0", yOff="0", xSize=str(width), ySize=str(height))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


class GCPVRTWriter(Writer):
    name = "vrt"
    suffix = ".vrt"

    def _write(self, gdf, run_info: dict, path: Path) -> None:
        kept = int((gdf["outlier"].to_numpy() == 0).sum())
        if kept < 3:
            log.warning("GCP VRT %s carries %d GCPs; gdalwarp needs at least 3 (-order 1) to use them", path, kept)
        meta = {"geomatch_run_id": run_info.get("run_id", ""), "geomatch_gcps": kept}
        path.write_text(gcp_vrt_xml(gdf, sar_path_from(run_info), meta), encoding="utf-8")
