"""What ``filter.min_score = "auto"`` and ``filter.max_ratio = "auto"`` mean for a run, and the match stage as
the run performs it. Resolved once the scorer exists (they ask its weights' record and the matcher classes,
which import torch), where a config is loaded and checked before any heavy import (:mod:`geomatch.config`).

"auto" is the matcher's own floor or ceiling: the one its weights record (``Scorer.thresholds``: a score scale
belongs to the weights, calibrated or not), else its class's ``min_score`` / ``max_ratio``; in cascade mode the
weights' ``cascade`` record (chosen for the combined score), else ``w * matcher's + (1 - w) * proposer's``, w =
cascade_weight, as the scores are mixed. A number given wins.
"""

from __future__ import annotations

from dataclasses import replace

from geomatch import registry
from geomatch.config import MatchConfig, check_auto

FLOOR, CEILING = "min_score", "max_ratio"


def resolve_min_score(value: float | str, match: MatchConfig, weights: dict | None = None) -> float:
    """``filter.min_score`` as a number (module docstring)."""
    return _resolve(FLOOR, value, match, weights)


def resolve_max_ratio(value: float | str, match: MatchConfig, weights: dict | None = None) -> float:
    """``filter.max_ratio`` as a number (module docstring; in cascade mode the ratio is one of mixed scores)."""
    return _resolve(CEILING, value, match, weights)


def effective_match(match: MatchConfig) -> MatchConfig:
    """``match`` as the run performs it: ``mode = "cascade"`` with a classical matcher (``--matcher ncc`` on the
    default pipeline) searches on its own, because the cascade's network verifies classical proposals and a
    classical matcher has nothing to add to them."""
    if match.mode == "cascade":
        from geomatch.models.factory import needs_weights

        if not needs_weights(match.plugin):
            return replace(match, mode="search")
    return match


def _resolve(attr: str, value: float | str, match: MatchConfig, weights: dict | None) -> float:
    if not isinstance(value, str):
        return value
    check_auto("filter", attr, value, "the matcher's own floor" if attr == FLOOR else "the matcher's own ceiling")
    match = effective_match(match)
    own = weights or {}
    if match.mode == "cascade" and own.get("cascade", {}).get(attr) is not None:
        return float(own["cascade"][attr])
    mine = own.get(attr)
    mine = _class_value(match.plugin, attr) if mine is None else float(mine)
    if match.mode == "cascade":
        w = match.cascade_weight
        mine = w * mine + (1 - w) * _class_value(match.proposer, attr)
    return round(mine, 6)


def _class_value(name: str, attr: str) -> float:
    return float(getattr(registry.load("matchers", name), attr))  # a Matcher subclass: the registry checks it
