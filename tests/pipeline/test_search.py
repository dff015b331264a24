from dataclasses import replace

import numpy as np
import pytest
from matching_synth import sar_like, similarity, textured

from geomatch.config import MatchConfig
from geomatch.models.runtime import build_scorer
from geomatch.pipeline.keypoints import Keypoints
from geomatch.pipeline.search import COLUMNS, match_points
from geomatch_plugins.detectors.corners import Harris

PATCH = 32
CFG = MatchConfig(search_radius=12.0, coarse_step=4, batch_size=512)


@pytest.fixture(scope="module")
def optical():
    return textured((256, 256), seed=7)


@pytest.fixture(scope="module")
def scorer():
    # The pipeline's own scoring path (runtime choice, batching, shape checks), at the tests' patch size.
    return build_scorer("ncc", device="cpu", batch_size=CFG.batch_size, params={"patch_size": PATCH})


def _keypoints(img, n=40):
    return Harris().detect(img, np.ones(img.shape, bool), n, 24, 0.02, PATCH // 2 + 14)


def _errors(df, truth):
    ref = df[["ref_x", "ref_y"]].to_numpy()
    tgt = df[["tgt_x", "tgt_y"]].to_numpy()
    return np.hypot(*(ref @ truth[:, :2].T + truth[:, 2] - tgt).T)


def test_recovers_a_subpixel_shift_on_a_sar_like_twin(optical, scorer):
    truth = np.array([[1.0, 0.0, 3.3], [0.0, 1.0, -5.6]])
    sar, sar_ok = sar_like(optical, truth)
    kps = _keypoints(optical)
    df = match_points(optical, sar, np.ones(optical.shape, bool), sar_ok, kps, np.eye(2, 3), scorer, CFG)
    assert list(df.columns) == COLUMNS
    assert len(df) >= 0.8 * len(kps)
    err = _errors(df, truth)
    assert np.median(err) < 0.5
    assert np.mean(err < 1.0) > 0.8
    # Coarse-to-fine: tens of evaluations per keypoint, not the 625 of an exhaustive +-12 px search.
    assert df["n_evals"].max() < 120 and df["n_evals"].mean() < 90
    np.testing.assert_allclose(df["tgt_x"] - df["ref_x"], df["init_dx"])


def test_rotation_and_scale_are_taken_out_through_the_initial_affine(optical, scorer):
    """The initial affine carries rotation and scale but is 6 px off; the sub-pixel offset maps back through it."""
    truth = similarity(12.0, 1.08, (6.0, -4.0), (128, 128))
    initial = similarity(12.0, 1.08, (0.0, 0.0), (128, 128))
    sar, sar_ok = sar_like(optical, truth, out_shape=(300, 300))
    kps = _keypoints(optical)
    df = match_points(optical, sar, np.ones(optical.shape, bool), sar_ok, kps, initial, scorer, CFG)
    assert len(df) >= 10
    err = _errors(df, truth)
    assert np.median(err) < 0.5
    assert np.mean(err < 1.0) > 0.8


def test_nodata_in_the_sar_is_never_matched(optical, scorer):
    truth = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    sar, sar_ok = sar_like(optical, truth)
    sar_ok[:, 100:160] = False
    sar = np.where(sar_ok, sar, 0.0).astype(np.float32)
    kps = _keypoints(optical, 100)
    df = match_points(optical, sar, np.ones(optical.shape, bool), sar_ok, kps, np.eye(2, 3), scorer, CFG)
    assert 0 < len(df) < len(kps)  # points whose patch would cover the hole are dropped
    tx = df["tgt_x"].to_numpy()
    assert np.all((tx + PATCH / 2 <= 100.5) | (tx - PATCH / 2 >= 159.5))
    assert np.median(_errors(df, truth)) < 0.5


def test_batch_size_does_not_change_results_and_empty_input(optical, scorer):
    sar, sar_ok = sar_like(optical, np.array([[1.0, 0.0, -2.0], [0.0, 1.0, 3.0]]))
    kps = _keypoints(optical, 12)
    ones = np.ones(optical.shape, bool)
    a = match_points(optical, sar, ones, sar_ok, kps, np.eye(2, 3), scorer, CFG)
    b = match_points(optical, sar, ones, sar_ok, kps, np.eye(2, 3), scorer, replace(CFG, batch_size=7))
    np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-5, atol=1e-6)
    empty = match_points(optical, sar, ones, sar_ok, Keypoints(), np.eye(2, 3), scorer, CFG)
    assert empty.empty and list(empty.columns) == COLUMNS


def test_ratio_flags_repetitive_texture(optical, scorer):
    rows, cols = np.mgrid[0:256, 0:256]
    stripes = (0.5 + 0.4 * np.sin(2 * np.pi * cols / 8.0) + 0.02 * np.sin(rows / 9.0)).astype(np.float32)
    ones = np.ones(optical.shape, bool)
    kps = Keypoints(np.arange(60, 200, 20) + 0.5, np.full(7, 128.5), np.ones(7))
    rep = match_points(stripes, stripes, ones, ones, kps, np.eye(2, 3), scorer, CFG)
    uniq = match_points(optical, optical, ones, ones, kps, np.eye(2, 3), scorer, CFG)
    assert rep["ratio"].min() > 0.97
    assert uniq["ratio"].max() < 0.9
    np.testing.assert_allclose(uniq["tgt_x"], uniq["ref_x"], atol=0.05)  # self-match: (nearly) zero shift
    # The radius comes from the config, in pixels; one in metres must have been converted by the caller.
    small = match_points(optical, optical, ones, ones, kps, np.eye(2, 3), scorer, replace(CFG, search_radius=4.0))
    assert small["n_evals"].max() < uniq["n_evals"].min()
    with pytest.raises(ValueError, match="in pixels"):
        match_points(optical, optical, ones, ones, kps, np.eye(2, 3), scorer, replace(CFG, search_units="m"))


@pytest.mark.realdata
def test_registers_a_real_vis_nir_pair(data_dir):
    """VIS (RGB -> grey) against the warped NIR of the EPFL field set: coarse + search + filters with NCC."""
    import visnir_pairs as bench  # benchmarks/ is on the tests' pythonpath (setup.cfg)

    pair = bench.load_pair(data_dir / "vis-nir" / "field", "0021")
    detect = replace(bench.DETECT, max_points_per_tile=60, cell_size=80)
    reg = bench.register(pair.vis, pair.vis_ok, pair.nir, pair.nir_ok, detect=detect)
    assert reg.initial.method.startswith("cfog search")
    assert bench.capture_error(reg.initial.affine, pair.truth, pair.vis.shape) < 12.0  # within the fine search radius
    kept = reg.points["outlier"].to_numpy() == 0
    assert kept.sum() >= 20
    assert np.median(bench.errors(reg.points, pair.truth)[kept]) < 1.0
    assert reg.model_info["rmse_px"] < 2.0


def test_blurred_coarse_grid_keeps_accuracy_and_counts_its_evaluations(optical, scorer):
    truth = np.array([[1.0, 0.0, -6.4], [0.0, 1.0, 9.3]])
    sar, sar_ok = sar_like(optical, truth)
    kps = _keypoints(optical, 25)
    ones = np.ones(optical.shape, bool)
    plain = match_points(optical, sar, ones, sar_ok, kps, np.eye(2, 3), scorer, CFG)
    blurred = match_points(optical, sar, ones, sar_ok, kps, np.eye(2, 3), scorer,
                           replace(CFG, coarse_sigma=2.0, refine_top=1))
    assert np.median(_errors(blurred, truth)) < 0.5
    assert (blurred["ratio"] < 1).all()
    # The blurred coarse grid is scored separately from the step-1 refinement: it adds to n_evals.
    coarse_points = int(np.sum([(dx**2 + dy**2) <= 144 for dx in range(-12, 13, 4) for dy in range(-12, 13, 4)]))
    assert blurred["n_evals"].min() > coarse_points
    assert len(plain) == len(blurred)
