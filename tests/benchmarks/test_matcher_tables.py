"""benchmarks/matcher_tables.py's pure parts: the synthetic warp and its truth, the pair choice, the verdict."""

import json

import matcher_tables as mt  # benchmarks/ is on the tests' pythonpath (setup.cfg)
import numpy as np
import pytest
from scipy import ndimage as ndi

from geomatch.errors import InputError


def _smooth_image(shape, seed=0):
    img = ndi.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 4.0)
    return ((img - img.min()) / np.ptp(img) * 255).astype(np.float32)


def test_warped_sar_shows_each_optical_pixel_at_its_truth():
    src, size, offset, shift = _smooth_image((330, 340)), 256, (30, 40), (1.3, -0.7)
    warp = mt.make_warp(size, 2.0, seed=7)
    out = mt.warp_sar(src, offset, shift, warp, size)
    g = np.arange(40.5, 216.0, 7.0)  # optical crop pixel centres, away from the edges
    px, py = (a.ravel() for a in np.meshgrid(g, g))

    def sample(img, x, y):  # pixel-centre coordinates -> array indices
        return ndi.map_coordinates(img, [y - 0.5, x - 0.5], order=3)

    seen = sample(src, px + offset[1] + shift[0], py + offset[0] + shift[1])
    tx, ty = warp.forward(px, py)
    ax, ay = mt._apply(warp.affine, px, py)  # the affine alone: off by the field's 0.5-2 px
    good, wrong = np.abs(sample(out, tx, ty) - seen), np.abs(sample(out, ax, ay) - seen)
    assert good.mean() < 0.1 * wrong.mean() and good.max() < 2.0


def test_field_is_smooth_bounded_and_inverted_exactly():
    warp = mt.make_warp(256, 2.0, seed=3)
    g = np.arange(0.5, 256, 4.0)
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    fx, fy = warp.field(x, y)
    assert np.hypot(fx, fy).max() == pytest.approx(2.0, rel=1e-6)
    assert np.abs(np.diff(fx.reshape(len(g), -1), axis=1)).max() / 4.0 < 0.1  # px per px: low frequency
    ix, iy = warp.inverse(*warp.forward(x, y))
    assert np.abs(ix - x).max() < 1e-9 and np.abs(iy - y).max() < 1e-9
    assert not np.allclose(warp.field(x, y), mt.make_warp(256, 2.0, seed=4).field(x, y))  # seed matters
    flat = mt.make_warp(448, 0.0, seed=3)  # volkov: cascade.py's affine alone
    assert np.allclose(np.stack(flat.forward(x, y)), np.stack(mt._apply(flat.affine, x, y)))


def _scene(sar_shift_rows_cols, size=320, split_at=None, other=(1, -4)):
    """A scene whose SAR content is moved by ``ndi.shift`` (rows, cols), the columns from ``split_at`` by ``other``."""
    from types import SimpleNamespace

    optical = _smooth_image((size, size), seed=5) / 255
    sar = ndi.shift(optical, sar_shift_rows_cols, order=1, mode="nearest")
    if split_at is not None:
        sar[:, split_at:] = ndi.shift(optical, other, order=1, mode="nearest")[:, split_at:]
    return SimpleNamespace(optical=optical, sar=sar.astype(np.float32), valid=np.ones(optical.shape, bool))


def test_a_crop_is_judged_by_its_own_shift_not_its_scenes():
    scene_rec = {"measured_shift_px": [9.0, 9.0], "status": "measured"}
    # Left part of the scene moved (3, -2) (dx, dy), right part (-4, 1): a crop in the left part has its own shift.
    scene = _scene((-2, 3), split_at=200)
    shift, rec = mt.crop_shift("s", scene, (40, 10), 176, scene_rec)
    np.testing.assert_allclose(shift, [3, -2], atol=0.3)
    assert rec["crop_shift_px"] == [round(float(v), 2) for v in shift] and rec["status"] == "measured"
    with pytest.raises(InputError, match="no single residual shift"):  # a crop astride both parts
        mt.crop_shift("s", scene, (40, 100), 176, scene_rec)
    # A crop that is its whole scene keeps the scene's own (trusted) measurement.
    whole = _scene((-2, 3), size=176)
    shift, rec = mt.crop_shift("s", whole, (0, 0), 176, scene_rec)
    assert list(shift) == [9.0, 9.0] and rec is scene_rec


def _cell(kept, median, match_s=1.0):
    return {"kept": kept, "median_px": median, "match_s": match_s}


def test_verdict_needs_more_points_and_lower_median_than_both_classical_rows_within_3x_time():
    base = {"ncc": _cell(50, 1.0, 2.0), "cfog": _cell(40, 0.9, 2.0)}
    assert mt.verdict({**base, "rrlnet": _cell(60, 0.8, 5.0)}, "rrlnet") == {
        "lost_to": [], "time_ratio": 2.5, "passes": True}
    assert mt.verdict({**base, "rrlnet": _cell(60, 0.8, 7.0)}, "rrlnet")["passes"] is False  # 3.5x NCC
    assert mt.verdict({**base, "rrlnet": _cell(45, 0.8)}, "rrlnet")["lost_to"] == ["ncc"]  # fewer points than ncc
    assert mt.verdict({**base, "rrlnet": _cell(60, 0.95)}, "rrlnet")["lost_to"] == ["cfog"]  # worse median
    assert mt.verdict({**base, "rrlnet": _cell(50, 0.5)}, "rrlnet")["lost_to"] == ["ncc"]  # a tie is no win
    assert mt.verdict({**base, "rrlnet": _cell(60, 0.9)}, "rrlnet")["lost_to"] == ["cfog"]  # nor on the median
    assert mt.verdict({**base, "rrlnet": _cell(0, None)}, "rrlnet")["lost_to"] == ["ncc", "cfog"]
    assert mt.verdict({"ncc": _cell(0, None), "cfog": _cell(0, None), "x": _cell(3, 2.0)}, "x")["passes"]
    assert mt.verdict({"ncc": base["ncc"], "rrlnet": _cell(60, 0.8)}, "rrlnet") is None  # cfog not run yet


def test_3mos_choice_alternates_sensors_and_landscapes(tmp_path):
    ids = [f"3mos/{s}_{k}" for s in ("SEN_mountain", "SEN_frozen", "Redarsat_rural", "Redarsat_mountain")
           for k in ("00", "01", "02")]
    picked = mt.pick_3mos(ids[::-1])
    assert picked == ["3mos/Redarsat_mountain_00", "3mos/SEN_frozen_00", "3mos/Redarsat_rural_00",
                      "3mos/SEN_mountain_00", "3mos/Redarsat_mountain_01", "3mos/SEN_frozen_01"]
    with pytest.raises(InputError, match="preset.scenes"):
        mt.held_out(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"preset": {"scenes": {"val": ["a"], "test": ["b"]}}}))
    assert mt.held_out(tmp_path / "manifest.json") == {"val": ["a"], "test": ["b"]}


def test_row_option_parses_overrides():
    assert mt.parse_row("new=match.weights=runs/x/best.pt,match.top_k=3") == (
        "new", {"match.weights": "runs/x/best.pt", "match.top_k": 3})
    with pytest.raises(InputError, match="NAME="):
        mt.parse_row("new")


def test_a_pair_without_exact_truth_is_reported_not_scored(monkeypatch, tmp_path):
    def no_truth(pair, tmp):
        raise InputError(f"{pair['id']}: the 448 px crop has no single residual shift; no exact truth")

    monkeypatch.setattr(mt, "build_pair", no_truth)
    monkeypatch.setattr(mt, "OUT", tmp_path / "tables.json")
    pair = {"id": "volkov-s1s2/141", "group": "volkov-s1s2", "recipe": mt.RECIPE}
    out = {"cells": {"volkov-s1s2/141|cascade": {"key": "old", "kept": 9, "median_px": 3.0}}}
    mt.compute(out, [pair], {"ncc": {"match.plugin": "ncc"}, "cfog": {"match.plugin": "cfog"},
                            "cascade": {"match.mode": "cascade"}}, None, None, "cmd")
    assert "no single residual shift" in out["pairs"]["volkov-s1s2/141"]["skipped"]
    assert out["cells"] == {}  # the figures measured against the old truth are gone
    md = mt.render(out)
    assert "### volkov-s1s2/141: not scored" in md and "not scored (no exact truth): volkov-s1s2/141" in md
