"""The display-image sources (volkov-s1s2 PNG pairs, 3mos tiles, changedet .mat/TIFF pairs with a change mask):
found, read with their residual shift measured and taken out, and split by place with the other scenes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from scipy import ndimage as ndi
from scipy.io import savemat

from geomatch.training import scenes
from geomatch.training.build import BuildConfig
from geomatch.training.presets import build_optical_sar_patches
from geomatch.training.scene_files import find_scenes
from geomatch.training.scenes import align_scene, load_scene

SHIFT = (3, -2)  # (dx, dy) align_scene applies: out[y, x] = sar[y + dy, x + dx]


def ground(size: int, seed: int) -> np.ndarray:
    """A smooth texture in [0, 1], (size + 40)^2 so shifted views can be cut from it."""
    g = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal((size + 40, size + 40)), 3.0)
    return (g - g.min()) / np.ptp(g)


def views(size: int, seed: int, shift=SHIFT) -> tuple[np.ndarray, np.ndarray]:
    """8-bit optical RGB and single-band speckled SAR of one ground; the SAR content sits ``shift`` off."""
    g, (dx, dy) = ground(size, seed), shift
    opt = g[20:20 + size, 20:20 + size]
    sar = g[20 - dy:20 - dy + size, 20 - dx:20 - dx + size] * np.random.default_rng(seed + 50).gamma(8.0, 1 / 8.0,
                                                                                                       (size, size))
    rgb = np.stack([opt * 200 + 20, opt * 180 + 30, opt * 160 + 40], axis=-1)
    return rgb.round().astype(np.uint8), (255 * sar / sar.max()).round().astype(np.uint8)


def table_row(shift) -> tuple[float, float]:
    """The folders' tables give (dx, dy) to apply to the SAR in the skimage sense: align's shift negated."""
    return -shift[0], -shift[1]


def write_volkov(root: Path, size: int = 256) -> None:
    (root / "opt").mkdir(parents=True)
    (root / "sar").mkdir()
    rows, meta = ["pair,pc_dy,pc_dx,ncc_dy,ncc_dx,ncc_peak,ncc_at0,agree_le_1px"], []
    for k, shift in enumerate((SHIFT, (-1, 2))):
        rgb, sar = views(size, k, shift)
        Image.fromarray(rgb).save(root / "opt" / f"00{k}.png")
        Image.fromarray(sar).save(root / "sar" / f"00{k}.png")
        tdx, tdy = table_row(shift)
        rows.append(f"00{k}.png,{tdy},{tdx},{tdy},{tdx},0.2,0.1,1")
        x0 = -13224703.0 + 20000 * k  # 10 m pixels, fragments 20 km apart: separate places
        meta.append({"fragment_filename": f"00{k}.png", "corners_EPSG:3395": [
            [x0, 4048140.0], [x0 + 10 * size, 4048140.0], [x0 + 10 * size, 4048140.0 - 10 * size],
            [x0, 4048140.0 - 10 * size]]})
    (root / "alignment_check.csv").write_text("\n".join(rows) + "\n")
    (root / "metadata.json").write_text(json.dumps(meta))


def write_3mos(root: Path, size: int = 256) -> None:
    root.mkdir(parents=True)
    rows = ["opt_tile,sar_tile,cfog_dy,cfog_dx,cfog_z,cfog_z_at0,pc_dy,pc_dx,verified_cfog_le1.5px_z_ge3.5"]
    for k in range(2):
        rgb, sar = views(size, 10 + k)
        Image.fromarray(rgb).save(root / f"SEN_city_0{k}_opt.png")
        Image.fromarray(np.stack([sar] * 3, axis=-1)).save(root / f"SEN_city_0{k}_sar.png")
    # A tile whose SAR shows other ground: no shift can be established, so it must give no positives.
    rgb, _ = views(size, 20)
    _, other = views(size, 21)
    Image.fromarray(rgb).save(root / "ALOS_desert_00_opt.png")
    Image.fromarray(np.stack([other] * 3, axis=-1)).save(root / "ALOS_desert_00_sar.png")
    rows.append("ALOS_desert_00_opt.png,ALOS_desert_00_sar.png,9.0,-9.0,2.0,1.0,0,0,0")
    (root / "alignment_check.csv").write_text("\n".join(rows) + "\n")


CHANGED = (slice(60, 120), slice(150, 220))  # rows, cols of the changed block in the change-detection scenes


def write_changedet(root: Path, size: int = 256) -> None:
    rgb, sar = views(size, 30)
    rgb[CHANGED] = 255 - rgb[CHANGED]  # the optical date shows something else there
    gt = np.zeros((size, size), np.uint8)
    gt[CHANGED] = 1
    (root / "hcd-gsp").mkdir(parents=True)
    savemat(root / "hcd-gsp" / "#5-Town.mat", {"image_t1": np.stack([sar] * 3, axis=-1), "image_t2": rgb,
                                               "Ref_gt": gt})
    savemat(root / "hcd-gsp" / "#1-Italy.mat", {"image_t1": rgb, "image_t2": rgb, "Ref_gt": gt})  # not SAR
    rgb2, sar2 = views(size, 31)
    (root / "flood").mkdir()
    for name, arr in (("Img9-Bc", rgb2), ("Img9-A", np.stack([sar2] * 3, axis=-1)),
                      ("Img9-C", np.stack([gt * 255] * 3, axis=-1))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # as published: no georeference
            with rasterio.open(root / "flood" / f"{name}.tif", "w", driver="GTiff", width=size, height=size,
                               count=3, dtype="uint8") as ds:
                ds.write(np.moveaxis(arr, -1, 0))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("image-sources")
    write_volkov(root / "volkov-s1s2")
    write_3mos(root / "3mos")
    write_changedet(root / "changedet")
    return root


def test_find_pairs_roles_places_and_table_shifts(folder):
    found = {s.scene_id: s for s in find_scenes(folder)}
    assert sorted(found) == ["3mos/ALOS_desert_00", "3mos/SEN_city_00", "3mos/SEN_city_01",
                             "changedet/flood/Img9", "changedet/hcd-gsp/#5-Town", "volkov-s1s2/000",
                             "volkov-s1s2/001"]  # #1-Italy is not optical/SAR
    v = found["volkov-s1s2/000"]
    assert v.optical[0].parent.name == "opt" and v.sar.parent.name == "sar" and v.must_align
    assert v.reference_shift == SHIFT  # the table's skimage-sense shift, negated
    assert -118.81 < v.bounds[0] < v.bounds[2] < -118.77 and 34.2 < v.bounds[1] < v.bounds[3] < 34.35
    assert {found[f"3mos/SEN_city_0{k}"].place for k in (0, 1)} == {"3mos/SEN_city"}
    assert found["3mos/SEN_city_00"].reference_shift is None  # no table row
    town = found["changedet/hcd-gsp/#5-Town"]
    assert town.mat_keys == ("image_t2", "image_t1") and town.change_key == "Ref_gt"
    assert found["changedet/flood/Img9"].change_mask.name == "Img9-C.tif"
    only = find_scenes(folder, sources=("volkov-s1s2/001", "3mos"))
    assert [s.scene_id for s in only] == ["volkov-s1s2/001", "3mos/ALOS_desert_00", "3mos/SEN_city_00",
                                          "3mos/SEN_city_01"]


def test_png_pair_read_as_displayed_and_its_shift_removed(folder):
    files = next(s for s in find_scenes(folder, sources=("volkov-s1s2/000",)))
    pair = load_scene(files)
    rec = pair.info["alignment"]
    assert pair.info["sar_scale"] == "db"  # 8-bit display values are kept, not taken for linear power
    assert rec["status"] == "measured" and rec["applied_shift_px"] == list(SHIFT) and rec["required"]
    rgb = np.asarray(Image.open(files.optical[0]), np.float64).mean(axis=2)
    sar = np.asarray(Image.open(files.sar), np.float64)
    # What the loader must give: the file's SAR moved by SHIFT (out[y, x] = sar[y + dy, x + dx]).
    fixed = sar[np.clip(np.arange(256) + SHIFT[1], 0, 255)][:, np.clip(np.arange(256) + SHIFT[0], 0, 255)]
    inner = (slice(10, -10), slice(10, -10))
    before = np.corrcoef(rgb[inner].ravel(), sar[inner].ravel())[0, 1]
    after = np.corrcoef(pair.optical[inner].ravel(), pair.sar[inner].ravel())[0, 1]
    assert after > before + 0.1 and np.corrcoef(fixed[inner].ravel(), pair.sar[inner].ravel())[0, 1] > 0.99


def test_change_mask_and_margin_leave_the_valid_area(folder):
    for sid in ("changedet/hcd-gsp/#5-Town", "changedet/flood/Img9"):
        pair = load_scene(next(s for s in find_scenes(folder, sources=(sid,))))
        rows, cols = CHANGED
        m = scenes.CHANGE_MARGIN_PX
        assert not pair.valid[rows.start - m + 1:rows.stop + m - 1, cols.start - m + 1:cols.stop + m - 1].any(), sid
        assert pair.valid[200:240, 20:100].all(), sid
        assert 0.8 < pair.info["change_mask"]["unchanged_fraction"] < 0.95
    # The shift is measured on the unchanged ground and taken out (SAR stays in dB-like display values).
    assert pair.info["alignment"]["applied_shift_px"] == list(SHIFT)


def _fake_estimate(guess_whole, guess_quadrant):
    est = SimpleNamespace(details={"confidence": 1.1}, method="identity (low confidence: stand-in)")
    return lambda optical, *a: ((guess_whole if optical.shape[0] == 256 else guess_quadrant), False, est)


@pytest.mark.parametrize("reference, quadrant, confirm, status, by", [
    (None, None, True, "unconfirmed", None),  # nothing to confirm it: nothing moves
    ((2.6, -2.4), None, False, "unconfirmed", None),  # the s1s2 sources: only a confident estimate moves them
    ((2.6, -2.4), None, True, "confirmed", "reference"),
    ((-3.0, 5.0), None, True, "unconfirmed", None),  # the table disagrees
    (None, [3.4, -2.3], True, "confirmed", "4 of 4 quadrants"),
    (None, [-6.0, 0.0], True, "unconfirmed", None),
])
def test_unconfident_shift_applied_only_when_confirmed(monkeypatch, reference, quadrant, confirm, status, by):
    rgb, sar = views(256, 40)
    optical, sar = rgb.mean(axis=2).astype(np.float32) / 255, sar.astype(np.float32) / 255
    valid = np.ones(optical.shape, bool)
    monkeypatch.setattr(scenes, "_best_shift", _fake_estimate([3.2, -1.9], quadrant))
    out, _, rec = align_scene(optical, valid, sar, valid, reference=reference, confirm=confirm)
    assert (rec["status"], rec["confirmed_by"]) == (status, by)
    assert rec["applied_shift_px"] == ([3, -2] if status == "confirmed" else [0, 0])
    assert (out is sar) == (status != "confirmed")


def test_preset_corrects_splits_by_place_and_leaves_out_the_unaligned(folder, tmp_path):
    m = build_optical_sar_patches(folder, tmp_path / "p", seed=0, per_scene=30, val_fraction=0.25,
                                  test_fraction=0.25, config=BuildConfig(patch_size=32, cell_size=8))
    preset = m["preset"]
    assert list(preset["left_out"]) == ["3mos/ALOS_desert_00"]
    used = sum(preset["scenes"].values(), [])
    assert "3mos/ALOS_desert_00" not in used and len(used) == 6
    places = {k: set(v) for k, v in preset["places"].items()}
    assert all(places.values())
    assert not (places["train"] & places["val"] or places["train"] & places["test"] or places["val"] & places["test"])
    sides = {s for s, ids in preset["scenes"].items() for sid in ids if sid.startswith("3mos/SEN_city")}
    assert len(sides) == 1  # the tiles of one montage stay together
    align = preset["alignment"]
    assert align["volkov-s1s2"]["shifted"] == 2 and align["volkov-s1s2"]["max_shift_px"] == pytest.approx(3.61)
    assert align["3mos"]["left_out"] == 1 and align["changedet"]["scenes"] == 2
    info = preset["scene_info"]["volkov-s1s2/001"]["alignment"]
    assert info["applied_shift_px"] == [-1, 2] and info["reference_shift_px"] == [-1.0, 2.0]
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["preset"]["left_out"] == preset["left_out"]


def test_cli_include_picks_scenes_and_reports_alignment(folder, tmp_path, runner):
    from geomatch.cli.main import cli

    args = ["dataset", "build", "--preset", "optical-sar", "--data-dir", str(folder), "--include", "volkov-s1s2",
            "--include", "changedet/flood", "--out", str(tmp_path / "o"), "--patch-size", "32", "--cell-size", "8",
            "--max-points", "30", "--val-fraction", "0.3", "--test-fraction", "0"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "volkov-s1s2    alignment: 2 scenes, 2 measured" in res.output
    # Per-tile labels: the 256 px scenes (two volkov, one changedet) in 2 x 2 tiles of 128 px each, reported and
    # recorded per scene; the synthetic scenes hold one shift throughout, so once aligned no tile moves.
    tiled = [str(tmp_path / "t") if a == str(tmp_path / "o") else a for a in args]
    res = runner.invoke(cli, [*tiled, "--tile-align", "128"])
    assert res.exit_code == 0, res.output
    assert "tile alignment (128 px): 12 tiles of 3 scenes, 0 moved off their scene's shift, 0 without" in res.output
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())["preset"]
    assert manifest["tile_align_px"] == 128
    assert manifest["scene_info"]["volkov-s1s2/000"]["tile_alignment"]["tiles"] == 4
    res = runner.invoke(cli, [*args[:-4], "--include", "3mos/nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "3mos/nope" in res.output and "matches no scene" in res.output
    res = runner.invoke(cli, ["dataset", "build", "--pair", "a.png", "b.png", "--include", "3mos",
                              "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "--include goes with --preset optical-sar" in res.output
    res = runner.invoke(cli, ["dataset", "build", "--pair", "a.png", "b.png", "--tile-align", "256",
                              "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "--tile-align goes with --preset optical-sar" in res.output


@pytest.mark.realdata
def test_real_volkov_pair_shift_measured_and_confirmed(data_file):
    """volkov-s1s2 004: published as aligned, measured ~2-3 px off; the coarse stage's best peak agrees with the
    folder's own table and is taken out."""
    data_file("volkov-s1s2/opt/004.png")
    data_dir = data_file("volkov-s1s2/alignment_check.csv").parents[1]
    pair = load_scene(find_scenes(data_dir, sources=("volkov-s1s2/004",))[0])
    rec = pair.info["alignment"]
    assert rec["status"] in ("measured", "confirmed") and rec["reference_shift_px"] is not None
    assert np.hypot(*np.subtract(rec["measured_shift_px"], rec["reference_shift_px"])) <= 1.5
    assert np.hypot(*rec["applied_shift_px"]) >= 2  # a real residual, taken out
    assert pair.shape == (1024, 1024) and pair.valid.mean() > 0.99
    assert -119.5 < pair.bounds[0] < pair.bounds[2] < -117.0  # southern California, from metadata.json
