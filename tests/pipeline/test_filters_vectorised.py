"""The vectorised neighbour-consistency test gives exactly the flags of the plain per-point loop it replaced."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from geomatch.pipeline.filters import MIN_NEIGHBOURS, _local_flags


def _reference(ref: np.ndarray, shift: np.ndarray, radius: float, max_dev: float) -> np.ndarray:
    """The straightforward definition: each point against the median shift of its other neighbours."""
    flags = np.zeros(len(ref), bool)
    if len(ref) <= MIN_NEIGHBOURS or radius <= 0:
        return flags
    for i, nb in enumerate(cKDTree(ref).query_ball_point(ref, r=radius)):
        nb = [j for j in nb if j != i]
        if len(nb) >= MIN_NEIGHBOURS:
            flags[i] = np.hypot(*(shift[i] - np.median(shift[nb], axis=0))) > max_dev
    return flags


@pytest.mark.parametrize("seed, n, radius", [(0, 400, 60.0), (1, 50, 150.0), (2, 1500, 25.0), (3, 8, 400.0),
                                             (4, 2000, 15.0)])
def test_flags_equal_the_per_point_loop_on_random_points(seed, n, radius):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 1000, (n, 2))
    shift = rng.normal(0, 1.5, (n, 2))
    shift[rng.choice(n, n // 10)] += rng.normal(0, 8, (n // 10, 2))  # some clear deviations
    got = _local_flags(ref, shift, radius, 3.0)
    want = _reference(ref, shift, radius, 3.0)
    assert want.any() and not want.all()  # the case decides something
    np.testing.assert_array_equal(got, want)


def test_ties_on_the_radius_duplicates_and_even_counts_agree():
    # An integer grid spaced 10 apart with radius 20: neighbours lie exactly on the radius, counts are even and
    # odd, two points coincide, and shifts are quantised so medians fall on exact ties.
    g = np.stack(np.meshgrid(np.arange(0, 100, 10.0), np.arange(0, 80, 10.0)), -1).reshape(-1, 2)
    ref = np.vstack([g, g[:3]])
    rng = np.random.default_rng(7)
    shift = rng.integers(-4, 5, (len(ref), 2)).astype(float) / 2
    for max_dev in (0.5, 1.0, 2.5):
        np.testing.assert_array_equal(_local_flags(ref, shift, 20.0, max_dev), _reference(ref, shift, 20.0, max_dev))
    assert _reference(ref, shift, 20.0, 1.0).any()


def test_isolated_points_and_small_sets_are_never_flagged():
    ref = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0], [1000.0, 1000.0], [500.0, 500.0]])
    shift = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [9.0, 9.0], [-30.0, 0.0]])
    assert not _local_flags(ref, shift, 100.0, 1.0).any()  # no point has 3 neighbours
    assert not _local_flags(ref[:3], shift[:3], 5000.0, 1.0).any()  # too few points for the test at all
