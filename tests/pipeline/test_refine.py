"""Positions re-found with a larger template (match.refine_patch, geomatch.pipeline.refine)."""

import numpy as np
import pandas as pd
import pytest
from matching_synth import sar_like, similarity, textured

from geomatch import config
from geomatch.config import MatchConfig
from geomatch.errors import ConfigError
from geomatch.models.runtime import build_scorer
from geomatch.pipeline.refine import refine_positions
from geomatch.pipeline.search import match_points
from geomatch_plugins.detectors.corners import Harris

TRUTH = similarity(1.0, 1.01, (3.3, -5.6), (128, 128))


@pytest.fixture(scope="module")
def pair():
    optical = textured((256, 256), seed=11)
    sar, sar_ok = sar_like(optical, TRUTH, looks=2.0)  # heavy speckle: a small template's peak wanders
    return optical, sar, np.ones(optical.shape, bool), sar_ok


def _truth(xy):
    return xy @ TRUTH[:, :2].T + TRUTH[:, 2]


def _rows(xy, found):
    init = found - _truth(xy)
    return pd.DataFrame({"ref_x": xy[:, 0], "ref_y": xy[:, 1], "tgt_x": found[:, 0], "tgt_y": found[:, 1],
                         "score": 0.9, "ratio": 0.5, "init_dx": init[:, 0], "init_dy": init[:, 1], "refined": False})


def _err(df):
    return np.hypot(*(df[["tgt_x", "tgt_y"]].to_numpy() - _truth(df[["ref_x", "ref_y"]].to_numpy())).T)


def test_positions_off_by_up_to_a_pixel_are_pulled_to_the_truth_and_edge_rows_kept(pair):
    rng = np.random.default_rng(0)
    g = np.arange(80.5, 180.0, 12.0)
    xy = np.vstack([np.column_stack([a.ravel(), b.ravel()]) for a, b in [np.meshgrid(g, g)]] + [[[20.5, 128.5]]])
    found = _truth(xy) + rng.uniform(-1.0, 1.0, xy.shape)
    df = _rows(xy, found)
    out = refine_positions(*pair, df, TRUTH, 96, 2.0, "cfog")
    inner = out["ref_x"].to_numpy() > 60
    assert out["refined"].to_numpy()[inner].all() and np.median(_err(out)[inner]) < 0.3 * np.median(_err(df)[inner])
    # 20 px from the edge a 96 px template does not fit: that row keeps what the search found
    edge = ~inner
    assert not out["refined"].to_numpy()[edge].any()
    np.testing.assert_array_equal(out.loc[edge, ["tgt_x", "tgt_y"]].to_numpy(), df.loc[edge, ["tgt_x", "tgt_y"]])
    # init_dx/dy follow the new positions (they are tgt minus A p)
    np.testing.assert_allclose(out[["init_dx", "init_dy"]].to_numpy(), out[["tgt_x", "tgt_y"]].to_numpy() - _truth(xy))


def test_a_larger_template_localises_better_under_speckle(pair):
    g = np.arange(70.5, 190.0, 8.0)
    xy = np.column_stack([a.ravel() for a in np.meshgrid(g, g)])
    df = _rows(xy, _truth(xy) + 0.4)
    small, large = (_err(refine_positions(*pair, df, TRUTH, p, 2.0, "cfog")) for p in (24, 96))
    assert np.median(large) < 0.7 * np.median(small)


@pytest.mark.parametrize("matcher", ["cfog", "ncc"])  # dense: settled on the search's features; ncc: its own
def test_match_points_refines_when_asked_and_only_then(pair, matcher):
    optical, sar, opt_ok, sar_ok = pair
    kps = Harris().detect(optical, opt_ok, 60, 20, 0.02, 60)
    scorer = build_scorer(matcher, device="cpu", batch_size=256, params={"patch_size": 24})
    plain, refined = (match_points(optical, sar, opt_ok, sar_ok, kps, TRUTH, scorer,
                                   MatchConfig(search_radius=6.0, refine_patch=r)) for r in (0, 96))
    assert not plain["refined"].any() and refined["refined"].mean() > 0.9
    assert np.median(_err(refined)) < 0.8 * np.median(_err(plain))


@pytest.mark.parametrize("value", [-1, -64])
def test_a_negative_refine_patch_is_refused(value):
    with pytest.raises(ConfigError, match="refine_patch"):
        config.load("default", {"match.refine_patch": value})
