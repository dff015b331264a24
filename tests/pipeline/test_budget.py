"""The scene's point budget: honoured, spread over the scene, and independent of the tiling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rasterio.windows import Window

from geomatch import config
from geomatch.cli.main import cli
from geomatch.pipeline.budget import block_side, spread
from geomatch.pipeline.keypoints import Keypoints
from geomatch.pipeline.run import run_pipeline
from tests.factories import make_pair

AREA = Window(0, 0, 1000, 800)


def _candidates(seed=0, n=2000):
    # Responses strongest in the top-left quarter: "the strongest N" would take nothing elsewhere.
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 1000, n), rng.uniform(0, 800, n)
    response = rng.uniform(0, 1, n) + 10.0 * ((x < 500) & (y < 400))
    return Keypoints(x, y, response)


def test_budget_is_honoured_and_spread_over_the_whole_area():
    kps = _candidates()
    pick = spread(kps, AREA, 200, 24)
    assert len(pick) == 200 and len(np.unique(pick)) == 200
    strongest = np.argsort(-kps.response)[:200]
    assert ((kps.x[strongest] < 500) & (kps.y[strongest] < 400)).all()  # the case a plain cap gets wrong
    quarters = np.bincount((kps.x[pick] >= 500).astype(int) + 2 * (kps.y[pick] >= 400), minlength=4)
    assert quarters.min() >= 35 and quarters.max() <= 65, quarters  # about 50 each
    # About one block per point, so the first round (each block's strongest candidate) fills the budget: the
    # choice is the strongest 200 of the block winners.
    side = block_side(AREA, 200, 24)
    block = (kps.y // side) * 100 + kps.x // side
    best = np.array([np.flatnonzero(block == b)[np.argmax(kps.response[block == b])] for b in np.unique(block)])
    assert len(best) > 200
    np.testing.assert_array_equal(pick, np.sort(best[np.argsort(-kps.response[best])[:200]]))


def test_choice_does_not_depend_on_candidate_order_or_ties():
    kps = _candidates(seed=1)
    kps.response[::3] = 0.5  # many exact ties
    pick = spread(kps, AREA, 150, 24)
    perm = np.random.default_rng(2).permutation(len(kps))
    again = perm[spread(kps.subset(perm), AREA, 150, 24)]
    np.testing.assert_array_equal(np.sort(again), pick)


def test_no_budget_or_a_large_one_keeps_every_candidate():
    kps = _candidates(n=50)
    np.testing.assert_array_equal(spread(kps, AREA, 0, 24), np.arange(50))
    np.testing.assert_array_equal(spread(kps, AREA, 50, 24), np.arange(50))
    assert len(spread(kps, AREA, 49, 24)) == 49


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("budget"), shift=(2.3, -1.4), size=(180, 200), seed=3)


def _cfg(**overrides):
    # Settling off: a tiled run then equals a single-window run exactly (with it: the test below).
    base = {"match.plugin": "ncc", "match.params": {"absolute": True}, "write.plot": False,
            "detect.cell_size": 12, "detect.max_points": 25, "match.refine_patch": 0}
    base.update(overrides)
    return config.load("default", base)


def test_a_tiled_run_chooses_and_matches_what_a_single_window_run_does(pair):
    single = run_pipeline(pair.optical, pair.sar, _cfg(**{"tiles.size": 1000}))
    tiled = run_pipeline(pair.optical, pair.sar, _cfg(**{"tiles.size": 37}))
    assert single.summary["keypoints"]["candidates"] > 25  # the budget binds
    assert single.summary["keypoints"]["chosen"] == tiled.summary["keypoints"]["chosen"] == 25
    assert 0 < len(single.gdf) <= 25
    key = ["ref_col", "ref_row"]
    a = single.gdf.sort_values(key).reset_index(drop=True)
    b = tiled.gdf.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b)
    for col in ("ref_col", "ref_row", "tgt_col", "tgt_row", "score"):
        np.testing.assert_allclose(a[col], b[col], atol=1e-6, err_msg=col)
    per_tile = b["tile_id"].value_counts()
    assert len(per_tile) >= 6 and per_tile.max() <= 8  # spread over the tiles, none takes the budget


def test_settled_positions_of_a_tiled_run_stay_within_a_twentieth_of_a_pixel(pair):
    # The settling template's CFOG channels have a noise floor set over the view they are computed on, which a
    # tile bounds: the points and scores are the same, the positions move a little (measured here, 37 px tiles
    # and a 48 px template: up to 0.018 px; the default 96 px template on this pair: 1.4e-3 px).
    single, tiled = (run_pipeline(pair.optical, pair.sar, _cfg(**{"tiles.size": t, "match.refine_patch": 48}))
                     for t in (1000, 37))
    key = ["ref_col", "ref_row"]
    a, b = (r.gdf.sort_values(key).reset_index(drop=True) for r in (single, tiled))
    assert len(a) == len(b) > 0 and a["refined"].any()
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-6)
    np.testing.assert_allclose(a[["tgt_col", "tgt_row"]], b[["tgt_col", "tgt_row"]], atol=0.05)


def test_cli_max_points_sets_the_budget_and_refuses_a_negative_one(pair, tmp_path, runner):
    args = ["run", "--optical", str(pair.optical), "--sar", str(pair.sar), "--matcher", "ncc",
            "--set", "match.params={absolute=true}", "--no-plot", "--json"]
    result = runner.invoke(cli, [*args, "-o", str(tmp_path / "a.csv"), "--max-points", "20"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["keypoints"]["budget"] == 20 and summary["keypoints"]["chosen"] == 20
    assert 0 < summary["points_found"] <= 20
    bad = runner.invoke(cli, [*args, "-o", str(tmp_path / "b.csv"), "--max-points", "-1"])
    assert bad.exit_code == 2 and "--max-points" in bad.stderr
    assert not (tmp_path / "b.csv").exists()
