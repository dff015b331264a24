"""End to end: `geomatch run` on real GeoTIFFs written by the factories, read back as a GeoPackage."""

from __future__ import annotations

import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pytest

import geomatch
from geomatch import config
from geomatch.cli.main import cli
from geomatch.pipeline.run import run_pipeline
from geomatch.pipeline.schema import COLUMNS
from tests.factories import make_pair

SHIFT = (2.3, -1.4)


def _cfg(**overrides):
    # The factory's SAR is contrast-inverted (bright optical = dark SAR), so the NCC baseline scores |ncc|.
    base = {"match.plugin": "ncc", "match.params": {"absolute": True}, "tiles.size": 1000, "write.plot": False}
    base.update(overrides)
    return config.load("default", base)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("pair"), shift=SHIFT, size=(180, 200), seed=3)


def _kept(gdf):
    return gdf[gdf["outlier"] == 0]


def test_recovers_known_shift_and_writes_geopackage(pair, tmp_path):
    out = tmp_path / "tp.gpkg"
    result = run_pipeline(pair.optical, pair.sar, _cfg(), out)
    back = gpd.read_file(out, layer="tiepoints")
    assert list(back.columns[: len(COLUMNS)]) == list(COLUMNS)
    kept = _kept(back)
    assert len(kept) >= 5, result.summary
    # The SAR grid equals the optical grid here, so target pixels compare directly with the shift.
    dx = kept["tgt_col"] - kept["ref_col"]
    dy = kept["tgt_row"] - kept["ref_row"]
    assert np.median(np.hypot(dx - SHIFT[0], dy - SHIFT[1])) < 0.35
    assert back.crs.to_epsg() == 32631
    # Point geometry sits at the reference map position.
    assert np.allclose(back.geometry.x, back["ref_x"]) and np.allclose(back.geometry.y, back["ref_y"])
    runs = gpd.read_file(out, layer="runs")
    assert len(runs) == 1 and "sha256" in runs["inputs_json"].iloc[0]


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="GDAL's ogrinfo not installed (apt-get install gdal-bin)")
def test_ogrinfo_reads_the_geopackage(pair, tmp_path):
    out = tmp_path / "tp.gpkg"
    run_pipeline(pair.optical, pair.sar, _cfg(), out)
    info = subprocess.run(["ogrinfo", "-so", "-al", str(out)], capture_output=True, text=True, check=True).stdout
    assert "Layer name: tiepoints" in info and "Geometry: Point" in info
    assert "shift_abs: Real" in info and "outlier: Integer" in info


def test_tiled_run_equals_single_window(pair):
    # The point cap applies per tile, so it is lifted here: what is compared is which points each tile owns and
    # how it selects them near its core's edge, not how many one cap lets through. Cells wider than the patch
    # reach make the halo's suppression-cell term matter (without it, 3 of 18 points differ).
    # Settling off: its CFOG noise floor is set per view, so positions may move by ~1e-2 px between tilings
    # (test_budget.py bounds that); everything else must be exact.
    dense = {"detect.max_points_per_tile": 1000, "detect.cell_size": 48, "match.refine_patch": 0}
    single = run_pipeline(pair.optical, pair.sar, _cfg(**{"tiles.size": 1000}, **dense)).gdf
    tiled = run_pipeline(pair.optical, pair.sar, _cfg(**{"tiles.size": 37}, **dense)).gdf  # odd: seams everywhere
    assert len(single) == len(tiled) > 5
    key = ["ref_col", "ref_row"]
    a = single.sort_values(key).reset_index(drop=True)
    b = tiled.sort_values(key).reset_index(drop=True)
    for col in ("ref_col", "ref_row", "tgt_col", "tgt_row", "score"):
        np.testing.assert_allclose(a[col], b[col], atol=1e-6, err_msg=col)


def test_sar_in_other_crs_and_resolution(tmp_path):
    p = make_pair(tmp_path, shift=(1.5, 2.0), sar_crs="EPSG:4326", size=(160, 180), seed=5, sar_margin=8)
    gdf = run_pipeline(p.optical, p.sar, _cfg()).gdf
    kept = _kept(gdf)
    assert len(kept) >= 5
    # Shift in map units of the optical CRS (10 m pixels): +x east, rows down means -y.
    assert np.median(kept["shift_x"]) == pytest.approx(15.0, abs=4.0)
    assert np.median(kept["shift_y"]) == pytest.approx(-20.0, abs=4.0)


def test_api_match_returns_geodataframe(pair):
    gdf = geomatch.match(pair.optical, pair.sar, match__plugin="ncc", match__params={"absolute": True},
                         write__plot=False)
    assert isinstance(gdf, gpd.GeoDataFrame) and len(gdf) > 0
    assert set(COLUMNS) <= set(gdf.columns)


def test_distributed_scheduler_on_loopback(pair):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster:
        remote = run_pipeline(pair.optical, pair.sar, _cfg(**{"tiles.size": 90}), scheduler=cluster.scheduler_address)
    local = run_pipeline(pair.optical, pair.sar, _cfg(**{"tiles.size": 90})).gdf
    assert len(remote.gdf) == len(local) > 0
    np.testing.assert_allclose(np.sort(remote.gdf["score"]), np.sort(local["score"]), atol=1e-6)


def test_cli_run_refuses_to_overwrite_before_any_work(pair, tmp_path, runner):
    out = tmp_path / "tp.gpkg"
    out.write_bytes(b"precious")
    result = runner.invoke(cli, ["run", "--optical", str(pair.optical), "--sar", str(pair.sar), "-o", str(out),
                                 "--matcher", "ncc", "--no-plot"])
    assert result.exit_code == 2
    assert "--overwrite" in result.stderr and str(out.name) in result.stderr
    assert out.read_bytes() == b"precious"


def test_cli_run_json_summary_and_csv(pair, tmp_path, runner):
    import json

    out = tmp_path / "tp.csv"
    result = runner.invoke(cli, ["run", "--optical", str(pair.optical), "--sar", str(pair.sar), "-o", str(out),
                                 "--matcher", "ncc", "--set", "match.params={absolute=true}", "--no-plot", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["points_kept"] > 0 and set(summary["timings_s"]) >= {"pair", "coarse", "match", "filter"}
    assert out.exists()


def test_cli_run_no_overlap_is_exit_2(tmp_path, runner):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_pair(tmp_path / "a", size=(80, 80), seed=1)
    far = make_pair(tmp_path / "b", size=(80, 80), seed=2)
    # Move b's SAR far away by rewriting its transform.
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(far.sar, "r+") as dst:
        dst.transform = from_origin(100000.0, 100000.0, 10.0, 10.0)
    result = runner.invoke(cli, ["run", "--optical", str(a.optical), "--sar", str(far.sar), "-o",
                                 str(tmp_path / "x.gpkg"), "--matcher", "ncc"])
    assert result.exit_code == 2
    assert "overlap" in result.stderr.lower() and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.gpkg").exists()


def test_cli_missing_file_is_exit_2(tmp_path, runner):
    result = runner.invoke(cli, ["run", "--optical", str(tmp_path / "nope.tif"), "--sar", str(tmp_path / "n.tif"),
                                 "-o", str(tmp_path / "x.gpkg")])
    assert result.exit_code == 2 and "nope.tif" in result.stderr
