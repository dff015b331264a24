"""RasterPair: pairing across CRS and pixel sizes, nodata rules, reads, pickling; the shared real pairs.

Bad inputs are in test_raster_inputs.py.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio
from factories import OPTICAL_CRS, make_pair, optical_transform, write_raster
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window
from scipy.ndimage import map_coordinates

from geomatch.config import PairConfig
from geomatch.errors import RasterError
from geomatch.pipeline import normalise
from geomatch.pipeline.affinetools import apply
from geomatch.pipeline.raster import RasterPair, check_readable


def _misfit(pair: RasterPair, syn, window: Window, shift) -> float:
    """RMS difference between the warped SAR view and the factory's scene moved by ``shift``."""
    view, valid = pair.read_sar(window)
    jj, ii = np.meshgrid(np.arange(window.width) + window.col_off + 0.5,
                         np.arange(window.height) + window.row_off + 0.5)
    truth = syn.scene(jj - shift[0], ii - shift[1])
    expected = pair.sar_stretch.apply(-20.0 + 15.0 * (1.0 - truth))  # the factory's dB model
    assert valid.all()
    return float(np.sqrt(np.mean((view - expected) ** 2)))


def _assert_content_shifted_by(pair: RasterPair, syn, window: Window, tol: float) -> None:
    """The factory's shift explains the SAR view better than any shift `tol` px away from it."""
    best = _misfit(pair, syn, window, syn.shift)
    for dx in (-tol, 0.0, tol):
        for dy in (-tol, 0.0, tol):
            if dx or dy:
                assert best < _misfit(pair, syn, window, (syn.shift[0] + dx, syn.shift[1] + dy))
    assert best < 0.75 * _misfit(pair, syn, window, (0.0, 0.0))


def test_different_crs_and_pixel_size_coordinates_and_warp(tmp_path):
    syn = make_pair(tmp_path, shift=(3.0, -2.0), sar_crs="EPSG:4326", sar_res=17.0 / 111320.0, speckle_looks=0,
                    sar_margin=8)
    pair = RasterPair(syn.optical, syn.sar, PairConfig(sar_scale="linear"))
    assert pair.grid.crs == rasterio.crs.CRS.from_user_input(OPTICAL_CRS)
    assert (pair.grid.width, pair.grid.height) == (160, 120)
    assert pair.overlap == Window(0, 0, 160, 120)
    assert pair.optical_res == pytest.approx(10.0)
    # 17 m of latitude by 17 m * cos(46 deg) of longitude, against 10 m pixels: geometric mean 1.416.
    assert pair.sar_to_optical_scale == pytest.approx(1.7 * np.sqrt(np.cos(np.radians(46.04))), abs=0.005)
    assert pair.sar_res == pytest.approx(pair.sar_to_optical_scale * 10.0)

    cols = np.array([0.0, 0.5, 37.25, 159.9, 80.0])
    rows = np.array([0.0, 0.5, 61.75, 119.9, 60.0])
    sc, sr = pair.sar_pixel(cols, rows)
    # Independent path: GDAL's transform, then the SAR's inverse geotransform.
    x, y = apply(optical_transform(), cols, rows)
    lon, lat = warp_transform(OPTICAL_CRS, "EPSG:4326", x, y)
    ec, er = apply(~syn.sar_transform, lon, lat)
    np.testing.assert_allclose(sc, ec, atol=1e-6)
    np.testing.assert_allclose(sr, er, atol=1e-6)
    bc, br = pair.optical_pixel(sc, sr)
    np.testing.assert_allclose(bc, cols, atol=1e-6)
    np.testing.assert_allclose(br, rows, atol=1e-6)
    mx, my = pair.to_map(cols, rows)
    np.testing.assert_allclose(mx, x)
    np.testing.assert_allclose(my, y)
    np.testing.assert_allclose(pair.from_map(mx, my), (cols, rows), atol=1e-9)

    # The warped view at optical pixel centre p is the SAR sampled bilinearly at sar_pixel(p) (SAR pixels
    # larger than the optical's in both directions: GDAL widens the kernel when downsampling).
    win = Window(20, 15, 90, 70)
    view, valid = pair.read_sar(win)
    with rasterio.open(syn.sar) as src:
        raw = src.read(1).astype(np.float64)
    jj, ii = np.meshgrid(np.arange(win.width) + 20.5, np.arange(win.height) + 15.5)
    pc, pr = pair.sar_pixel(jj, ii)
    bilinear = map_coordinates(raw, [pr - 0.5, pc - 0.5], order=1)
    expected = pair.sar_stretch.apply(normalise.to_db(bilinear))
    assert valid.all()
    np.testing.assert_allclose(view, expected, atol=2e-3)

    # And the content sits where the factory put it: SAR = optical moved by `shift`.
    _assert_content_shifted_by(pair, syn, Window(10, 10, 128, 96), tol=0.25)


def test_same_grid_reads_directly_and_recovers_shift(tmp_path):
    syn = make_pair(tmp_path, shift=(-4.0, 2.5))
    pair = RasterPair(syn.optical, syn.sar)
    assert pair.describe()["same_grid"] is True
    assert pair.sar_to_optical_scale == pytest.approx(1.0)
    assert pair.sar_scale == "linear"  # the factory writes linear intensity
    np.testing.assert_allclose(pair.sar_pixel([10.25], [20.5]), ([10.25], [20.5]), atol=1e-9)
    _assert_content_shifted_by(pair, syn, Window(16, 12, 128, 96), tol=0.25)


def test_reads_outside_the_raster_are_padded_invalid(tmp_path):
    syn = make_pair(tmp_path, size=(100, 120))
    pair = RasterPair(syn.optical, syn.sar)
    img, valid = pair.read_optical(Window(-5, -7, 30, 40))
    assert img.shape == valid.shape == (40, 30)
    assert img.dtype == np.float32
    assert not valid[:7].any() and not valid[:, :5].any()
    assert valid[7:, 5:].all()
    assert (img[~valid] == 0).all()
    assert 0.0 <= img.min() and img.max() <= 1.0
    sar, svalid = pair.read_sar(Window(110, 90, 20, 20))
    assert svalid[:10, :10].all() and not svalid[10:].any() and not svalid[:, 10:].any()
    with pytest.raises(ValueError, match="integer"):
        pair.read_optical(Window(0.5, 0, 10, 10))


def test_stretch_is_shared_by_all_windows(tmp_path):
    syn = make_pair(tmp_path, size=(100, 120))
    pair = RasterPair(syn.optical, syn.sar)
    full, _ = pair.read_optical(Window(0, 0, 120, 100))
    part, _ = pair.read_optical(Window(30, 20, 40, 30))
    np.testing.assert_array_equal(part, full[20:50, 30:70])
    sfull, _ = pair.read_sar(Window(0, 0, 120, 100))
    spart, _ = pair.read_sar(Window(30, 20, 40, 30))
    np.testing.assert_array_equal(spart, sfull[20:50, 30:70])
    # 1st-99th percentiles over the overlap: about 1 % of pixels saturate at each end.
    assert 0.003 < (full == 0).mean() < 0.03 and 0.003 < (full == 1).mean() < 0.03


def test_grey_rule_first_three_bands_or_selection(tmp_path):
    t = optical_transform()
    rng = np.random.default_rng(3)
    rgb = rng.uniform(0, 1, (3, 100, 100))
    band4 = np.full((1, 100, 100), 50.0)  # a constant "alpha/NIR" band that must not enter the grey
    opt = write_raster(tmp_path / "o.tif", np.concatenate([rgb, band4]).astype(np.float32), t, OPTICAL_CRS)
    sar = write_raster(tmp_path / "s.tif", rng.uniform(0, 1, (100, 100)).astype(np.float32), t, OPTICAL_CRS)
    pair = RasterPair(opt, sar)
    img, _ = pair.read_optical(Window(0, 0, 100, 100))
    grey = rgb.mean(axis=0)
    np.testing.assert_allclose(img, pair.optical_stretch.apply(grey), atol=1e-6)
    assert pair.describe()["optical"]["bands"] == [1, 2, 3]
    pair2 = RasterPair(opt, sar, PairConfig(optical_bands=(2,)))
    img2, _ = pair2.read_optical(Window(0, 0, 100, 100))
    np.testing.assert_allclose(img2, pair2.optical_stretch.apply(rgb[1]), atol=1e-6)
    assert normalise.grey_bands(2, ()) == (1, 2) and normalise.grey_bands(1, ()) == (1,)


def test_sar_scale_detection_rule():
    rng = np.random.default_rng(0)
    texture = rng.lognormal(0, 0.8, 20000)
    intensity = texture * rng.gamma(4, 0.25, texture.size)
    assert normalise.detect_sar_scale(intensity) == "linear"
    assert normalise.detect_sar_scale(np.sqrt(intensity)) == "linear"  # amplitude
    assert normalise.detect_sar_scale(10 * np.log10(intensity)) == "db"  # negative values
    # A display product (8-bit, roughly symmetric): already compressed, no log.
    display = np.clip(rng.normal(120, 40, 20000), 0, 255).round()
    assert normalise.detect_sar_scale(display) == "db"
    # dB rescaled to [0, 1] (non-negative but symmetric).
    db = 10 * np.log10(intensity)
    assert normalise.detect_sar_scale((db - db.min()) / np.ptp(db)) == "db"


def test_sar_in_db_is_not_converted_again(tmp_path):
    syn = make_pair(tmp_path, sar_db=True)
    pair = RasterPair(syn.optical, syn.sar)
    assert pair.sar_scale == "db"
    with rasterio.open(syn.sar) as src:
        raw = src.read(1)
    lo, hi = np.percentile(raw, [1, 99])
    assert pair.sar_stretch.lo == pytest.approx(lo, abs=0.3) and pair.sar_stretch.hi == pytest.approx(hi, abs=0.3)
    forced = RasterPair(syn.optical, syn.sar, PairConfig(sar_scale="linear"))
    assert forced.sar_scale == "linear"


def test_declared_and_override_nodata(tmp_path):
    t = optical_transform()
    rng = np.random.default_rng(1)
    img = rng.uniform(10, 200, (120, 120)).astype(np.float32)
    img[40:60, 40:60] = -9999
    opt_plain = write_raster(tmp_path / "plain.tif", img, t, OPTICAL_CRS)
    opt_decl = write_raster(tmp_path / "decl.tif", img, t, OPTICAL_CRS, nodata=-9999)
    sar = write_raster(tmp_path / "s.tif", rng.uniform(0.01, 1, (120, 120)).astype(np.float32), t, OPTICAL_CRS)
    win = Window(0, 0, 120, 120)
    _, v_plain = RasterPair(opt_plain, sar).read_optical(win)
    assert v_plain.all()  # -9999 is a value unless someone says otherwise
    pair = RasterPair(opt_plain, sar, PairConfig(optical_nodata=-9999))
    _, v_over = pair.read_optical(win)
    assert not v_over[40:60, 40:60].any() and v_over.sum() == 120 * 120 - 400
    assert pair.describe()["optical"]["nodata_rule"] == "override"
    decl = RasterPair(opt_decl, sar)
    _, v_decl = decl.read_optical(win)
    np.testing.assert_array_equal(v_decl, v_over)
    assert decl.describe()["optical"]["nodata_rule"] == "declared"
    # Nodata does not bend the stretch: the percentiles come from valid pixels only.
    assert decl.optical_stretch.lo > 10


def test_masks_same_grid_other_grid_and_ungeoreferenced(tmp_path):
    syn = make_pair(tmp_path, size=(100, 120))
    t = optical_transform()
    m = np.ones((100, 120), np.uint8)
    m[:, :30] = 0
    same = write_raster(tmp_path / "m_same.tif", m, t, OPTICAL_CRS)
    pair = RasterPair(syn.optical, syn.sar, PairConfig(optical_mask=str(same)))
    _, valid = pair.read_optical(Window(0, 0, 120, 100))
    assert not valid[:, :30].any() and valid[:, 30:].all()
    # A 20 m mask on the SAR side, invalid on its left half (x < 400600): onto the optical grid by nearest.
    coarse = np.ones((50, 60), np.uint8)
    coarse[:, :30] = 0
    other = write_raster(tmp_path / "m_other.tif", coarse, from_origin(400000, 5100000, 20, 20), OPTICAL_CRS)
    pair = RasterPair(syn.optical, syn.sar, PairConfig(sar_mask=str(other)))
    _, svalid = pair.read_sar(Window(0, 0, 120, 100))
    assert not svalid[:, :60].any() and svalid[:, 60:].all()
    # A mask without georeferencing but of the image's size takes the image's grid.
    bare = write_raster(tmp_path / "m_bare.tif", m, None, None)
    pair = RasterPair(syn.optical, syn.sar, PairConfig(optical_mask=str(bare)))
    _, valid = pair.read_optical(Window(0, 0, 120, 100))
    assert not valid[:, :30].any() and valid[:, 30:].all()
    small = write_raster(tmp_path / "m_small.tif", m[:50], None, None)
    with pytest.raises(RasterError, match="m_small.tif has no CRS"):
        RasterPair(syn.optical, syn.sar, PairConfig(optical_mask=str(small)))


def _collared(shape, seed, margin):
    """Texture inside a diamond-ish (convex) footprint, exact zeros outside; plus one interior zero."""
    h, w = shape
    rng = np.random.default_rng(seed)
    img = rng.uniform(5, 250, shape).astype(np.float32)
    ii, jj = np.mgrid[0:h, 0:w]
    outside = (np.abs(ii - h / 2) / (h / 2 - margin) + np.abs(jj - w / 2) / (w / 2)) > 1.3
    img[outside] = 0
    img[h // 2, w // 2] = 0  # a dark pixel inside the image: must stay valid
    return img, outside


def test_implicit_zero_border(tmp_path):
    t = optical_transform()
    img, outside = _collared((120, 140), 0, 5)
    opt = write_raster(tmp_path / "o.tif", img, t, OPTICAL_CRS)
    rng = np.random.default_rng(2)
    sar = write_raster(tmp_path / "s.tif", rng.uniform(0.01, 1, (120, 140)).astype(np.float32), t, OPTICAL_CRS)
    pair = RasterPair(opt, sar)
    _, valid = pair.read_optical(Window(0, 0, 140, 120))
    np.testing.assert_array_equal(valid, ~outside)
    assert valid[60, 70]  # the interior zero
    assert pair.describe()["optical"]["nodata_rule"] == "implicit-border"
    _, valid_off = RasterPair(opt, sar, PairConfig(implicit_border=False)).read_optical(Window(0, 0, 140, 120))
    assert valid_off.all()


def test_implicit_border_on_a_warped_sar_never_leaks_zeros(tmp_path):
    t = optical_transform()
    rng = np.random.default_rng(4)
    opt = write_raster(tmp_path / "o.tif", rng.uniform(1, 255, (120, 140)).astype(np.float32), t, OPTICAL_CRS)
    img, outside = _collared((90, 105), 1, 4)  # a 13.33 m SAR grid over the same area
    sar = write_raster(tmp_path / "s.tif", img, from_origin(400000, 5100000, 140 * 10 / 105, 120 * 10 / 90),
                       OPTICAL_CRS)
    pair = RasterPair(opt, sar, PairConfig(sar_scale="db"))
    _, valid = pair.read_sar(Window(0, 0, 140, 120))
    jj, ii = np.meshgrid(np.arange(140) + 0.5, np.arange(120) + 0.5)
    sc, sr = pair.sar_pixel(jj, ii)
    # Every valid optical pixel's bilinear neighbours in the SAR are inside the footprint.
    for dc in (-0.5, 0.5):
        for dr in (-0.5, 0.5):
            c = np.clip(np.floor(sc + dc).astype(int), 0, 104)
            r = np.clip(np.floor(sr + dr).astype(int), 0, 89)
            assert not outside[r, c][valid].any()
    # And the footprint is not thrown away: most of the pixels well inside it are valid.
    centre_inside = ~outside[np.clip(sr.astype(int), 0, 89), np.clip(sc.astype(int), 0, 104)]
    assert valid.sum() > 0.85 * centre_inside.sum()


def test_pickle_close_threads_and_describe(tmp_path):
    syn = make_pair(tmp_path, shift=(1.0, 1.0), sar_crs="EPSG:4326", sar_margin=4)
    pair = RasterPair(syn.optical, syn.sar)
    win = Window(10, 10, 50, 40)
    ref = pair.read_sar(win)
    clone = pickle.loads(pickle.dumps(pair))
    np.testing.assert_array_equal(clone.read_sar(win)[0], ref[0])
    np.testing.assert_array_equal(clone.read_sar(win)[1], ref[1])
    pair.close()
    np.testing.assert_array_equal(pair.read_sar(win)[0], ref[0])  # reopens after close
    wins = [Window(c, r, 40, 40) for c in (0, 30, 60, 90) for r in (0, 40, 80)]
    serial = [pair.read_sar(w)[0] for w in wins]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda w: pair.read_sar(w)[0], wins))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
    pair.close()

    d = pair.describe()
    json.dumps(d)  # the run table stores it as JSON
    assert d["optical"]["sha256"] == hashlib.sha256(syn.optical.read_bytes()).hexdigest()
    assert d["sar"]["sha256"] == hashlib.sha256(syn.sar.read_bytes()).hexdigest()
    assert d["sar"]["crs"] == "EPSG:4326" and d["optical"]["crs"] == "EPSG:32631"
    assert d["overlap"]["width"] == 160 and d["overlap"]["height"] == 120
    assert d["sar"]["scale"] == "linear"


def test_read_overview_scale_and_alignment(tmp_path):
    syn = make_pair(tmp_path, size=(120, 160), speckle_looks=0)
    pair = RasterPair(syn.optical, syn.sar)
    ov = pair.read_overview(max_size=40)
    assert ov.scale == pytest.approx(0.25)
    assert ov.optical.shape == ov.optical_valid.shape == ov.sar.shape == ov.sar_valid.shape == (30, 40)
    assert ov.optical_valid.all() and ov.sar_valid.all()
    full, _ = pair.read_optical(Window(0, 0, 160, 120))
    block_mean = full.reshape(30, 4, 40, 4).mean(axis=(1, 3))
    # Average resampling in raw units, then the stretch: equal to the block mean where nothing clips.
    inner = (block_mean > 0.05) & (block_mean < 0.95)
    np.testing.assert_allclose(ov.optical[inner], block_mean[inner], atol=0.03)
    same = pair.read_overview(max_size=1000)
    assert same.scale == 1.0
    np.testing.assert_array_equal(same.optical, full)


def test_two_rasters_without_georeferencing_pair_on_pixels(tmp_path):
    rng = np.random.default_rng(5)
    opt = write_raster(tmp_path / "o.tif", rng.uniform(0, 255, (110, 130)).astype(np.uint8), None, None)
    sar = write_raster(tmp_path / "s.tif", rng.uniform(0, 255, (100, 140)).astype(np.uint8), None, None)
    pair = RasterPair(opt, sar)
    assert pair.grid.crs is None and pair.optical_res_m is None
    assert pair.overlap == Window(0, 0, 130, 100)
    np.testing.assert_allclose(pair.sar_pixel([3.5], [7.25]), ([3.5], [7.25]))
    _, valid = pair.read_sar(Window(0, 90, 130, 20))
    assert valid[:10].all() and not valid[10:].any()
    ov = pair.read_overview(64)
    assert ov.scale == pytest.approx(64 / 130) and ov.optical.shape == ov.sar.shape == (50, 64)


UAVSAR = "gefolki/lngley_05521_09059_000_090813_L090_CX_01_pauli_x016_y020"


@pytest.mark.realdata
def test_real_gefolki_uavsar_pair(data_file):
    pair = RasterPair(data_file(f"{UAVSAR}_optique.tif"), data_file(f"{UAVSAR}_radar.tif"))
    ov = pair.overlap
    assert ov.width > 1000 and ov.height > 1000
    assert pair.grid.crs.to_epsg() == 4326
    assert pair.sar_to_optical_scale == pytest.approx(0.9996, abs=1e-3)
    assert 5 < pair.optical_res_m < 6.5
    img, valid = pair.read_optical(Window(ov.col_off, ov.row_off, 256, 256))
    sar_img, sar_valid = pair.read_sar(Window(ov.col_off, ov.row_off, 256, 256))
    assert valid.mean() > 0.99 and sar_valid.mean() > 0.9
    assert img[valid].std() > 0.05 and sar_img[sar_valid].std() > 0.05
    c, r = pair.sar_pixel(np.array([512.5]), np.array([512.5]))
    np.testing.assert_allclose(pair.optical_pixel(c, r), ([512.5], [512.5]), atol=1e-6)
    pair.close()


@pytest.mark.realdata
def test_real_gefolki_sentinel_pair_same_grid(data_file):
    pair = RasterPair(data_file("gefolki/S2_patch11.tif"), data_file("gefolki/S1_patch11.tif"))
    assert pair.overlap == Window(0, 0, 448, 448)
    assert pair.describe()["same_grid"] is True
    img, valid = pair.read_sar(Window(100, 100, 64, 64))
    assert valid.all() and 0.0 <= img.min() and img.max() <= 1.0


@pytest.mark.realdata
def test_real_rift_pair_without_crs(data_file):
    optical, sar = data_file("rift/sar-optical_pair2.jpg"), data_file("rift/sar-optical_pair1.jpg")
    check_readable(optical, "optical")
    check_readable(sar, "sar")
    pair = RasterPair(optical, sar)
    assert pair.overlap == Window(0, 0, 500, 500)
    img, valid = pair.read_optical(Window(0, 0, 500, 500))
    assert valid.mean() > 0.95 and img.std() > 0.1


@pytest.mark.realdata
def test_a_partly_present_data_folder_skips_naming_the_file(data_file):
    with pytest.raises(pytest.skip.Exception, match="real data incomplete: .*gefolki/not_shipped.tif not found"):
        data_file("gefolki/not_shipped.tif")
