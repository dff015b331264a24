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
