"""The run verdict: its rules on measured values, and what a run, the GeoPackage, --json and the exit code say."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from geomatch import config
from geomatch.cli.main import cli
from geomatch.pipeline.run import run_pipeline
from geomatch.pipeline.verdict import EXIT_NOT_REGISTERED, MIN_KEPT_SURE, judge, spread, warning_line
from tests.factories import make_pair

RNG = np.random.default_rng(0)
EVERYWHERE = RNG.uniform(0, 400, (200, 2))  # matched points over a 400 x 400 overlap


def _model(n_points, n_kept, rmse=0.5):
    return {"n_points": n_points, "n_kept": n_kept, "rmse_px": rmse}


def test_many_consistent_points_everywhere_are_registered():
    v = judge(_model(200, 150), EVERYWHERE[:150], EVERYWHERE, (400, 400), 2.0)
    assert v.status == "registered" and v.reasons == []
    assert v.measures["share_consistent"] == pytest.approx(0.75)


def test_a_small_consistent_cluster_among_scattered_matches_is_not_registered():
    cluster = EVERYWHERE[(EVERYWHERE[:, 0] < 100) & (EVERYWHERE[:, 1] < 100)][:11]
    v = judge(_model(400, len(cluster), rmse=1.1), cluster, EVERYWHERE, (400, 400), 2.0)
    assert v.status == "uncertain"
    text = " ".join(v.reasons)
    assert "consistent tie points" in text and "% of the matches" in text and "cover" in text
    assert "residual" not in text  # 1.1 px against a 2 px RANSAC threshold is a model, not chance


def test_each_rule_alone_makes_it_uncertain():
    ok = dict(kept_xy=EVERYWHERE[:150], found_xy=EVERYWHERE, size=(400, 400), ransac_threshold_px=2.0)
    assert judge(_model(200, 150, rmse=1.9), **ok).status == "uncertain"  # residual near the threshold
    assert judge(_model(6000, 150), **ok).status == "uncertain"  # 2.5 % consistent
    few = EVERYWHERE[: MIN_KEPT_SURE - 1]
    assert judge(_model(len(few), len(few)), few, few, (400, 400), 2.0).status == "uncertain"
    edge = judge(_model(200, 150), coarse_details={"edge": ["shift"], "max_shift_searched_px": 96.0}, **ok)
    assert edge.status == "uncertain" and "--max-shift 192" in edge.reasons[0]


def test_no_model_is_failed():
    v = judge({"n_points": 40, "n_kept": 0, "rmse_px": None, "reason": "RANSAC found no consensus"},
              np.zeros((0, 2)), EVERYWHERE[:40], (400, 400), 2.0)
    assert v.status == "failed" and v.reasons == ["RANSAC found no consensus"]


def test_spread_counts_textured_cells_only():
    left = EVERYWHERE[EVERYWHERE[:, 0] < 200]
    assert spread(left, left, 400, 400) == 1.0  # nothing matched on the right: not held against it
    assert spread(left, EVERYWHERE, 400, 400) == pytest.approx(0.5)


def test_beyond_range_is_a_warning_naming_the_pipeline():
    details = {"beyond_range": {"rotation_deg": 10.0, "scale": 1.0, "peak": 0.4, "in_range_peak": 0.2}}
    v = judge(_model(200, 150), EVERYWHERE[:150], EVERYWHERE, (400, 400), 2.0, details)
    assert v.status == "registered" and "visnir" in v.warnings[0]
    assert "visnir" in warning_line(v.as_dict()) and warning_line(judge(
        _model(200, 150), EVERYWHERE[:150], EVERYWHERE, (400, 400), 2.0).as_dict()) is None


def _cfg(**overrides):
    base = {"match.plugin": "ncc", "match.params": {"absolute": True}, "tiles.size": 1000, "write.plot": False}
    return config.load("default", {**base, **overrides})


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("pair"), shift=(2.3, -1.4), size=(180, 200), seed=3)


@pytest.fixture(scope="module")
def unrelated(tmp_path_factory):
    """Optical of one scene, SAR of another on the same grid: nothing can register."""
    a = make_pair(tmp_path_factory.mktemp("a"), size=(180, 200), seed=3)
    b = make_pair(tmp_path_factory.mktemp("b"), size=(180, 200), seed=8)
    return a.optical, b.sar


def test_run_summary_and_geopackage_carry_the_verdict(pair, tmp_path):
    out = tmp_path / "tp.gpkg"
    result = run_pipeline(pair.optical, pair.sar, _cfg(), out)
    assert result.summary["verdict"]["status"] == "registered", result.summary["verdict"]
    with sqlite3.connect(out) as db:
        stored = json.loads(db.execute("SELECT summary_json FROM runs").fetchone()[0])
    assert stored["verdict"]["status"] == "registered"
    assert set(stored["verdict"]["measures"]) >= {"share_consistent", "spread", "rmse_px", "coarse"}


def test_cli_exit_0_when_registered_and_3_with_one_warning_line_when_not(pair, unrelated, tmp_path, runner):
    args = ["--matcher", "ncc", "--set", "match.params={absolute=true}", "--no-plot", "--json"]
    good = runner.invoke(cli, ["run", "--optical", str(pair.optical), "--sar", str(pair.sar), "-o",
                               str(tmp_path / "good.gpkg"), *args])
    assert good.exit_code == 0, good.output
    assert json.loads(good.stdout)["verdict"]["status"] == "registered"
    bad = runner.invoke(cli, ["run", "--optical", str(unrelated[0]), "--sar", str(unrelated[1]), "-o",
                              str(tmp_path / "bad.gpkg"), *args])
    assert bad.exit_code == EXIT_NOT_REGISTERED == 3, bad.output
    verdict = json.loads(bad.stdout)["verdict"]
    assert verdict["status"] in ("uncertain", "failed") and verdict["reasons"]
    lines = [ln for ln in bad.stderr.splitlines() if "verdict:" in ln]
    assert len(lines) == 1 and verdict["status"] in lines[0]
    assert (tmp_path / "bad.gpkg").exists()  # the points are written all the same, for inspection
