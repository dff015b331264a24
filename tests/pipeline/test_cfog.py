"""CFOG (dense oriented-gradient channels, FFT correlation) and the cascade it proposes for."""

from dataclasses import replace

import geopandas as gpd
import numpy as np
import pytest
import torch
from matching_synth import sar_like, similarity, textured

from geomatch import config
from geomatch.config import MatchConfig
from geomatch.errors import ConfigError
from geomatch.models.runtime import build_scorer
from geomatch.pipeline.cascade import CLIMB_EVALS
from geomatch.pipeline.cfog_features import channels, crop_correlation
from geomatch.pipeline.run import run_pipeline
from geomatch.pipeline.search import match_points
from geomatch_plugins.detectors.corners import Harris
from geomatch_plugins.matchers.cfog import channels_torch
from tests.factories import make_pair

PATCH = 32
CFG = MatchConfig(search_radius=12.0, batch_size=512)
TRUTH = np.array([[1.0, 0.0, 3.3], [0.0, 1.0, -5.6]])


@pytest.fixture(scope="module")
def pair():
    optical = textured((256, 256), seed=7)
    sar, sar_ok = sar_like(optical, TRUTH)
    kps = Harris().detect(optical, np.ones(optical.shape, bool), 40, 24, 0.02, PATCH // 2 + 14)
    return optical, sar, sar_ok, kps


def _scorer(name, **params):
    return build_scorer(name, device="cpu", batch_size=CFG.batch_size, params={"patch_size": PATCH, **params})


def _errors(df):
    ref = df[["ref_x", "ref_y"]].to_numpy()
    tgt = df[["tgt_x", "tgt_y"]].to_numpy()
    return np.hypot(*(ref @ TRUTH[:, :2].T + TRUTH[:, 2] - tgt).T)


def _match(pair, scorer, cfg):
    optical, sar, sar_ok, kps = pair
    return match_points(optical, sar, np.ones(optical.shape, bool), sar_ok, kps, np.eye(2, 3), scorer, cfg)


def test_stacked_channels_are_each_images_channels():
    rng = np.random.default_rng(0)
    img = rng.random((3, 60, 70)).astype(np.float32)
    valid = np.ones(img.shape, bool)
    valid[1, :12] = False  # a masked band changes the fill, the erosion and the median floor of that image only
    stack, inner = channels(img, valid)
    for i in range(3):
        one, one_inner = channels(img[i], valid[i])
        np.testing.assert_allclose(stack[i], one, atol=1e-6)
        assert np.array_equal(inner[i], one_inner)
    # The differentiable twin the patch-pair score uses: the same values.
    t_stack, t_inner = channels_torch(torch.from_numpy(img), torch.from_numpy(valid))
    np.testing.assert_allclose(t_stack.numpy(), stack, atol=1e-5)
    assert np.array_equal(t_inner.numpy(), inner)


def test_fft_crop_correlation_is_the_direct_zncc():
    rng = np.random.default_rng(1)
    patches = rng.random((3, 2, 8, 8))
    windows = rng.random((3, 2, 13, 13))
    windows[2, :, 1:9, 4:12] = 2 * patches[2] + 1  # an exact match at (1, 4), up to gain and offset
    r = crop_correlation(patches, windows)
    assert r.shape == (3, 6, 6)
    for i, y, x in [(0, 0, 0), (1, 5, 2), (2, 3, 3)]:
        a = patches[i].ravel() - patches[i].mean()
        b = windows[i, :, y:y + 8, x:x + 8].ravel()
        b = b - b.mean()
        assert r[i, y, x] == pytest.approx(a @ b / np.sqrt((a @ a) * (b @ b)), abs=1e-5)
    assert r[2, 1, 4] == pytest.approx(1.0, abs=1e-5)


def test_cfog_finds_a_known_subpixel_shift_on_a_sar_like_twin(pair):
    df = _match(pair, _scorer("cfog"), CFG)
    assert len(df) >= 0.8 * len(pair[3])
    err = _errors(df)
    assert np.median(err) < 0.5 and np.mean(err < 1.0) > 0.8
    # Dense: the whole search window is scored, every valid offset of the (2 * 13 + 1)^2 table.
    assert df["n_evals"].max() <= 27 * 27 and df["n_evals"].median() > 600


def test_cfog_positions_carry_no_systematic_offset(pair):
    # A real pair's tie points showed a shared pixel-sized offset against their truth (README, oracle bound):
    # this holds that it is not the matcher's own, at a sub-pixel shift it has to interpolate.
    df = _match(pair, _scorer("cfog"), CFG)
    ref, tgt = df[["ref_x", "ref_y"]].to_numpy(), df[["tgt_x", "tgt_y"]].to_numpy()
    d = tgt - (ref @ TRUTH[:, :2].T + TRUTH[:, 2])
    assert np.abs(np.median(d[np.hypot(*d.T) < 2], axis=0)).max() < 0.1


@pytest.mark.parametrize("mode", ["search", "cascade"])
def test_rotation_and_scale_are_taken_out_through_the_initial_affine(mode):
    """The tile's features are computed on the SAR resampled through A once; offsets map back through A."""
    optical = textured((256, 256), seed=7)
    truth = similarity(12.0, 1.08, (6.0, -4.0), (128, 128))
    sar, sar_ok = sar_like(optical, truth, out_shape=(300, 300))
    kps = Harris().detect(optical, np.ones(optical.shape, bool), 40, 24, 0.02, PATCH // 2 + 14)
    cfg = replace(CFG, mode=mode)
    scorer = _scorer("cfog") if mode == "search" else _scorer("ncc", absolute=True)
    df = match_points(optical, sar, np.ones(optical.shape, bool), sar_ok, kps,
                      similarity(12.0, 1.08, (0.0, 0.0), (128, 128)), scorer, cfg)
    assert len(df) >= 10
    ref = df[["ref_x", "ref_y"]].to_numpy()
    err = np.hypot(*(ref @ truth[:, :2].T + truth[:, 2] - df[["tgt_x", "tgt_y"]].to_numpy()).T)
    assert np.median(err) < 0.5 and np.mean(err < 1.0) > 0.8


def test_cfog_patch_score_prefers_the_aligned_patch(pair):
    optical, sar, _, kps = pair
    scorer = _scorer("cfog")
    from geomatch.pipeline.patches import sample_patches

    opt = sample_patches(optical, kps.xy, PATCH)
    right = sample_patches(sar, kps.xy @ TRUTH[:, :2].T + TRUTH[:, 2], PATCH)
    wrong = sample_patches(sar, kps.xy @ TRUTH[:, :2].T + TRUTH[:, 2] + [5.0, 0.0], PATCH)
    s_right, s_wrong = scorer(opt, right), scorer(opt, wrong)
    assert np.mean(s_right > s_wrong) > 0.9 and np.median(s_right) > 0.7


@pytest.mark.parametrize("top_k", [1, 3])
def test_cascade_scores_only_the_proposals_and_finds_the_shift(pair, top_k):
    cfg = replace(CFG, mode="cascade", proposer="cfog", top_k=top_k, cascade_weight=0.5, cascade_verify="block")
    df = _match(pair, _scorer("ncc", absolute=True), cfg)
    assert len(df) >= 0.8 * len(pair[3])
    # 3x3 around each proposal, plus one climbing step off a block's rim.
    assert df["n_evals"].max() <= 9 * top_k + CLIMB_EVALS
    assert df["n_evals"].min() >= 9 - 3  # at least the chosen proposal's block (less what leaves the valid area)
    err = _errors(df)
    assert np.median(err) < 0.5 and np.mean(err < 1.0) > 0.8


def test_peak_cascade_scores_peak_centres_and_fits_on_the_proposer(pair):
    """``cascade_verify = "peak"``: top_k network evaluations per keypoint; where the network keeps CFOG's own
    best peak, the position is CFOG's sub-pixel position exactly (the fit reads the proposer's surface)."""
    cfg = replace(CFG, mode="cascade", proposer="cfog", top_k=3, cascade_weight=0.5, cascade_verify="peak")
    df = _match(pair, _scorer("ncc", absolute=True), cfg)
    alone = _match(pair, _scorer("cfog"), CFG)
    assert len(df) >= 0.8 * len(pair[3]) and df["n_evals"].max() <= 3 and df["n_evals"].median() >= 2
    both = df.merge(alone, on=["ref_x", "ref_y"], suffixes=("", "_cfog"))
    same = np.hypot(both["tgt_x"] - both["tgt_x_cfog"], both["tgt_y"] - both["tgt_y_cfog"]) < 0.5
    assert same.mean() > 0.8
    np.testing.assert_allclose(both.loc[same, ["tgt_x", "tgt_y"]].to_numpy(),
                               both.loc[same, ["tgt_x_cfog", "tgt_y_cfog"]].to_numpy(), atol=1e-9)
    err = _errors(df)
    assert np.median(err) < 0.5 and np.mean(err < 1.0) > 0.8


def test_cascade_refuses_a_proposer_that_cannot_score_densely(pair):
    cfg = replace(CFG, mode="cascade", proposer="ncc")
    with pytest.raises(ConfigError, match=r"proposer = 'ncc'.*cfog"):
        _match(pair, _scorer("ncc"), cfg)


def test_cascade_mode_is_validated_in_the_config():
    with pytest.raises(ConfigError, match="mode"):
        config.load("default", {"match.mode": "exhaustive"})
    with pytest.raises(ConfigError, match="top_k"):
        config.load("default", {"match.top_k": 0})
    with pytest.raises(ConfigError, match="cascade_verify"):
        config.load("default", {"match.cascade_verify": "all"})


@pytest.mark.parametrize("mode", ["search", "cascade"])
def test_real_geotiff_pair_shift_is_recovered(tmp_path, mode):
    shift = (2.3, -1.4)
    p = make_pair(tmp_path, shift=shift, size=(180, 200), seed=3)
    over = {"match.plugin": "cfog", "tiles.size": 1000, "write.plot": False}
    if mode == "cascade":  # NCC as the decider: the factory's SAR is contrast-inverted, hence |ncc|
        over = {**over, "match.plugin": "ncc", "match.params": {"absolute": True}, "match.mode": "cascade"}
    out = tmp_path / "tp.gpkg"
    run_pipeline(p.optical, p.sar, config.load("default", over), out)
    kept = gpd.read_file(out, layer="tiepoints").query("outlier == 0")
    assert len(kept) >= 5
    err = np.hypot(kept["tgt_col"] - kept["ref_col"] - shift[0], kept["tgt_row"] - kept["ref_row"] - shift[1])
    assert np.median(err) < 0.35
    assert (kept["matcher"] == over["match.plugin"]).all()
