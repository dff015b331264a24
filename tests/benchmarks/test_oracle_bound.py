"""benchmarks/oracle_bound.py's pure parts: the best-N median, the per-keypoint union and the rule against both."""

import numpy as np
import oracle_bound as ob  # benchmarks/ is on the tests' pythonpath (setup.cfg)


def _row(errs, kept=None, ref=None):
    errs = np.asarray(errs, float)
    ref = np.column_stack([np.arange(len(errs)), np.zeros(len(errs))]) if ref is None else np.asarray(ref, float)
    return {"ref": ref, "kept": np.ones(len(errs), bool) if kept is None else np.asarray(kept, bool), "err": errs,
            "d": np.column_stack([errs, np.zeros(len(errs))])}


def test_best_n_median_takes_the_smallest_finite_errors_and_needs_enough():
    err = np.array([5.0, np.nan, 0.2, 3.0, 0.4, 0.1])
    assert ob.best_n_median(err, 3) == 0.2  # 0.1, 0.2, 0.4: NaN (off the scored ground) never counts
    assert ob.best_n_median(err, 5) == 0.4
    assert ob.best_n_median(err, 6) is None  # five finite errors only


def test_union_keeps_each_keypoints_best_position_across_rows():
    a = _row([1.0, 0.3, 2.0])
    b = _row([0.5, 0.9, np.nan], ref=[[0.04, 0.0], [1.0, 0.0], [7.0, 0.0]])  # 0.04: the same keypoint as a's 0
    assert sorted(ob.union_errors({"a": a, "b": b}).tolist()) == [0.3, 0.5, 2.0]


def test_bound_needs_more_points_than_either_classical_row_under_the_lower_median():
    ncc = _row([0.5, 0.6, 0.7, 9.0], kept=[1, 1, 1, 0])  # kept 3, median 0.6
    cfog = _row([0.8, 0.9, 1.0, 1.1])  # kept 4, median 0.95
    good = _row([0.1, 0.2, 0.3, 0.4, 0.5, 3.0, 4.0], kept=[1, 1, 1, 1, 1, 1, 1])
    rec = ob.bound({"ncc": ncc, "cfog": cfog, "cascade": good})
    assert rec["n_needed"] == 5 and rec["median_to_beat"] == 0.6
    assert rec["filter_median_px"] == 0.3 and rec["filter_can_pass"]
    few = _row([0.1, 0.2, 0.3, 0.4], kept=[1, 1, 1, 1])  # accurate but only 4 found: cannot keep 5
    rec = ob.bound({"ncc": ncc, "cfog": cfog, "cascade": few})
    assert rec["filter_median_px"] is None and not rec["filter_can_pass"]
    coarse = _row([0.7, 0.8, 0.9, 1.0, 1.2, 1.5])  # enough points, none set of 5 under 0.6
    rec = ob.bound({"ncc": ncc, "cfog": cfog, "cascade": coarse})
    assert rec["filter_median_px"] == 0.9 and not rec["filter_can_pass"]
    # the union may take a better position another row found at the same keypoint
    assert rec["union_median_px"] == 0.7 and not rec["union_can_pass"]


def test_found_points_recovers_signed_errors_from_a_magnitude_only_truth(monkeypatch):
    from types import SimpleNamespace

    import pandas as pd

    truth = np.array([[10.0, 20.0], [30.5, 40.25], [5.0, 5.0]])  # target each optical point should reach
    found = truth + np.array([[0.7, -0.2], [-1.5, 0.4], [0.0, 0.0]])
    gdf = pd.DataFrame({"ref_col": [1.0, 2.0, 3.0], "ref_row": [0.0] * 3, "tgt_col": found[:, 0],
                        "tgt_row": found[:, 1], "outlier": [0, 1, 0]})
    monkeypatch.setattr(ob.run_mod, "run_pipeline", lambda *a, **k: SimpleNamespace(gdf=gdf))

    def errors(kept):  # like matcher_tables' closures: magnitudes, and none for the point off the scored ground
        on = kept["ref_col"].to_numpy() != 3.0
        idx = (kept["ref_col"].to_numpy()[on] - 1).astype(int)
        return np.hypot(kept["tgt_col"].to_numpy()[on] - truth[idx, 0], kept["tgt_row"].to_numpy()[on] - truth[idx, 1])

    p = ob.found_points("o.tif", "s.tif", {}, errors)
    np.testing.assert_allclose(p["d"][:2], [[0.7, -0.2], [-1.5, 0.4]], atol=1e-9)
    assert np.isnan(p["d"][2]).all() and np.isnan(p["err"][2])
    assert p["kept"].tolist() == [True, False, True]


def test_shared_error_is_high_when_both_rows_carry_the_same_truth_offset():
    rng = np.random.default_rng(0)
    ref = np.column_stack([np.arange(200.0), np.zeros(200)])
    common = rng.normal(0, 0.8, (200, 2))  # the truth's own error at each keypoint

    def row(d):
        return {"ref": ref, "kept": np.ones(200, bool), "d": d, "err": np.hypot(*d.T)}

    own = [rng.normal(0, 0.3, (200, 2)) for _ in range(2)]
    assert ob.shared_error(row(common + own[0]), row(common + own[1])) > 0.7
    assert abs(ob.shared_error(row(own[0]), row(own[1]))) < 0.2
    assert ob.shared_error(row(own[0][:5]) | {"ref": ref[:5], "kept": np.ones(5, bool)}, row(own[1])) is None
