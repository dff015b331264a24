"""Scale-aware patches: sampling at the weights' GSD (zoom), mapping back, native refinement, the setting."""

from __future__ import annotations

import numpy as np
import pytest
from factories import OPTICAL_CRS, optical_transform, write_raster
from matching_synth import sar_like, similarity, textured
from scipy import ndimage as ndi

from geomatch import config
from geomatch.config import MatchConfig
from geomatch.errors import ConfigError, InputError
from geomatch.models.runtime import build_scorer
from geomatch.models.weights import shipped_weights
from geomatch.pipeline import gsd
from geomatch.pipeline.cfog_features import box_sums
from geomatch.pipeline.patches import antialias_sigma, sample_patches
from geomatch.pipeline.score_table import feature_views, sample_windows
from geomatch.pipeline.search import match_points
from geomatch_plugins.detectors.corners import Harris

PATCH = 32
SHIFT = (7.4, -5.2)  # optical pixels of the fine (upsampled) pair


@pytest.fixture(scope="module")
def ncc():
    return build_scorer("ncc", device="cpu", params={"patch_size": PATCH})


@pytest.fixture(scope="module")
def fine_pair():
    """A 3x upsampled textured image (detail only at the coarse scale) and its SAR-like twin shifted by SHIFT."""
    optical = np.clip(ndi.zoom(textured((200, 200), seed=7), 3, order=3), 0, 1).astype(np.float32)
    truth = np.array([[1.0, 0.0, SHIFT[0]], [0.0, 1.0, SHIFT[1]]])
    sar, sar_ok = sar_like(optical, truth)
    return optical, sar, sar_ok, truth


def _errors(df, truth):
    ref = df[["ref_x", "ref_y"]].to_numpy()
    return np.hypot(*(ref @ truth[:, :2].T + truth[:, 2] - df[["tgt_x", "tgt_y"]].to_numpy()).T)


def test_zoom_one_samples_exactly_as_before():
    """z = 1 takes the samples the search always took (sample_patches through A, no filter, same disk), bit for bit;
    the radius keeps its value below 2 px (the "at least 2" floor is for the zoomed radius only)."""
    opt = textured((160, 160), seed=3)
    a = similarity(7.0, 1.04, (2.0, -1.0), (80, 80))
    sar, sar_ok = sar_like(opt, a, out_shape=(180, 180))
    opt_ok = np.ones(opt.shape, bool)
    opt_ok[:, :20] = False
    xy = np.array([[40.5, 50.5], [80.5, 81.5], [120.5, 60.5], [30.5, 130.5]])
    for radius in (1.5, 6.0):
        w = sample_windows(opt, sar, opt_ok, sar_ok, xy, a, PATCH, radius)
        m = int(np.ceil(radius)) + 1
        p0 = xy @ a[:, :2].T + a[:, 2]
        win = PATCH + 2 * m
        opt_use = sample_patches(opt_ok.astype(np.float32), xy, PATCH, order=0).reshape(len(xy), -1).min(1) > 0.5
        vwin = sample_patches(sar_ok.astype(np.float32), p0, win, a[:, :2], order=1) > 0.999
        cand = box_sums(vwin, PATCH) == PATCH * PATCH
        keep = np.nonzero(opt_use & cand[:, m, m])[0]
        assert w.m == m and w.zoom == 1.0 and np.array_equal(w.idx, keep) and len(keep) >= 2
        d = np.arange(-m, m + 1)
        dy, dx = np.meshgrid(d, d, indexing="ij")
        assert np.array_equal(w.in_disk, dx**2 + dy**2 <= radius**2 + 1e-9)
        assert np.array_equal(w.opt, sample_patches(opt, xy[keep], PATCH))
        assert np.array_equal(w.sar, sample_patches(sar, p0[keep], win, a[:, :2]))
        assert np.array_equal(w.cand_valid, cand[keep]) and np.array_equal(w.grid, a[:, :2])
        assert not w.shift.any()

    # The dense path's feature crops: the whole tile's features for the optical, one view through A for the SAR.
    def feats(img, ok):  # normalised per image, like CFOG's channels: a crop of another image would differ
        return np.stack([img * ok, np.gradient(img, axis=1) * ok]) / (img[ok].mean() + 1.0)

    w = sample_windows(opt, sar, opt_ok, sar_ok, xy, a, PATCH, 6.0)
    opt_f, sar_f = feature_views(opt, opt_ok, sar, sar_ok, w, feats, 4).crops(w.xy, PATCH, w.xy, w.sar.shape[-1])
    assert np.array_equal(opt_f, np.stack([sample_patches(ch, w.xy, PATCH) for ch in feats(opt, opt_ok)], 1))
    win = w.sar.shape[-1]
    lo = np.floor(w.xy.min(0)) - win // 2 - 4
    size = int(np.ceil((w.xy.max(0) - lo).max())) + win // 2 + 4 + 1
    at = a[:, :2] @ (lo + size // 2 + 0.5) + a[:, 2]
    view = sample_patches(sar, at[None], size, a[:, :2])[0]
    ok = sample_patches(sar_ok.astype(np.float32), at[None], size, a[:, :2], order=1)[0] > 0.999
    assert np.array_equal(sar_f, np.stack([sample_patches(ch, w.xy - lo, win) for ch in feats(view, ok)], 1))


def test_zoomed_windows_shrink_the_radius_and_filter_the_image(fine_pair):
    optical, sar, sar_ok, _ = fine_pair
    ones = np.ones(optical.shape, bool)
    xy = np.array([[300.5, 300.5]])
    w = sample_windows(optical, sar, ones, sar_ok, xy, np.eye(2, 3), PATCH, 12.0, zoom=3.0)
    assert w.m == 5 and np.allclose(w.grid, 3 * np.eye(2))  # 12 / 3 = 4 patch pixels, one ring more
    assert sample_windows(optical, sar, ones, sar_ok, xy, np.eye(2, 3), PATCH, 3.0, zoom=3.0).m == 3  # >= 2
    # A patch pixel is 3 image pixels, anti-aliased: the filtered image decimated, not the bare one.
    cut = np.s_[300 - 48:300 + 48:3, 300 - 48:300 + 48:3]
    np.testing.assert_allclose(w.opt[0], ndi.gaussian_filter(optical, antialias_sigma(3.0))[cut], atol=1e-6)
    assert np.abs(w.opt[0] - optical[cut]).max() > 1e-3


def test_a_3x_finer_pair_is_matched_at_the_weights_gsd(fine_pair, ncc, monkeypatch):
    optical, sar, sar_ok, truth = fine_pair
    ones = np.ones(optical.shape, bool)
    kps = Harris().detect(optical, ones, 40, 48, 0.02, 60)
    cfg = MatchConfig(search_radius=12.0)
    native = match_points(optical, sar, ones, sar_ok, kps, np.eye(2, 3), ncc, cfg)
    zoomed = match_points(optical, sar, ones, sar_ok, kps, np.eye(2, 3), ncc, cfg, zoom=3.0)
    assert len(zoomed) >= 0.9 * len(kps) and zoomed["refined"].all() and not native["refined"].any()
    err = _errors(zoomed, truth)
    assert np.median(err) < 1.0 and np.mean(err < 1.0) > 0.6
    assert zoomed["n_evals"].mean() < 0.6 * native["n_evals"].mean()  # a 4 px disk instead of 12 px
    np.testing.assert_allclose(zoomed["tgt_x"] - zoomed["ref_x"], zoomed["init_dx"])

    # Without the refinement: offsets in patch pixels mapped back through 3 L, within a patch pixel.
    monkeypatch.setattr(gsd, "REFINE_ABOVE", 99.0)
    coarse = match_points(optical, sar, ones, sar_ok, kps, np.eye(2, 3), ncc, cfg, zoom=3.0)
    assert not coarse["refined"].any()
    assert np.median(_errors(coarse, truth)) < 1.0 and np.mean(_errors(coarse, truth) < 3.0) > 0.9
    # The refinement moved the positions (to the proposer's native peak).
    assert np.abs(coarse["tgt_x"].to_numpy() - zoomed["tgt_x"].to_numpy()).max() > 0.05


def test_the_zoom_follows_the_setting_and_the_weights():
    assert gsd.patch_zoom("auto", 10.0, (9.5, 10.5), 10.2) == 1.0  # inside the trained range
    assert gsd.patch_zoom("auto", 10.0, (9.5, 10.5), 2.5) == pytest.approx(9.5 / 2.5)  # to the range's nearest end
    assert gsd.patch_zoom("auto", 10.0, (9.5, 10.5), 20.0) == pytest.approx(10.5 / 20)
    assert gsd.patch_zoom("auto", 10.0, (5.0, 20.0), 1.0) == pytest.approx(5.0)
    assert gsd.patch_zoom("auto", 10.0, None, 2.0) == pytest.approx(5.0)
    assert gsd.patch_zoom("auto", 10.0, None, 10.0) == 1.0
    assert gsd.patch_zoom("auto", None, None, 1.0) == 1.0  # ncc, cfog, weights without a GSD
    assert gsd.patch_zoom("auto", 10.0, (9.5, 10.5), None) == 1.0  # no CRS: nothing known in metres
    assert gsd.patch_zoom("native", 10.0, (9.5, 10.5), 1.0) == 1.0
    assert gsd.patch_zoom(5.0, None, None, 1.0) == pytest.approx(5.0)
    with pytest.raises(InputError, match="opt.tif: match.patch_gsd = 5 m needs its pixel size in metres"):
        gsd.patch_zoom(5.0, None, None, None, "opt.tif")
    assert gsd.footprint(64, 3.0) == 192 and gsd.footprint(64, 0.5) == 64 and gsd.refine_radius(3.2) == 5.0


def test_the_shipped_optical_sar_weights_carry_their_gsd():
    entry = shipped_weights()["optical-sar"]
    scorer = build_scorer("rrlnet", "optical-sar", device="cpu")
    assert scorer.gsd_m == entry["gsd_m"] and scorer.gsd_range_m == tuple(entry["gsd_range_m"])
    assert build_scorer("ncc", device="cpu").gsd_m is None


@pytest.mark.parametrize("value, message", [
    ("fine", "patch_gsd = 'fine' is not valid; give \"auto\""),
    (0, "patch_gsd = 0.0 is out of range; it must be > 0"),
    (-3.0, "it must be > 0"),
    (True, "patch_gsd: expected float"),
])
def test_bad_patch_gsd_is_one_config_error(value, message):
    with pytest.raises(ConfigError, match=message):
        config.build({"match": {"patch_gsd": value}})
    assert config.build({}).match.patch_gsd == "auto"
    assert config.build({"match": {"patch_gsd": 3}}).match.patch_gsd == 3.0


def test_a_run_on_a_fine_pair_samples_at_the_given_gsd_and_records_it(tmp_path, fine_pair):
    from geomatch.pipeline.run import run_pipeline

    optical, sar, sar_ok, truth = fine_pair
    t = optical_transform(10.0 / 3)
    opt_tif = write_raster(tmp_path / "optical.tif", (optical * 10000).astype(np.uint16), t, OPTICAL_CRS)
    sar_tif = write_raster(tmp_path / "sar.tif", np.where(sar_ok, sar, np.nan).astype(np.float32), t, OPTICAL_CRS,
                           nodata=float("nan"))
    sets = {"match.plugin": "ncc", "match.params": {"patch_size": PATCH}, "match.patch_gsd": 10.0,
            "detect.max_points": 60, "detect.cell_size": 48, "write.plot": False}
    res = run_pipeline(opt_tif, sar_tif, config.load("default", sets))
    rec = res.summary["patch_gsd"]
    assert rec["zoom"] == pytest.approx(3.0) and rec["input_gsd_m"] == pytest.approx(10.0 / 3)
    assert rec["setting"] == 10.0 and rec["weights_gsd_m"] is None and rec["refined_points"] > 0
    kept = res.gdf[~res.gdf["outlier"]]
    assert len(kept) >= 10
    err = np.hypot(kept["tgt_col"] - kept["ref_col"] - SHIFT[0], kept["tgt_row"] - kept["ref_row"] - SHIFT[1])
    assert np.median(err) < 1.0
    assert res.run_info["summary"]["patch_gsd"] == rec
