from dataclasses import replace

import numpy as np
import pytest
from matching_synth import sar_like, similarity, textured
from skimage import data, transform

from geomatch.config import CoarseConfig
from geomatch.pipeline.coarse import estimate_initial


def _worst_error(affine, truth, size=512):
    g = np.stack(np.meshgrid(np.linspace(0, size, 9), np.linspace(0, size, 9)), -1).reshape(-1, 2)
    return np.hypot(*(g @ (affine[:, :2] - truth[:, :2]).T + affine[:, 2] - truth[:, 2]).T).max()


@pytest.fixture(scope="module")
def camera():
    return data.camera().astype(np.float32) / 255.0  # 512 x 512


@pytest.mark.parametrize("source", ["camera", "noise"])
def test_recovers_10_degrees_and_40_px_across_modalities(camera, source):
    opt = camera if source == "camera" else textured((512, 512), seed=11)
    truth = similarity(10.0, 1.0, (40.0, -25.0), (256, 256))
    sar, sar_ok = sar_like(opt, truth)  # speckled, gamma-mapped, nodata outside the rotated frame
    cfg = CoarseConfig(max_shift_px=64, max_rotation_deg=15)
    init = estimate_initial(opt, np.ones(opt.shape, bool), sar, sar_ok, cfg, 1.0)
    assert init.method.startswith("cfog search"), init.method
    assert abs(init.details["rotation_deg"] - 10.0) <= 0.5
    assert _worst_error(init.affine, truth) < 2.0  # over the whole 512 px image


def test_scale_search_on_an_overview(camera):
    """Overview arrays at half resolution (scale=2) still give the full-resolution transform."""
    truth = similarity(-7.0, 1.05, (30.0, 20.0), (256, 256))
    sar, sar_ok = sar_like(camera, truth)
    opt2 = transform.downscale_local_mean(camera, (2, 2))
    sar2 = transform.downscale_local_mean(sar, (2, 2))
    ok2 = sar_ok[::2, ::2] & sar_ok[1::2, 1::2] & sar_ok[::2, 1::2] & sar_ok[1::2, ::2]
    cfg = CoarseConfig(max_shift_px=64, max_rotation_deg=15, scale_range=(0.9, 1.1))
    init = estimate_initial(opt2, np.ones(opt2.shape, bool), sar2, ok2, cfg, 2.0)
    assert abs(init.details["scale"] - 1.05) < 0.01
    assert _worst_error(init.affine, truth) < 4.0


def test_identity_when_disabled_unrelated_or_too_small():
    a = textured((300, 300), seed=1)
    b, b_ok = sar_like(textured((300, 300), seed=21))
    ones = np.ones(a.shape, bool)
    off = estimate_initial(a, ones, b, b_ok, CoarseConfig(enabled=False), 1.0)
    assert "disabled" in off.method
    np.testing.assert_array_equal(off.affine, np.eye(2, 3))
    unrelated = estimate_initial(a, ones, b, b_ok, CoarseConfig(max_rotation_deg=10), 1.0)
    assert unrelated.method.startswith("identity (low confidence"), unrelated.method
    np.testing.assert_array_equal(unrelated.affine, np.eye(2, 3))
    tiny = estimate_initial(a[:30, :30], ones[:30, :30], b[:30, :30], b_ok[:30, :30], CoarseConfig(), 1.0)
    assert "too small" in tiny.method
    nodata = estimate_initial(a, np.zeros(a.shape, bool), b, b_ok, CoarseConfig(), 1.0)
    assert nodata.method.startswith("identity")


def test_pure_shift_is_exact_enough_for_a_small_search_radius():
    opt = textured((400, 400), seed=4)
    truth = np.array([[1.0, 0.0, -17.3], [0.0, 1.0, 23.6]])
    sar, sar_ok = sar_like(opt, truth)
    init = estimate_initial(opt, np.ones(opt.shape, bool), sar, sar_ok, CoarseConfig(max_shift_px=48), 1.0)
    np.testing.assert_allclose(init.affine[:, :2], np.eye(2), atol=1e-9)
    assert np.hypot(*(init.affine[:, 2] - truth[:, 2])) < 1.0


def _centre_shift(init):
    return np.hypot(*init.details["shift_px"])


def test_never_returns_a_rotation_or_scale_outside_the_ranges_and_reports_the_pair_beyond(camera):
    """The best match (25 deg, x1.25) lies outside the searched ranges (10 deg, 0.9-1.1)."""
    truth = similarity(25.0, 1.25, (10.0, -5.0), (256, 256))
    sar, sar_ok = sar_like(camera, truth)
    cfg = CoarseConfig(max_shift_px=64, max_rotation_deg=10, scale_range=(0.9, 1.1), min_confidence=1.0)
    init = estimate_initial(camera, np.ones(camera.shape, bool), sar, sar_ok, cfg, 1.0)
    assert -10.0 <= init.details["rotation_deg"] <= 10.0 and 0.9 <= init.details["scale"] <= 1.1, init.details
    lin = init.affine[:, :2]
    assert 0.9 - 1e-9 <= np.sqrt(abs(np.linalg.det(lin))) <= 1.1 + 1e-9
    assert abs(np.degrees(np.arctan2(lin[1, 0], lin[0, 0]))) <= 10.0 + 1e-9
    beyond = init.details["beyond_range"]
    assert beyond["rotation_deg"] > 10.0 or beyond["scale"] > 1.1, beyond
    assert "beyond the searched range" in init.method


def test_default_ranges_say_when_the_pair_looks_rotated(camera):
    truth = similarity(12.0, 1.0, (5.0, 5.0), (256, 256))
    sar, sar_ok = sar_like(camera, truth)
    init = estimate_initial(camera, np.ones(camera.shape, bool), sar, sar_ok, CoarseConfig(), 1.0)
    assert abs(init.details["beyond_range"]["rotation_deg"]) >= 5.0
    aligned, ok = sar_like(camera, similarity(0.0, 1.0, (5.0, 5.0), (256, 256)))
    assert "beyond_range" not in estimate_initial(camera, np.ones(camera.shape, bool), aligned, ok,
                                                  CoarseConfig(), 1.0).details


def test_a_shift_beyond_the_range_is_clipped_and_reported_when_widening_is_off():
    opt = textured((400, 400), seed=4)
    sar, sar_ok = sar_like(opt, np.array([[1.0, 0.0, 45.0], [0.0, 1.0, 0.0]]))  # just beyond the 40 px range
    cfg = CoarseConfig(max_shift_px=40, max_shift_widen=1.0, min_confidence=1.0, min_peak=0.0)
    init = estimate_initial(opt, np.ones(opt.shape, bool), sar, sar_ok, cfg, 1.0)
    assert _centre_shift(init) <= 40.0 + 1.0, init.details  # one overview pixel of sub-pixel slack at most
    doubt = estimate_initial(opt, np.ones(opt.shape, bool), sar, sar_ok, replace(cfg, min_confidence=50.0), 1.0)
    assert doubt.alternatives and all(np.hypot(*h.affine[:, 2]) <= 41.0 for h in doubt.alternatives)
    assert init.details["edge"] == ["shift"] and "edge of the 40 px shift search" in init.method


def test_a_peak_on_the_shift_edge_widens_the_search_up_to_its_limit():
    opt = textured((400, 400), seed=4)
    truth = np.array([[1.0, 0.0, 70.0], [0.0, 1.0, -12.0]])
    sar, sar_ok = sar_like(opt, truth)
    init = estimate_initial(opt, np.ones(opt.shape, bool), sar, sar_ok, CoarseConfig(max_shift_px=48), 1.0)
    assert init.details["max_shift_searched_px"] == 96.0 and "widened to 96 px" in init.method
    assert init.details["edge"] == []
    assert _worst_error(init.affine, truth, 400) < 2.0


def test_a_doubtful_peak_is_settled_by_the_fine_matches(camera):
    """min_confidence set out of reach: the coarse answer is in doubt, and the quick fine pass must pick the
    right hypothesis by the consistency of its matches (and keep the identity for an unrelated pair)."""
    from geomatch import config
    from geomatch.models.runtime import build_scorer
    from geomatch.pipeline.candidates import settle_initial

    truth = similarity(10.0, 1.0, (40.0, -25.0), (256, 256))
    sar, sar_ok = sar_like(camera, truth)
    cfg = config.load("visnir", {"coarse.min_confidence": 50.0, "coarse.max_shift_px": 64.0,
                                 "match.params": {"absolute": True}})
    scorer = build_scorer("ncc", "auto", "cpu", params={"absolute": True})
    doubt = estimate_initial(camera, np.ones(camera.shape, bool), sar, sar_ok, cfg.coarse, 1.0)
    assert not doubt.confident and doubt.method.startswith("identity (low confidence") and doubt.alternatives
    init = settle_initial(camera, np.ones(camera.shape, bool), sar, sar_ok, 1.0, cfg, scorer, 12.0)
    assert "chosen by a quick fine pass" in init.method, init.method
    assert _worst_error(init.affine, truth) < 4.0
    other, other_ok = sar_like(textured((512, 512), seed=21))
    kept = settle_initial(camera, np.ones(camera.shape, bool), other, other_ok, 1.0, cfg, scorer, 12.0)
    np.testing.assert_array_equal(kept.affine, np.eye(2, 3))
    assert "fine check kept the identity" in kept.method


@pytest.mark.slow
def test_run_on_a_raster_larger_than_the_overview_keeps_full_resolution_units(tmp_path):
    """The overview of a 1200 px overlap is 1024 px: the coarse transform must still be in optical pixels (the
    overview's scale is overview pixels per optical pixel, the coarse stage's its inverse)."""
    from geomatch import config
    from geomatch.pipeline.run import run_pipeline
    from tests.factories import make_pair

    pair = make_pair(tmp_path, shift=(30.0, -20.0), size=(1200, 1200), seed=2)
    cfg = config.load("default", {"match.plugin": "ncc", "match.params": {"absolute": True}, "tiles.size": 1200,
                                  "detect.max_points_per_tile": 16, "write.plot": False})
    coarse = run_pipeline(pair.optical, pair.sar, cfg).summary["coarse"]
    assert coarse["confident"], coarse["method"]
    np.testing.assert_allclose(np.asarray(coarse["affine"])[:, 2], (30.0, -20.0), atol=2.0)
