"""Writers: atomic output, GeoPackage (tiepoints + runs), CSV + sidecar, GCP VRT, QGIS .points."""

from __future__ import annotations

import json
import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from factories import make_pair, make_tiepoints, optical_transform
from gdal_tools import gdal_sample
from rasterio.crs import CRS
from rasterio.transform import from_gcps
from rasterio.warp import Resampling, reproject

from geomatch import registry
from geomatch.errors import InputError, OutputExistsError
from geomatch.pipeline.affinetools import apply
from geomatch.pipeline.raster import RasterPair
from geomatch.pipeline.schema import COLUMNS, SCHEMA_VERSION, add_shift_columns, empty_frame, to_geodataframe
from geomatch.pipeline.writer import RUN_FIELDS, Writer, atomic_output, writer_for, writer_suffixes
from geomatch_plugins.writers.qgis import HEADER, QGISPointsWriter, write_qgis_points

GPKG_VALIDATOR = gdal_sample("validate_gpkg")
needs_ogrinfo = pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="GDAL's ogrinfo is not installed here")


def _gdf(n=10, simulated=None, **kw):
    df = add_shift_columns(make_tiepoints(n, **kw), optical_transform())
    if simulated is not None:
        df["simulated"] = simulated
    return to_geodataframe(df, CRS.from_epsg(32631))


SCORER = {"matcher": "rrlnet", "weights": "optical-sar", "weights_sha256": "ab" * 32, "runtime": "onnxruntime",
          "engine": "onnxruntime", "device": "cpu"}


def _run_info(sar_path="/nonexistent/sar.tif"):
    return {
        "run_id": "abc123", "started": "2024-01-01T00:00:00Z", "finished": "2024-01-01T00:01:00Z",
        "pipeline_toml": 'name = "default"\n', "inputs": {"optical": {"path": "/o.tif", "sha256": "0" * 64},
                                                           "sar": {"path": str(sar_path), "sha256": "1" * 64}},
        "scorer": SCORER, "versions": {"numpy": np.__version__, "gdal": "3.6.2", "proj": "9.1.1", "torch": "2.5.0",
                                       "onnxruntime": "1.20.0"},
        "timings": {"match": 1.5}, "summary": {"points_kept": 8},
    }


# -- atomic output ------------------------------------------------------------------------------


def test_refuses_to_overwrite_without_the_flag(tmp_path):
    out = tmp_path / "tp.gpkg"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="tp.gpkg already exists; pass --overwrite") as info:
        with atomic_output(out, overwrite=False):
            raise AssertionError("must not get here")
    assert info.value.exit_code == 2
    assert out.read_bytes() == b"precious"
    with atomic_output(out, overwrite=True) as tmp:
        assert tmp.parent == out.parent and tmp != out
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"new"
    with pytest.raises(InputError, match="does not exist"):
        with atomic_output(tmp_path / "missing" / "x.gpkg"):
            pass


class _Crashing(Writer):
    name = "crash"
    suffix = ".gpkg"

    def _write(self, gdf, run_info, path):
        path.write_bytes(b"half a file")
        raise RuntimeError("disk full")


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    out = tmp_path / "tp.gpkg"
    registry.load("writers", "gpkg")().write(_gdf(), _run_info(), out)
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        _Crashing().write(_gdf(), _run_info(), out, overwrite=True)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tp.gpkg"]


# -- GeoPackage ---------------------------------------------------------------------------------


def test_geopackage_round_trip_and_runs_table(tmp_path):
    gdf = _gdf(12, simulated=True)
    out = registry.load("writers", "gpkg")().write(gdf, _run_info(), tmp_path / "tp.gpkg")
    layers = dict(pyogrio.list_layers(out))
    assert layers == {"tiepoints": "Point", "runs": None}
    back = gpd.read_file(out, layer="tiepoints")
    assert back.crs.to_epsg() == 32631
    assert list(back.columns) == list(gdf.columns)
    for name in gdf.columns.drop("geometry"):
        if gdf[name].dtype.kind in "if":
            np.testing.assert_array_equal(back[name].to_numpy(), gdf[name].to_numpy(), err_msg=name)
            assert back[name].dtype == gdf[name].dtype, name
        else:
            assert list(back[name]) == list(gdf[name]), name
    np.testing.assert_array_equal(back.geometry.x, gdf["ref_x"])
    assert int((back["outlier"] == 0).sum()) == 10

    runs = pyogrio.read_dataframe(out, layer="runs")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["run_id"] == "abc123" and row["schema_version"] == SCHEMA_VERSION
    assert row["pipeline_toml"] == 'name = "default"\n'
    assert json.loads(row["inputs_json"])["sar"]["sha256"] == "1" * 64
    timings = json.loads(row["timings_json"])
    assert timings["match"] == 1.5 and 0 < timings["write"] < 60  # the table's own write time is recorded
    assert json.loads(row["summary_json"]) == {"points_kept": 8}
    assert list(runs.columns) == list(RUN_FIELDS)
    # The resolved scorer and the library versions, as columns (the pipeline file may say "auto").
    assert (row["matcher"], row["weights"], row["weights_sha256"], row["runtime"], row["device"]) == (
        "rrlnet", "optical-sar", "ab" * 32, "onnxruntime", "cpu")
    assert (row["gdal_version"], row["proj_version"], row["torch_version"], row["onnxruntime_version"]) == (
        "3.6.2", "9.1.1", "2.5.0", "1.20.0")
    # DateTime and Boolean fields, not text and int16.
    assert str(runs["started"].dtype).startswith("datetime64") and runs["started"].dt.tz is not None
    assert row["finished"] - row["started"] == pd.Timedelta(minutes=1)
    for flag in ("outlier_score", "outlier_local", "outlier_model", "outlier"):
        assert back[flag].dtype == bool, flag


def test_geopackage_version_and_triggers_gdal_36_accepts(tmp_path):
    """GPKG 1.2 (GDAL 3.6's validator rejects 1.4's R-tree trigger names, Req 75, and ogrinfo 3.6 warns on 1.4)."""
    import sqlite3

    out = registry.load("writers", "gpkg")().write(_gdf(), _run_info(), tmp_path / "tp.gpkg")
    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
        triggers = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        contents = dict(db.execute("SELECT table_name, data_type FROM gpkg_contents"))
    assert {f"rtree_tiepoints_geom_update{i}" for i in (1, 2, 3, 4)} <= triggers
    assert not {"rtree_tiepoints_geom_update6", "rtree_tiepoints_geom_update7"} & triggers
    assert contents == {"tiepoints": "features", "runs": "attributes"}
    meta = pyogrio.read_info(out, layer="tiepoints")["layer_metadata"]
    assert meta["geomatch_schema_version"] == SCHEMA_VERSION and meta["geomatch_shift_units"].startswith("metre")


@pytest.mark.skipif(GPKG_VALIDATOR is None, reason="GDAL's validate_gpkg.py (Debian python3-gdal) is not installed")
def test_gdal_geopackage_validator_passes(tmp_path):
    out = registry.load("writers", "gpkg")().write(_gdf(12, simulated=True), _run_info(), tmp_path / "tp.gpkg")
    check = subprocess.run([*GPKG_VALIDATOR, str(out)], capture_output=True, text=True)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr


def test_geographic_crs_gets_shifts_in_metres(tmp_path):
    from affine import Affine

    df = make_tiepoints(6, transform=Affine(1e-4, 0.0, 2.0, 0.0, -1e-4, 48.0), outliers=0)
    df["tgt_x"], df["tgt_y"] = df["ref_x"] + 2e-4, df["ref_y"] - 1e-4  # east and south
    gdf = to_geodataframe(add_shift_columns(df), "EPSG:4326")
    out = registry.load("writers", "gpkg")().write(gdf, _run_info(), tmp_path / "geo.gpkg")
    back = gpd.read_file(out, layer="tiepoints")
    # 1e-4 deg of longitude at 48 N is 7.46 m, of latitude 11.12 m (WGS 84 geodesic).
    np.testing.assert_allclose(back["shift_east_m"], 2 * 7.4616, rtol=2e-3)
    np.testing.assert_allclose(back["shift_north_m"], -11.1206, rtol=2e-3)
    np.testing.assert_allclose(back["shift_abs_m"], np.hypot(back["shift_east_m"], back["shift_north_m"]), rtol=1e-6)
    assert pyogrio.read_info(out, layer="tiepoints")["layer_metadata"]["geomatch_shift_units"].startswith("degrees")
    assert "shift_abs_m" not in _gdf().columns  # projected CRS: shift_x/shift_y are metres already


def test_geopackage_with_no_points(tmp_path):
    gdf = to_geodataframe(empty_frame()[list(COLUMNS)], "EPSG:32631")
    out = registry.load("writers", "gpkg")().write(gdf, _run_info(), tmp_path / "empty.gpkg")
    assert len(gpd.read_file(out, layer="tiepoints")) == 0
    assert pyogrio.read_info(out, layer="tiepoints")["geometry_type"] == "Point"


@needs_ogrinfo
def test_ogrinfo_reads_the_geopackage_without_a_warning(tmp_path):
    out = registry.load("writers", "gpkg")().write(_gdf(), _run_info(), tmp_path / "tp.gpkg")
    done = subprocess.run(["ogrinfo", "-so", "-al", str(out)], capture_output=True, text=True, check=True)
    text = done.stdout
    assert "Layer name: tiepoints" in text and "Layer name: runs" in text
    assert "Feature Count: 10" in text and "shift_angle: Real" in text
    assert "outlier: Integer(Boolean)" in text and "started: DateTime" in text
    assert "Warning" not in done.stderr and "Warning" not in text, done.stderr


# -- CSV ----------------------------------------------------------------------------------------


def test_csv_and_sidecar(tmp_path):
    gdf = _gdf(9)
    writer = registry.load("writers", "csv")()
    out = writer.write(gdf, _run_info(), tmp_path / "tp.csv")
    back = pd.read_csv(out)
    assert list(back.columns) == [c for c in gdf.columns if c != "geometry"] + ["wkt"]
    np.testing.assert_allclose(back["ref_x"], gdf["ref_x"], rtol=0, atol=0)
    assert back["wkt"][0] == f"POINT ({float(gdf['ref_x'][0])!r} {float(gdf['ref_y'][0])!r})"
    assert list(back["outlier"]) == [1, 1, 0, 0, 0, 0, 0, 0, 0]  # Boolean flags as 0/1
    side = json.loads((tmp_path / "tp.csv.json").read_text())
    assert side["run"]["run_id"] == "abc123" and side["schema_version"] == SCHEMA_VERSION
    assert "32631" in side["crs_wkt"] and side["points"] == 9
    assert CRS.from_wkt((tmp_path / "tp.prj").read_text()).to_epsg() == 32631
    types = (tmp_path / "tp.csvt").read_text().strip().replace('"', "").split(",")
    assert len(types) == len(back.columns) and types[-1] == "WKT"
    assert types[list(back.columns).index("outlier")] == "Integer(Boolean)"
    assert types[list(back.columns).index("ref_x")] == "Real"
    # The sidecar counts as output: refused as a whole without --overwrite, nothing touched.
    (tmp_path / "other.csv.json").write_text("mine")
    with pytest.raises(OutputExistsError, match="other.csv.json"):
        writer.write(gdf, _run_info(), tmp_path / "other.csv")
    assert not (tmp_path / "other.csv").exists() and (tmp_path / "other.csv.json").read_text() == "mine"


@needs_ogrinfo
def test_ogrinfo_reads_the_csv_as_points_in_its_crs(tmp_path):
    gdf = _gdf(9)
    out = registry.load("writers", "csv")().write(gdf, _run_info(), tmp_path / "tp.csv")
    done = subprocess.run(["ogrinfo", "-so", "-al", str(out)], capture_output=True, text=True, check=True)
    assert "Feature Count: 9" in done.stdout and 'WGS 84 / UTM zone 31N' in done.stdout
    assert "outlier: Integer(Boolean)" in done.stdout and "ref_x: Real" in done.stdout
    first = subprocess.run(["ogrinfo", "-al", "-q", "-fid", "1", str(out)], capture_output=True, text=True,
                           check=True).stdout  # CSV feature ids start at 1
    point = first[first.index("POINT (") + 7:].split(")")[0].split()
    np.testing.assert_allclose([float(v) for v in point], [gdf["ref_x"][0], gdf["ref_y"][0]], rtol=0, atol=1e-6)


# -- choosing a writer --------------------------------------------------------------------------


def test_every_registered_writer_has_a_suffix_and_suffixes_choose_the_writer():
    suffixes = writer_suffixes()
    assert sorted(suffixes.values()) == registry.names("writers")  # every writer, each with a suffix
    assert suffixes == {".gpkg": "gpkg", ".csv": "csv", ".vrt": "vrt", ".points": "points"}
    assert writer_for("tp.points") == "points" and writer_for("DIR/TP.GPKG") == "gpkg"
    assert writer_for("anything.txt", "csv") == "csv"
    for bad in ("y.shp", "tp.xyz", "noext"):
        with pytest.raises(InputError, match=r"no writer for the suffix .*\.csv \(csv\), \.gpkg \(gpkg\), "
                                             r"\.points \(points\), \.vrt \(vrt\)") as info:
            writer_for(bad)
        assert info.value.exit_code == 2
    with pytest.raises(InputError, match="--format shp: unknown writer; registered writers: csv, gpkg, points, vrt"):
        writer_for("x.gpkg", "shp")


# -- GCP VRT ------------------------------------------------------------------------------------


def test_gcp_vrt_registers_the_sar_onto_the_optical(tmp_path):
    syn = make_pair(tmp_path, shift=(4.0, -3.0), sar_res=15.0, speckle_looks=0, sar_margin=6)
    pair = RasterPair(syn.optical, syn.sar)
    # True tie points: optical p shows up at p + shift on the optical grid, i.e. sar_pixel(p + shift).
    gc, gr = np.meshgrid(np.linspace(15, 145, 4), np.linspace(15, 105, 3))
    ref_c, ref_r = gc.ravel(), gr.ravel()
    df = make_tiepoints(len(ref_c), outliers=1)
    df["ref_col"], df["ref_row"] = ref_c, ref_r
    df["ref_x"], df["ref_y"] = pair.to_map(ref_c, ref_r)
    df["tgt_col"], df["tgt_row"] = pair.sar_pixel(ref_c + 4.0, ref_r - 3.0)
    df["tgt_x"], df["tgt_y"] = pair.to_map(ref_c + 4.0, ref_r - 3.0)
    df.loc[0, ["tgt_col", "tgt_row"]] += 30.0  # the flagged outlier: must not become a GCP
    gdf = to_geodataframe(add_shift_columns(df, pair.grid.transform), pair.grid.crs)
    out = registry.load("writers", "vrt")().write(gdf, {"inputs": pair.describe()}, tmp_path / "sar_gcps.vrt")

    with rasterio.open(out) as vrt:
        gcps, crs = vrt.gcps
        assert crs.to_epsg() == 32631 and len(gcps) == len(gdf) - 1
        kept = gdf[gdf["outlier"] == 0]
        np.testing.assert_allclose([g.col for g in gcps], kept["tgt_col"])
        np.testing.assert_allclose([g.row for g in gcps], kept["tgt_row"])
        np.testing.assert_allclose([g.x for g in gcps], kept["ref_x"])
        np.testing.assert_allclose([g.y for g in gcps], kept["ref_y"])
        data = vrt.read(1)
        with rasterio.open(syn.sar) as src:
            np.testing.assert_array_equal(data, src.read(1))  # pixels come from the original SAR file
    # What gdalwarp -order 1 does with them: the warped SAR lines up with the optical (no shift left).
    affine = from_gcps(gcps)
    q = np.array([3.0, 50.0, 90.0]), np.array([7.0, 40.0, 60.0])
    oc, orow = pair.optical_pixel(*q)
    np.testing.assert_allclose(apply(affine, *q), pair.to_map(oc - 4.0, orow + 3.0), atol=1e-3)
    warped = np.zeros((120, 160), np.float32)
    reproject(data, warped, gcps=gcps, src_crs=crs, dst_transform=pair.grid.transform, dst_crs=pair.grid.crs,
              resampling=Resampling.bilinear)
    jj, ii = np.meshgrid(np.arange(160) + 0.5, np.arange(120) + 0.5)
    model = -20.0 + 15.0 * (1.0 - syn.scene(jj, ii))
    inner = (slice(10, 110), slice(10, 150))
    err_registered = np.abs(10 * np.log10(warped[inner]) - model[inner]).mean()
    shifted = -20.0 + 15.0 * (1.0 - syn.scene(jj - 4.0, ii + 3.0))
    err_unregistered = np.abs(10 * np.log10(warped[inner]) - shifted[inner]).mean()
    assert err_registered < 0.3 * err_unregistered


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="GDAL's gdalinfo is not installed on this machine")
def test_gdalinfo_reads_the_gcp_vrt(tmp_path):
    syn = make_pair(tmp_path, sar_res=15.0)
    gdf = _gdf(8, outliers=3)
    out = registry.load("writers", "vrt")().write(gdf, _run_info(syn.sar), tmp_path / "sar_gcps.vrt")
    done = subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True, text=True, check=True)
    info = json.loads(done.stdout)
    gcps = info["gcps"]["gcpList"]
    assert len(gcps) == 5 and "32631" in info["gcps"]["coordinateSystem"]["wkt"] and not done.stderr
    kept = gdf[gdf["outlier"] == 0]
    np.testing.assert_allclose([g["pixel"] for g in gcps], kept["tgt_col"])
    np.testing.assert_allclose([g["x"] for g in gcps], kept["ref_x"])
    with rasterio.open(syn.sar) as src:
        assert info["size"] == [src.width, src.height]


def test_qgis_points(tmp_path):
    gdf = _gdf(5, outliers=2)
    out = write_qgis_points(gdf, tmp_path / "tp.points")
    lines = out.read_text().splitlines()
    assert lines[0].startswith("#CRS: ") and "32631" in lines[0]
    assert lines[1] == HEADER
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[2:]])
    np.testing.assert_allclose(rows[:, 0], gdf["ref_x"])
    np.testing.assert_allclose(rows[:, 2], gdf["tgt_col"])
    np.testing.assert_allclose(rows[:, 3], -gdf["tgt_row"])  # QGIS: pixel rows are negative
    assert list(rows[:, 4]) == [0, 0, 1, 1, 1]
    t = optical_transform(15.0)
    with_geo = write_qgis_points(gdf, tmp_path / "geo.points", source_transform=t)
    row = with_geo.read_text().splitlines()[2].split(",")
    np.testing.assert_allclose([float(row[2]), float(row[3])], apply(t, gdf["tgt_col"][0], gdf["tgt_row"][0]))
    with pytest.raises(OutputExistsError):
        write_qgis_points(gdf, out)
    # As a writer plugin it takes the SAR's own geotransform from the run's inputs.
    syn = make_pair(tmp_path, sar_res=15.0)
    plugin_out = QGISPointsWriter().write(gdf, _run_info(syn.sar), tmp_path / "plugin.points")
    row = plugin_out.read_text().splitlines()[2].split(",")
    np.testing.assert_allclose([float(row[2]), float(row[3])],
                               apply(syn.sar_transform, gdf["tgt_col"][0], gdf["tgt_row"][0]))
