from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from geomatch.config import FilterConfig
from geomatch.pipeline.filters import flag_outliers

TRUE = np.array([[1.01, 0.03, 4.0], [-0.02, 0.99, -3.0]])


def _model_error(params) -> float:
    """Worst distance between a fitted affine and the truth over the points' 600 x 600 extent."""
    g = np.stack(np.meshgrid(np.linspace(0, 600, 7), np.linspace(0, 600, 7)), -1).reshape(-1, 2)
    a = np.asarray(params)
    return float(np.hypot(*(g @ (a[:, :2] - TRUE[:, :2]).T + a[:, 2] - TRUE[:, 2]).T).max())


def _points(n=80, seed=0, noise=0.2):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 600, (n, 2))
    tgt = ref @ TRUE[:, :2].T + TRUE[:, 2] + rng.normal(0, noise, (n, 2))
    return pd.DataFrame({"ref_x": ref[:, 0], "ref_y": ref[:, 1], "tgt_x": tgt[:, 0], "tgt_y": tgt[:, 1],
                         "score": rng.uniform(0.7, 0.95, n), "ratio": rng.uniform(0.3, 0.8, n)})


def test_each_level_flags_what_was_injected():
    df = _points()
    df.loc[[0, 1], "score"] = 0.3  # weak
    df.loc[2, "ratio"] = 0.995  # ambiguous
    df.loc[[10, 11, 12], ["tgt_x"]] += 25.0  # gross outliers, isolated from each other
    out, info = flag_outliers(df, FilterConfig(min_score=0.5, max_ratio=0.98, local_radius_px=150,
                                               local_max_dev_px=3.0, ransac_threshold_px=1.5))
    for col in ("outlier_score", "outlier_local", "outlier_model", "outlier"):
        assert out[col].dtype == np.int64 and set(out[col].unique()) <= {0, 1}
    assert set(np.nonzero(out["outlier_score"].to_numpy())[0]) == {0, 1, 2}
    bad = out.loc[[10, 11, 12]]
    assert (bad["outlier_local"] | bad["outlier_model"]).all()
    assert bad["outlier"].all()
    good = out.drop(index=[0, 1, 2, 10, 11, 12])
    assert good["outlier"].sum() <= 2  # the clean points stay
    assert len(out) == len(df)  # flagged, never dropped
    assert _model_error(info["params"]) < 0.3
    assert info["rmse_px"] < 0.5
    assert info["n_score"] == 3 and info["n_kept"] == int((out["outlier"] == 0).sum())
    assert out.loc[out["outlier"] == 0, "residual_px"].max() <= 1.5


def test_local_consistency_catches_a_deviation_ransac_would_allow():
    df = _points(noise=0.05)
    df.loc[5, "tgt_x"] += 1.6  # inside a loose RANSAC threshold, but unlike its neighbours
    cfg = FilterConfig(local_radius_px=200, local_max_dev_px=1.0, ransac_threshold_px=3.0)
    out, _ = flag_outliers(df, cfg)
    assert out.loc[5, "outlier_local"] == 1 and out.loc[5, "outlier_model"] == 0
    assert out["outlier_local"].sum() <= 2


@pytest.mark.parametrize("with_init", [True, False])
def test_a_rotation_is_not_disorder_but_a_local_jump_is(with_init):
    """A 10 degree rotation makes raw shifts vary by tens of pixels across a neighbourhood: neither the
    corrections to the coarse transform (init_dx, init_dy) nor the detrended raw shifts are fooled by it."""
    df = _points(noise=0.05)
    th = np.radians(10)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    ref = df[["ref_x", "ref_y"]].to_numpy()
    tgt = ref @ rot.T + [2.0, -1.0]
    tgt[7] += [2.0, 0.0]  # one point off by 2 px: within RANSAC's loose 4 px, not like its neighbours
    df["tgt_x"], df["tgt_y"] = tgt.T
    if with_init:
        df["init_dx"], df["init_dy"] = (tgt - ref @ rot.T).T
    out, info = flag_outliers(df, FilterConfig(local_radius_px=200, local_max_dev_px=1.0, ransac_threshold_px=4.0))
    assert out.loc[7, "outlier_local"] == 1 and out.loc[7, "outlier_model"] == 0
    assert out["outlier_local"].sum() == 1 and info["n_kept"] == len(df) - 1


def test_pixel_columns_win_over_map_coordinates():
    df = _points()
    df["ref_col"], df["ref_row"], df["view_col"], df["view_row"] = df.ref_x, df.ref_y, df.tgt_x, df.tgt_y
    df["ref_x"], df["ref_y"] = 500000 + 10 * df.ref_col, 4e6 - 10 * df.ref_row  # map units
    df["tgt_x"], df["tgt_y"] = 500000 + 10 * df.view_col, 4e6 - 10 * df.view_row
    out, info = flag_outliers(df, FilterConfig())
    assert info["n_kept"] >= len(df) - 2
    assert _model_error(info["params"]) < 0.3


@pytest.mark.parametrize("n", [0, 2])
def test_too_few_points_are_all_model_flagged(n):
    out, info = flag_outliers(_points().head(n), FilterConfig())
    assert len(out) == n and out["outlier"].sum() == n
    assert info["n_kept"] == 0 and "reason" in info


def test_poly2_model_and_its_affine_fallback():
    df = _points(n=60)
    ref = df[["ref_x", "ref_y"]].to_numpy()
    df["tgt_x"] += 2e-5 * (ref[:, 0] - 300) ** 2  # a gentle curvature an affine cannot follow
    cfg = FilterConfig(model="poly2", ransac_threshold_px=1.0, local_radius_px=0)
    curved = flag_outliers(df, cfg)[1]
    assert curved["model"] == "poly2" and np.array(curved["params"]).shape == (2, 6)
    assert curved["n_kept"] >= len(df) - 2
    # An affine cannot follow the curvature: it keeps fewer points (measured 55 of 60) and fits them more loosely
    # (0.55 px against poly2's 0.28 px), so poly2 is doing real work.
    strict = flag_outliers(df, replace(cfg, model="affine"))[1]
    assert strict["model"] == "affine"
    assert strict["n_kept"] < curved["n_kept"] and strict["rmse_px"] > curved["rmse_px"] + 0.1, (strict, curved)
    fallback = flag_outliers(df.head(4), cfg)[1]
    assert fallback["model"] == "affine" and "fallback" in fallback


@pytest.mark.parametrize("model", ["affine", "poly2"])
def test_model_params_are_in_scene_pixels_far_from_the_origin(model):
    """The fit works on centred, scaled coordinates; the params it reports are the map in the points' own pixels,
    exact on noise-free points 10,000 px from the origin (where unscaled x^2 terms reach 1e8)."""
    from geomatch.pipeline.gcpmodel import poly_terms

    rng = np.random.default_rng(4)
    ref = rng.uniform(0, 3000, (200, 2)) + [9000.0, 12000.0]
    truth = np.array([[25.0, 1.002, 0.003, 0.0, 0.0, 0.0], [-14.0, -0.004, 0.997, 0.0, 0.0, 0.0]])
    if model == "poly2":
        truth[:, 3:] = [[1e-6, -2e-6, 3e-7], [2e-7, 1e-6, -1e-6]]
    tgt = poly_terms(ref[:, 0], ref[:, 1], 2) @ truth.T
    df = pd.DataFrame({"ref_x": ref[:, 0], "ref_y": ref[:, 1], "tgt_x": tgt[:, 0], "tgt_y": tgt[:, 1],
                       "score": np.full(200, 0.9), "ratio": np.full(200, 0.5)})
    out, info = flag_outliers(df, FilterConfig(model=model, local_radius_px=0, min_score=0.5, max_ratio=0.95))
    assert info["n_kept"] == 200 and info["rmse_px"] < 1e-6
    want = truth if model == "poly2" else truth[:, [1, 2, 0]]
    np.testing.assert_allclose(np.asarray(info["params"]), want, rtol=1e-7, atol=1e-9)
