"""The ground sampling distance weights were trained at: package -> checkpoint + index -> scorer."""

from __future__ import annotations

import json

import pytest
import torch

from geomatch.cli.main import cli
from geomatch.errors import InputError
from geomatch.models.checkpoint import load_checkpoint, save_checkpoint
from geomatch.models.factory import build_matcher
from geomatch.models.package import package_weights
from geomatch.models.runtime import build_scorer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(build_matcher("rrlnet", width=0.125), path, metadata={"training": {"dataset": "unit-test"}})
    return path


def _package(checkpoint, out, **kw):
    return package_weights(checkpoint, "demo", out, description="d", pair_types=["optical-sar"], card="# c\n", **kw)


def test_gsd_round_trips_through_package_into_the_scorer(checkpoint, tmp_path):
    entry = _package(checkpoint, tmp_path, gsd_m=3.0, gsd_range_m=(2.5, 3.5))
    assert json.loads((tmp_path / "index.json").read_text())["demo"] == entry
    assert entry["gsd_m"] == 3.0 and entry["gsd_range_m"] == [2.5, 3.5]
    meta = load_checkpoint(tmp_path / entry["file"])[1]
    assert meta["gsd_m"] == 3.0 and meta["gsd_range_m"] == [2.5, 3.5]
    # A checkpoint path (no index): the scorer reads its metadata.
    scorer = build_scorer("rrlnet", str(tmp_path / entry["file"]), device="cpu")
    assert scorer.gsd_m == 3.0 and scorer.gsd_range_m == (2.5, 3.5)
    # Repackaged without --gsd, the weights keep the GSD they record.
    again = _package(tmp_path / entry["file"], tmp_path / "again")
    assert again["gsd_m"] == 3.0 and again["gsd_range_m"] == [2.5, 3.5]


def test_weights_without_a_gsd_record_none(checkpoint, tmp_path):
    entry = _package(checkpoint, tmp_path)
    assert "gsd_m" not in entry and "gsd_m" not in load_checkpoint(tmp_path / entry["file"])[1]
    assert build_scorer("rrlnet", str(tmp_path / entry["file"]), device="cpu").gsd_m is None
    alone = _package(checkpoint, tmp_path / "alone", gsd_m=10.0)
    assert alone["gsd_range_m"] == [10.0, 10.0]


@pytest.mark.parametrize("gsd, rng, message", [
    (None, (1.0, 2.0), "--gsd-range needs --gsd"),
    (3.0, (3.5, 4.0), "LO <= GSD <= HI"),
    (-1.0, None, "positive metres"),
])
def test_bad_gsd_is_refused_before_anything_is_written(checkpoint, tmp_path, gsd, rng, message):
    with pytest.raises(InputError, match=message):
        _package(checkpoint, tmp_path, gsd_m=gsd, gsd_range_m=rng)
    assert not (tmp_path / "index.json").exists()


def test_models_package_cli_takes_gsd_options(checkpoint, tmp_path, runner):
    card = tmp_path / "card.md"
    card.write_text("# c\n")
    out = tmp_path / "w"
    args = ["models", "package", str(checkpoint), "--tag", "t", "--card", str(card), "--description", "d",
            "--out", str(out), "--gsd", "10", "--gsd-range", "9.5", "10.5", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "index.json").read_text())["t"]["gsd_range_m"] == [9.5, 10.5]
    bad = runner.invoke(cli, args[:-6] + ["--gsd-range", "1", "2"])
    assert bad.exit_code == 2 and "--gsd-range needs --gsd" in bad.output


def test_thresholds_recorded_with_the_weights_win_over_the_class(checkpoint, tmp_path):
    """Calibrated weights put scores on another scale: their own floor/ceiling is what "auto" resolves to."""
    from geomatch import config
    from geomatch.pipeline import thresholds

    entry = _package(checkpoint, tmp_path, thresholds={"min_score": 0.3, "max_ratio": 0.9})
    assert entry["thresholds"] == {"min_score": 0.3, "max_ratio": 0.9}
    assert load_checkpoint(tmp_path / entry["file"])[1]["thresholds"] == entry["thresholds"]
    scorer = build_scorer("rrlnet", str(tmp_path / entry["file"]), device="cpu")
    assert scorer.thresholds == {"min_score": 0.3, "max_ratio": 0.9}
    match = config.MatchConfig(plugin="rrlnet")
    assert thresholds.resolve_min_score("auto", match, scorer.thresholds) == 0.3
    assert thresholds.resolve_max_ratio("auto", match, scorer.thresholds) == 0.9
    assert thresholds.resolve_min_score(0.7, match, scorer.thresholds) == 0.7  # a number given wins
    assert thresholds.resolve_min_score("auto", match, {}) == 0.6  # none recorded: the class's
    cascade = config.MatchConfig(plugin="rrlnet", mode="cascade", proposer="cfog", cascade_weight=0.5)
    cfog = thresholds.resolve_min_score("auto", config.MatchConfig(plugin="cfog"))
    assert thresholds.resolve_min_score("auto", cascade, scorer.thresholds) == pytest.approx(0.5 * 0.3 + 0.5 * cfog)
    # Repackaged without them, the weights keep theirs; bad values are refused in one line.
    assert _package(tmp_path / entry["file"], tmp_path / "again")["thresholds"] == entry["thresholds"]
    with pytest.raises(InputError, match="--min-score 1.5"):
        _package(checkpoint, tmp_path / "bad", thresholds={"min_score": 1.5})


def test_a_run_filters_with_the_weights_thresholds(checkpoint, tmp_path):
    from geomatch import config
    from geomatch.pipeline.run import run_pipeline
    from tests.factories import make_pair

    entry = _package(checkpoint, tmp_path, thresholds={"min_score": 0.01, "max_ratio": 0.99,
                                                       "cascade": {"min_score": 0.02, "max_ratio": 0.98}})
    make_pair(tmp_path, shift=(1.0, 0.5), size=(96, 96), seed=3)
    for mode, floor, ceiling in [("search", 0.01, 0.99), ("cascade", 0.02, 0.98)]:
        cfg = config.load("default", {"match.weights": str(tmp_path / entry["file"]), "write.plot": False,
                                      "detect.max_points": 20, "match.mode": mode})
        res = run_pipeline(str(tmp_path / "optical.tif"), str(tmp_path / "sar.tif"), cfg,
                           output=str(tmp_path / f"tp-{mode}.gpkg"))
        assert (res.summary["filter_min_score"], res.summary["filter_max_ratio"]) == (floor, ceiling), mode
