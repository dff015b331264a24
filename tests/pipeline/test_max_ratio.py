"""filter.max_ratio = "auto": each matcher's own ambiguity ceiling reaches the filter; a number given still wins."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from geomatch import config, registry
from geomatch.config import FilterConfig
from geomatch.errors import ConfigError
from geomatch.models.base import Matcher
from geomatch.pipeline import thresholds
from geomatch.pipeline.filters import flag_outliers

CFOG = registry.load("matchers", "cfog")
NCC = registry.load("matchers", "ncc")


def _ceiling(overrides: dict) -> float:
    cfg = config.load("default", overrides)
    return thresholds.resolve_max_ratio(cfg.filter.max_ratio, cfg.match)


def test_cfog_has_a_ceiling_of_its_own():
    # Otherwise "auto" would change nothing for cfog and the tests below would prove nothing.
    assert CFOG.max_ratio != Matcher.max_ratio


def test_auto_resolves_per_matcher_class():
    assert config.load("default", {"match.plugin": "cfog"}).filter.max_ratio == "auto"  # kept until a run
    assert _ceiling({"match.plugin": "cfog"}) == pytest.approx(CFOG.max_ratio)
    assert _ceiling({"match.plugin": "ncc", "filter.max_ratio": "auto"}) == pytest.approx(NCC.max_ratio)
    assert _ceiling({"match.plugin": "rrlnet", "match.mode": "search"}) == pytest.approx(Matcher.max_ratio)


def test_a_classical_matcher_in_cascade_mode_searches_alone():
    """The default pipeline is a cascade; `--matcher ncc` on it is NCC alone, with NCC's own thresholds."""
    cascade = config.load("default", {"match.plugin": "ncc"}).match
    assert cascade.mode == "cascade"
    assert thresholds.effective_match(cascade).mode == "search"
    assert thresholds.effective_match(config.load("default").match).mode == "cascade"  # a network stays
    assert _ceiling({"match.plugin": "ncc", "match.mode": "cascade"}) == pytest.approx(NCC.max_ratio)


@pytest.mark.parametrize("attr", ["min_score", "max_ratio"])
def test_cascade_mixes_the_two_thresholds_as_it_mixes_the_scores(attr):
    over = {"match.mode": "cascade", "match.proposer": "cfog", "match.cascade_weight": 0.25}
    cfg = config.load("default", over)
    resolve = {"min_score": thresholds.resolve_min_score, "max_ratio": thresholds.resolve_max_ratio}[attr]
    net = getattr(registry.load("matchers", cfg.match.plugin), attr)
    assert resolve(getattr(cfg.filter, attr), cfg.match) == pytest.approx(0.25 * net + 0.75 * getattr(CFOG, attr))


def test_a_number_given_wins():
    assert _ceiling({"match.plugin": "cfog", "filter.max_ratio": 0.9}) == 0.9
    assert _ceiling({"match.plugin": "cfog", "filter.max_ratio": 1}) == 1.0


def _points(ratio: float, n: int = 40) -> pd.DataFrame:
    """n consistent, strong matches (a pure shift), all with the same runner-up ratio."""
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 500, (n, 2))
    tgt = ref + [3.0, -2.0]
    return pd.DataFrame({"ref_x": ref[:, 0], "ref_y": ref[:, 1], "tgt_x": tgt[:, 0], "tgt_y": tgt[:, 1],
                         "score": np.full(n, 0.9), "ratio": np.full(n, ratio)})


def test_the_filter_applies_the_resolved_ceiling():
    low, high = sorted((CFOG.max_ratio, Matcher.max_ratio))
    df = _points((low + high) / 2)  # ambiguous for the lower ceiling only
    cfg = config.load("default", {"match.plugin": "cfog"})
    auto = dataclasses.replace(cfg.filter, min_score=0.5,
                               max_ratio=thresholds.resolve_max_ratio(cfg.filter.max_ratio, cfg.match))
    out, _ = flag_outliers(df, auto)
    assert bool(out["outlier_score"].all()) == (CFOG.max_ratio == low)
    out, _ = flag_outliers(df, dataclasses.replace(auto, max_ratio=Matcher.max_ratio))
    assert bool(out["outlier_score"].all()) == (Matcher.max_ratio == low)
    # "auto" in a FilterConfig made by hand (no matcher known) is the Matcher contract's default.
    out, _ = flag_outliers(_points(Matcher.max_ratio + 0.01), FilterConfig(min_score=0.5))
    assert FilterConfig().max_ratio == "auto" and out["outlier_score"].all()
    out, _ = flag_outliers(_points(Matcher.max_ratio - 0.01), FilterConfig(min_score=0.5))
    assert not out["outlier_score"].any()


@pytest.mark.parametrize("value, message", [
    ("high", r'\[filter\] max_ratio = .high. is not valid.*"auto"'),
    (0, r"\[filter\] max_ratio = 0(\.0)? is out of range; it must be in \(0, 1\]"),
    (1.5, r"\[filter\] max_ratio = 1.5 is out of range; it must be in \(0, 1\]"),
])
def test_max_ratio_is_auto_or_a_number_in_0_1(value, message):
    with pytest.raises(ConfigError, match=message):
        config.load("default", {"filter.max_ratio": value})


def test_a_run_filters_with_the_resolved_ceiling(tmp_path):
    from factories import make_pair

    from geomatch.pipeline.run import run_pipeline

    pair = make_pair(tmp_path, shift=(2.3, -1.4), size=(200, 200), seed=3)
    cfg = config.load("default", {"match.plugin": "ncc", "match.params": {"absolute": True}, "write.plot": False})
    res = run_pipeline(pair.optical, pair.sar, cfg)
    kept = res.gdf[~res.gdf["outlier"].astype(bool)]
    assert res.summary["filter_max_ratio"] == pytest.approx(NCC.max_ratio)
    assert len(kept) and (kept["ratio"] <= NCC.max_ratio).all()
