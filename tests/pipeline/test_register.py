"""`geomatch register`: models fitted to tie points, the warp onto the optical grid, its outputs and refusals."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from factories import make_pair, make_tiepoints
from gdal_tools import gdal_sample
from PIL import Image

from geomatch import registry
from geomatch.cli.main import cli
from geomatch.errors import InputError
from geomatch.pipeline import gcpmodel
from geomatch.pipeline.raster import RasterPair
from geomatch.pipeline.register import register
from geomatch.pipeline.schema import add_shift_columns, to_geodataframe
from geomatch.pipeline.warp import source_positions

SHIFT = (4.0, -3.0)  # optical pixels: optical p shows up in the SAR at p + SHIFT


_COG_VALIDATOR = gdal_sample("validate_cloud_optimized_geotiff")


def _grid_points(n_cols=5, n_rows=4, w=400, h=300):
    gc, gr = np.meshgrid(np.linspace(12, w - 12, n_cols), np.linspace(12, h - 12, n_rows))
    return gc.ravel(), gr.ravel()


@pytest.fixture
def pair(tmp_path):
    """A synthetic pair (SAR at 15 m on a 10 m optical grid, shifted by SHIFT) and its exact tie points."""
    # 400 x 300: larger than one 256-pixel COG tile, so the output has an overview level.
    syn = make_pair(tmp_path, shift=SHIFT, sar_res=15.0, speckle_looks=0, sar_margin=8, size=(300, 400))
    rp = RasterPair(syn.optical, syn.sar)
    ref_c, ref_r = _grid_points()
    df = make_tiepoints(len(ref_c), outliers=1)
    df["ref_col"], df["ref_row"] = ref_c, ref_r
    df["ref_x"], df["ref_y"] = rp.to_map(ref_c, ref_r)
    df["tgt_col"], df["tgt_row"] = rp.sar_pixel(ref_c + SHIFT[0], ref_r + SHIFT[1])
    df["tgt_x"], df["tgt_y"] = rp.to_map(ref_c + SHIFT[0], ref_r + SHIFT[1])
    df.loc[0, ["tgt_col", "tgt_row"]] += 25.0  # the flagged outlier: a model that used it would be off
    gdf = to_geodataframe(add_shift_columns(df, rp.grid.transform), rp.grid.crs)
    tp = registry.load("writers", "gpkg")().write(gdf, {"inputs": rp.describe()}, tmp_path / "tp.gpkg")
    rp.close()
    return syn, tp, rp


# -- models -------------------------------------------------------------------------------------


def test_models_recover_known_maps_and_report_optical_pixels():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 2000, (30, 2))
    affine = np.array([[0.5, 0.02, 7.0], [-0.01, 0.5, -3.0]])  # 20 m SAR on a 10 m optical grid
    tgt = ref @ affine[:, :2].T + affine[:, 2]
    for order in ("1", "2", "3", "tps"):
        m = gcpmodel.fit(ref, tgt, order)
        pc, pr = m(np.array([100.0, 1900.0]), np.array([50.0, 1700.0]))
        expect = np.array([[100.0, 50.0], [1900.0, 1700.0]]) @ affine[:, :2].T + affine[:, 2]
        np.testing.assert_allclose(np.column_stack([pc, pr]), expect, atol=1e-6, err_msg=order)
        assert m.info["check"]["max_px"] < 1e-6, order
    # A 1-SAR-pixel error is 2 optical pixels here: residuals are reported on the optical grid.
    bad = tgt.copy()
    bad[5, 0] += 1.0
    m = gcpmodel.fit(ref, bad, "1")
    # Left out, the bad point is predicted by the 29 good ones: its full 2 px; fitted with it, less.
    np.testing.assert_allclose(m.info["check_px"][5], 2.0, atol=0.01)
    assert m.info["fit_px"][5] < 1.95
    quad = np.column_stack([tgt[:, 0] + 1e-4 * (ref[:, 0] - 1000) ** 2, tgt[:, 1]])
    best, table = gcpmodel.fit_auto(ref, quad)
    assert best.order in ("2", "3", "tps") and table["1"]["median_px"] > 10 * table["2"]["median_px"]


def test_auto_keeps_the_affine_when_noise_is_all_a_bend_would_fit():
    rng = np.random.default_rng(5)
    ref = rng.uniform(0, 1000, (40, 2))
    tgt = ref * 0.98 + 5.0 + rng.normal(0, 0.7, (40, 2))  # an affine plus noise
    best, table = gcpmodel.fit_auto(ref, tgt)
    assert best.order == "1" and set(table) == {"1", "2", "3", "tps"}
    assert table == {o: gcpmodel.fit(ref, tgt, o).info["blocks"] for o in table}  # the table is the block CV
    assert len(best.info["blocks_px"]) == 40 and np.isfinite(best.info["blocks_px"]).all()


def test_models_refuse_too_few_or_degenerate_points():
    ref = np.column_stack([np.linspace(0, 100, 8), np.linspace(0, 50, 8)])  # on a line
    with pytest.raises(InputError, match="lie \\(nearly\\) on a line") as info:
        gcpmodel.fit(ref, ref + 1.0, "1")
    assert info.value.exit_code == 2
    rng = np.random.default_rng(0)
    few = rng.uniform(0, 100, (8, 2))
    with pytest.raises(InputError, match="--order 3 needs at least 11 kept tie points.*have 8"):
        gcpmodel.fit(few, few, "3")
    assert gcpmodel.supported_orders(few) == ["1", "2", "tps"]
    with pytest.raises(InputError, match="needs at least 4"):
        gcpmodel.fit(few[:3], few[:3], "1")  # three points are an exact fit with nothing to check it


def test_lattice_positions_match_the_exact_model():
    ref = np.random.default_rng(1).uniform(0, 300, (25, 2))
    tgt = ref * 1.01 + 3e-4 * ref[:, :1] ** 2
    m = gcpmodel.fit(ref, tgt, "2")
    exact = source_positions(m, 10, 70, 300, step=1)
    approx = source_positions(m, 10, 70, 300, step=4)
    assert np.max(np.abs(np.asarray(exact) - np.asarray(approx))) < 0.01


# -- the command --------------------------------------------------------------------------------


def test_register_writes_a_cog_on_the_optical_grid_that_lines_up(pair, tmp_path, runner):
    syn, tp, _ = pair
    out = tmp_path / "sar_on_optical.tif"
    result = runner.invoke(cli, ["register", "--optical", str(syn.optical), "--sar", str(syn.sar), "--tiepoints",
                                 str(tp), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"]["order"] == "1" and summary["model"]["points"] == 19  # the outlier is not used
    assert summary["model"]["check"]["max_px"] < 0.01
    with rasterio.open(syn.optical) as opt, rasterio.open(out) as reg:
        assert (reg.crs, reg.transform, reg.width, reg.height) == (opt.crs, opt.transform, opt.width, opt.height)
        assert reg.profile["tiled"] and reg.compression is not None and reg.overviews(1)
        assert reg.tags()["geomatch_model"] == "1"
        data = reg.read(1)
    if _COG_VALIDATOR:
        check = subprocess.run([*_COG_VALIDATOR, str(out)], capture_output=True, text=True)
        assert check.returncode == 0 and "is a valid cloud optimized GeoTIFF" in check.stdout, check.stdout
    # Registered: the SAR now shows the scene where the optical does (model of make_pair's intensity).
    h, w = data.shape
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    inner = (slice(8, h - 8), slice(8, w - 8))
    db = 10 * np.log10(data[inner])
    aligned = np.abs(db - (-20.0 + 15.0 * (1.0 - syn.scene(jj, ii)))[inner]).mean()
    unregistered = np.abs(db - (-20.0 + 15.0 * (1.0 - syn.scene(jj - SHIFT[0], ii - SHIFT[1])))[inner]).mean()
    assert aligned < 0.25 * unregistered
    with rasterio.open(summary["outputs"]["shift_field"]) as field:
        assert field.count == 2 and field.transform.a == pytest.approx(10.0 * 32)
        sx, sy = field.read(1), field.read(2)
        # Target minus reference in map units: +4 columns = +40 m east, -3 rows = +30 m north.
        np.testing.assert_allclose(sx[np.isfinite(sx)], 40.0, atol=0.01)
        np.testing.assert_allclose(sy[np.isfinite(sy)], 30.0, atol=0.01)
    with Image.open(summary["outputs"]["plot"]) as im:
        assert im.format == "PNG" and im.size[0] > 800


def test_register_refusals_exit_2_with_one_line(pair, tmp_path, runner):
    syn, tp, _ = pair
    out = tmp_path / "r.tif"
    args = ["register", "--optical", str(syn.optical), "--sar", str(syn.sar), "--tiepoints", str(tp), "-o", str(out)]
    too_many = runner.invoke(cli, args + ["--order", "3", "--no-plot"])
    assert too_many.exit_code == 0  # 19 points support a cubic (10 terms + 1)
    few = tmp_path / "few.gpkg"
    import pyogrio

    gdf = pyogrio.read_dataframe(tp, layer="tiepoints")
    registry.load("writers", "gpkg")().write(gdf.iloc[:6], {}, few)
    refused = runner.invoke(cli, ["register", "--optical", str(syn.optical), "--sar", str(syn.sar), "--tiepoints",
                                  str(few), "-o", str(tmp_path / "r2.tif"), "--order", "2"])
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--order 2 needs at least 7 kept tie points" in lines[0]
    assert not (tmp_path / "r2.tif").exists()
    before = out.read_bytes()
    again = runner.invoke(cli, args)
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.stderr
    assert out.read_bytes() == before
    (tmp_path / "other").mkdir()
    other = make_pair(tmp_path / "other", optical_res=20.0)  # another optical grid: its points do not apply
    wrong = runner.invoke(cli, ["register", "--optical", str(other.optical), "--sar", str(syn.sar),
                                "--tiepoints", str(tp), "-o", str(tmp_path / "r3.tif")])
    assert wrong.exit_code == 2 and "made on another optical raster" in wrong.stderr
    onto_input = runner.invoke(cli, ["register", "--optical", str(syn.optical), "--sar", str(syn.sar), "--tiepoints",
                                     str(tp), "-o", str(syn.sar), "--overwrite"])
    assert onto_input.exit_code == 2 and "is one of the inputs" in onto_input.stderr
    with pytest.raises(InputError, match="--resampling lanczos: choose one of nearest, bilinear, cubic"):
        register(syn.optical, syn.sar, tmp_path / "r4.tif", resampling="lanczos")  # before any pipeline run


def _coordinate_raster(src_path, dest):
    with rasterio.open(src_path) as src:
        profile = {**src.profile, "count": 2, "dtype": "float64", "nodata": None}
        rr, cc = np.mgrid[0:src.height, 0:src.width].astype(np.float64) + 0.5
    with rasterio.open(dest, "w", **profile) as dst:
        dst.write(np.stack([cc, rr]))
    return dest


@pytest.mark.skipif(shutil.which("gdalwarp") is None, reason="GDAL's gdalwarp is not installed on this machine")
@pytest.mark.parametrize("order", ["1", "2"])
def test_gdalwarp_on_the_vrt_samples_where_register_does(pair, tmp_path, order):
    """Same tie points, same model: gdalwarp -order N on the GCP VRT and register agree within 0.05 px."""
    syn, tp, _ = pair
    import pyogrio

    from geomatch_plugins.writers.vrt import gcp_vrt_xml

    coords = _coordinate_raster(syn.sar, tmp_path / "coords.tif")
    # Bilinear resampling is exact on these linear ramps: each output pixel holds the SAR position it sampled.
    register(syn.optical, coords, tmp_path / "mine.tif", tiepoints=tp, order=order, shift_field=False, plot=False)
    gdf = pyogrio.read_dataframe(tp, layer="tiepoints")
    vrt = tmp_path / "coords.vrt"
    vrt.write_text(gcp_vrt_xml(gdf, str(coords)))
    with rasterio.open(syn.optical) as opt:
        b, res, wkt = opt.bounds, opt.res, opt.crs.to_wkt()
    subprocess.run(["gdalwarp", "-q", "-r", "bilinear", "-order", order, "-te", str(b.left), str(b.bottom),
                    str(b.right), str(b.top), "-tr", str(res[0]), str(res[1]), "-t_srs", wkt, "-dstnodata", "nan",
                    str(vrt), str(tmp_path / "gdal.tif")], check=True, capture_output=True)
    with rasterio.open(tmp_path / "mine.tif") as a, rasterio.open(tmp_path / "gdal.tif") as g:
        assert (a.transform, a.width, a.height) == (g.transform, g.width, g.height)
        mine, theirs = a.read(), g.read()
    both = np.isfinite(mine).all(axis=0) & np.isfinite(theirs).all(axis=0)
    assert both.mean() > 0.9
    assert np.max(np.hypot(*(mine - theirs)[:, both])) < 0.05
