"""filter.min_score = "auto": each matcher's own score floor reaches the filter; a number given still wins."""

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


def _points(score: float, n: int = 40) -> pd.DataFrame:
    """n consistent matches (a pure shift), all with the same score and an unambiguous peak."""
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 500, (n, 2))
    tgt = ref + [3.0, -2.0]
    return pd.DataFrame({"ref_x": ref[:, 0], "ref_y": ref[:, 1], "tgt_x": tgt[:, 0], "tgt_y": tgt[:, 1],
                         "score": np.full(n, score), "ratio": np.full(n, 0.5)})


def test_cfog_has_a_floor_of_its_own():
    # Otherwise "auto" would change nothing for cfog and the tests below would prove nothing.
    assert CFOG.min_score < Matcher.min_score


def _floor(overrides: dict) -> float:
    cfg = config.load("default", overrides)
    return thresholds.resolve_min_score(cfg.filter.min_score, cfg.match)


def _resolved_filter(overrides: dict) -> FilterConfig:
    cfg = config.load("default", overrides)
    return dataclasses.replace(cfg.filter, min_score=thresholds.resolve_min_score(cfg.filter.min_score, cfg.match))


def test_auto_resolves_to_the_matchers_floor():
    assert _floor({"match.plugin": "cfog"}) == pytest.approx(CFOG.min_score)
    assert _floor({"match.plugin": "ncc"}) == pytest.approx(registry.load("matchers", "ncc").min_score)
    # Unset in the pipeline file and "auto" given explicitly are the same rule.
    assert _floor({"match.plugin": "cfog", "filter.min_score": "auto"}) == pytest.approx(CFOG.min_score)


def test_loading_a_config_keeps_auto_so_it_imports_no_matcher():
    # Resolving asks the matcher class (torch); configs are loaded before any heavy import.
    assert config.load("default", {"match.plugin": "cfog"}).filter.min_score == "auto"


def test_a_run_filters_with_the_resolved_floor(tmp_path):
    from factories import make_pair

    from geomatch.pipeline.run import run_pipeline

    pair = make_pair(tmp_path, shift=(2.3, -1.4), size=(200, 200), seed=3)
    cfg = config.load("default", {"match.plugin": "ncc", "match.params": {"absolute": True}, "write.plot": False,
                                  "filter.min_score": "auto"})
    res = run_pipeline(pair.optical, pair.sar, cfg)
    kept = res.gdf[~res.gdf["outlier"].astype(bool)]
    ncc_floor = registry.load("matchers", "ncc").min_score
    assert res.summary["filter_min_score"] == pytest.approx(ncc_floor)
    assert len(kept) and (kept["score"] >= ncc_floor).all()


# The cascade's mix of the two floors: tests/pipeline/test_max_ratio.py, with the ceilings.


def test_an_explicit_floor_wins():
    assert _floor({"match.plugin": "cfog", "filter.min_score": 0.7}) == 0.7


def test_the_filter_keeps_cfog_scores_above_its_floor():
    score = (CFOG.min_score + Matcher.min_score) / 2  # above cfog's floor, below the shared default
    df = _points(score)
    auto = _resolved_filter({"match.plugin": "cfog"})
    out, info = flag_outliers(df, auto)
    assert out["outlier_score"].sum() == 0 and info["n_kept"] == len(df)
    explicit = _resolved_filter({"match.plugin": "cfog", "filter.min_score": Matcher.min_score})
    out, info = flag_outliers(df, explicit)
    assert out["outlier_score"].all() and info["n_kept"] == 0


def test_a_hand_made_auto_config_uses_the_contract_default():
    df = _points(Matcher.min_score - 0.01)
    out, _ = flag_outliers(df, FilterConfig())
    assert FilterConfig().min_score == "auto" and out["outlier_score"].all()
    out, _ = flag_outliers(_points(Matcher.min_score + 0.01), FilterConfig())
    assert out["outlier_score"].sum() == 0


def test_a_word_other_than_auto_is_refused():
    with pytest.raises(ConfigError, match=r'\[filter\] min_score = .high. is not valid.*"auto"'):
        config.load("default", {"filter.min_score": "high"})
