import json

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import Affine
from scipy import ndimage as ndi

from geomatch.errors import OutputExistsError, RasterError
from geomatch.training.build import BuildConfig, build_dataset
from geomatch.training.datasets import load_dataset
from geomatch.training.presets import vis_nir_sources
from geomatch.training.source_pairs import SourcePair, read_pair_list

CFG = BuildConfig(max_points=40, cell_size=16, seed=1)


def texture(size=192, seed=0, lo=0.0, span=255.0):
    t = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal((size, size)), 3)
    t = (t - t.min()) / (t.max() - t.min())
    return lo + span * t


def to_sar(opt, seed=0):
    noisy = np.sqrt(opt / 255.0) * 200 + np.random.default_rng(seed + 100).normal(0, 4, opt.shape)
    return noisy.clip(0, 255)


def save_png(path, arr):
    Image.fromarray(np.asarray(arr).round().clip(0, 255).astype(np.uint8)).save(path)
    return path


def ncc(a, b):
    a = a.reshape(len(a), -1).astype(float)
    b = b.reshape(len(b), -1).astype(float)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-9)


def test_aligned_pairs_are_balanced_and_split_by_image(tmp_path):
    sources = []
    for k in range(3):  # each image in its own grey band, so a patch tells which image it came from
        opt = texture(seed=k, lo=80 * k, span=70)
        sar = save_png(tmp_path / f"s{k}.png", to_sar(opt, k))
        sources.append(SourcePair(save_png(tmp_path / f"o{k}.png", opt), sar))
    manifest = build_dataset(sources, tmp_path / "out", BuildConfig(**{**CFG.__dict__, "val_fraction": 0.34}))
    splits = {s["name"]: s["split"] for s in manifest["sources"]}
    assert sorted(splits.values()) == ["train", "train", "val"]
    x = np.load(tmp_path / "out" / "val.npy")
    y = np.load(tmp_path / "out" / "val_label.npy")
    assert x.dtype == np.uint8 and x.shape[1:] == (2, 64, 64)
    k_val = int([n for n, s in splits.items() if s == "val"][0][1])
    means = x[:, 0].reshape(len(x), -1).mean(1)
    assert np.all((means >= 80 * k_val - 1) & (means <= 80 * k_val + 71))  # every val pair from the val image
    tr = np.load(tmp_path / "out" / "train.npy")[:, 0].reshape(-1, 64 * 64).mean(1)
    assert not np.any((tr >= 80 * k_val) & (tr <= 80 * k_val + 70))
    for split in ("train", "val"):
        info = manifest["splits"][split]
        assert info["positives"] == info["negatives"] == info["pairs"] // 2
        assert info["hard_negatives"] > 0 and info["random_negatives"] > 0
    assert y.mean() == 0.5
    c = ncc(x[:, 0], x[:, 1])  # a 70-level band plus SAR noise: positives correlate well below 1
    assert c[y == 1].mean() > 0.7 and c[y == 1].mean() > c[y == 0].mean() + 0.4
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]["seed"] == 1
    with pytest.raises(OutputExistsError):
        build_dataset(sources, tmp_path / "out", CFG)


def test_affine_pair_positives_correspond(tmp_path):
    opt = texture(256, seed=5)
    a = np.deg2rad(10)
    m = np.array([[1.05 * np.cos(a), -1.05 * np.sin(a), 12.0], [1.05 * np.sin(a), 1.05 * np.cos(a), -7.0]])
    # The SAR pixel q shows the optical pixel p = M^-1 q (array-index coordinates, x = column).
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    rows, cols = np.mgrid[0:256, 0:256].astype(float)
    px = inv[0, 0] * cols + inv[0, 1] * rows + inv[0, 2]
    py = inv[1, 0] * cols + inv[1, 1] * rows + inv[1, 2]
    sar = ndi.map_coordinates(opt, [py, px], order=1, cval=0)
    save_png(tmp_path / "opt.png", opt)
    save_png(tmp_path / "sar.png", sar)
    (tmp_path / "m.txt").write_text(f"[[{m[0, 0]} {m[0, 1]} {m[0, 2]}]\n [{m[1, 0]} {m[1, 1]} {m[1, 2]}]]\n")
    (tmp_path / "pairs.csv").write_text("optical,sar,affine,split\nopt.png,sar.png,m.txt,test:warped\n")
    sources = read_pair_list(tmp_path / "pairs.csv")
    assert np.allclose(sources[0].affine, m)
    manifest = build_dataset(sources, tmp_path / "out", CFG)
    x = np.load(tmp_path / "out" / "test_warped.npy")
    y = np.load(tmp_path / "out" / "test_warped_label.npy")
    assert manifest["splits"]["test:warped"]["pairs"] == len(y) > 20
    c = ncc(x[:, 0], x[:, 1])
    assert c[y == 1].min() > 0.9 and c[y == 0].mean() < 0.5
    # Without the affine the same positives would not correspond.
    sources[0].affine = None
    build_dataset(sources, tmp_path / "plain", CFG)
    x2, y2 = np.load(tmp_path / "plain" / "test_warped.npy"), np.load(tmp_path / "plain" / "test_warped_label.npy")
    assert ncc(x2[:, 0], x2[:, 1])[y2 == 1].mean() < 0.5


def _write_tif(path, arr, transform, crs="EPSG:32631"):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype="float32", crs=crs, transform=transform) as dst:
        dst.write(arr.astype(np.float32), 1)
    return path


def test_geotiffs_on_one_grid_and_off_grid_error(tmp_path):
    opt = texture(seed=3)
    grid = Affine(10, 0, 500000, 0, -10, 4500000)
    o = _write_tif(tmp_path / "o.tif", opt / 255.0, grid)
    s = _write_tif(tmp_path / "s.tif", 10 ** (to_sar(opt) / 100.0), grid)  # linear power: converted to dB
    build_dataset([SourcePair(o, s)], tmp_path / "out", CFG)
    ds = load_dataset(str(tmp_path / "out"))
    x, y = ds.train.batch(np.arange(len(ds.train))), ds.train.labels
    c = ncc(x[:, 0], x[:, 1])
    assert c[y == 1].mean() > 0.9 > c[y == 0].mean()
    off = _write_tif(tmp_path / "off.tif", opt, Affine(10, 0, 500005, 0, -10, 4500000))
    with pytest.raises(RasterError, match="not on the grid"):
        build_dataset([SourcePair(o, off)], tmp_path / "bad", CFG)


def test_same_seed_same_files_other_seed_other_pairs(tmp_path):
    opt = texture(seed=9)
    src = [SourcePair(save_png(tmp_path / "o.png", opt), save_png(tmp_path / "s.png", to_sar(opt)))]
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        build_dataset([SourcePair(src[0].optical, src[0].sar)], tmp_path / name,
                      BuildConfig(**{**CFG.__dict__, "seed": seed}))
    a, b, c = (np.load(tmp_path / n / "train.npy") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_free_images_split_by_valid_pixels(tmp_path):
    """val_fraction is a share of the pixels: beside one large image, the small ones are what validation gets."""
    sources = []
    for k, size in enumerate((320, 112, 112, 112)):
        opt = texture(size, seed=30 + k)
        sources.append(SourcePair(save_png(tmp_path / f"o{k}.png", opt), save_png(tmp_path / f"s{k}.png", to_sar(opt))))
    manifest = build_dataset(sources, tmp_path / "out", BuildConfig(**{**CFG.__dict__, "val_fraction": 0.25}))
    assert [s["split"] for s in manifest["sources"]] == ["train", "val", "val", "val"]
    assert manifest["splits"]["val"]["sources"] == 3


def test_failed_rebuild_keeps_the_old_dataset_and_leaves_no_partial_file(tmp_path, monkeypatch):
    from geomatch.training import build as build_mod

    opt = texture(seed=12)
    sources = [SourcePair(save_png(tmp_path / "o.png", opt), save_png(tmp_path / "s.png", to_sar(opt)))]
    out = tmp_path / "out"
    build_dataset(sources, out, CFG)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / ".train.npy.dead0001.partial.npy").write_bytes(b"left by a killed build")
    calls = []

    def cut_then_fail(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt  # stopped while cutting: the files are half written

    monkeypatch.setattr(build_mod, "cut_patches", cut_then_fail)
    with pytest.raises(KeyboardInterrupt):
        build_dataset([SourcePair(s.optical, s.sar) for s in sources], out, BuildConfig(**{**CFG.__dict__, "seed": 5}),
                      overwrite=True)
    assert calls
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_vis_nir_preset_writes_a_vis_nir_folder(tmp_path):
    src = tmp_path / "src"
    for k in range(2):
        (src / "country").mkdir(parents=True, exist_ok=True)
        opt = texture(seed=10 + k)
        save_png(src / "country" / f"000{k}_rgb.png", opt)
        save_png(src / "country" / f"000{k}_nir.png", to_sar(opt))
    (src / "field").mkdir()
    opt = texture(seed=20)
    save_png(src / "field" / "0001_rgb.png", opt)
    save_png(src / "field" / "0001_nir.png", to_sar(opt))
    np.save(src / "field" / "0001_nir.npy", np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    sources = vis_nir_sources(src)
    assert [s.split for s in sources] == [None, None, "test:field"] and sources[2].affine is not None
    build_dataset(sources, tmp_path / "out", CFG, layout="vis-nir")
    ds = load_dataset("vis-nir", tmp_path / "out")
    assert list(ds.tests) == ["field"] and ds.clean_val is not None and len(ds.train) > 0
    assert ds.clean_val.path.name == "country_val.npy"


@pytest.mark.realdata
def test_real_vis_nir_positives_correspond(data_dir, tmp_path):
    """On the shared VIS-NIR images (country aligned, field warped), positives out-correlate negatives."""
    sources = [s for s in vis_nir_sources(data_dir / "vis-nir") if s.name in ("country/0010", "field/0010")]
    build_dataset(sources, tmp_path / "out", BuildConfig(max_points=150, seed=0, val_fraction=0), layout="vis-nir")
    for name in ("country", "field"):
        x, y = np.load(tmp_path / "out" / f"{name}.npy"), np.load(tmp_path / "out" / f"{name}_label.npy")
        grad = np.hypot(*np.gradient(x.astype(float), axis=(2, 3)))
        c = ncc(grad[:, 0], grad[:, 1])
        assert c[y == 1].mean() > c[y == 0].mean() + 0.15, name


def test_zoomed_pairs_correspond_and_show_a_coarser_ground(tmp_path):
    """With --zoom 2 2 each patch spans twice the scene: positives still correspond, and a patch equals the
    scene filtered and sampled every 2 px (so a net trained on it sees a sensor of twice the GSD)."""
    opt = texture(320, seed=7)
    save_png(tmp_path / "opt.png", opt)
    save_png(tmp_path / "sar.png", opt)
    src = [SourcePair(tmp_path / "opt.png", tmp_path / "sar.png", None, "test:z")]
    cfg = BuildConfig(**{**CFG.__dict__, "zoom": (2.0, 2.0), "hard_fraction": 1.0})
    manifest = build_dataset(src, tmp_path / "out", cfg)
    assert manifest["config"]["zoom"] == [2.0, 2.0]
    x = np.load(tmp_path / "out" / "test_z.npy").astype(float)
    y = np.load(tmp_path / "out" / "test_z_label.npy")
    assert len(y) > 10
    c = ncc(x[:, 0], x[:, 1])
    assert c[y == 1].min() > 0.99 and c[y == 0].mean() < 0.9
    # A zoomed patch is smoother than a plain crop of the same scene: twice the ground in 64 px.
    plain = build_dataset(src, tmp_path / "plain", CFG)
    assert plain["config"]["zoom"] == [1.0, 1.0]
    x1 = np.load(tmp_path / "plain" / "test_z.npy").astype(float)
    grad = lambda a: np.abs(np.diff(a[:, 0], axis=-1)).mean()  # noqa: E731
    assert grad(x) > 1.5 * grad(x1)


def test_hard_offsets_lie_in_the_range_asked(tmp_path):
    """Hard negatives sit hard_offset patch pixels off (times the zoom): 2-16 px by default."""
    from geomatch.training.build import HARD_NEG, plan_source

    opt = texture(256, seed=3) / 255.0
    valid = np.ones(opt.shape, bool)
    src = SourcePair("o.png", "s.png")
    for zoom, lo, hi in [((1.0, 1.0), 2.0, 16.0), ((2.0, 2.0), 4.0, 32.0)]:
        cfg = BuildConfig(**{**CFG.__dict__, "hard_fraction": 1.0, "zoom": zoom})
        plan = plan_source(src, opt, opt, valid, valid, cfg, np.random.default_rng(0))
        hard = plan.kinds == HARD_NEG
        d = np.hypot(*(plan.target[hard] - plan.optical[hard]).T)
        assert hard.sum() > 10
        assert d.min() >= lo - 0.75 and d.max() <= hi + 0.75  # rounded to pixel centres
        assert np.allclose(plan.zoom, zoom[0])


def test_zoom_and_offset_ranges_are_checked():
    from geomatch.errors import InputError

    with pytest.raises(InputError, match="--zoom"):
        BuildConfig(zoom=(2.0, 1.0)).check()
    with pytest.raises(InputError, match="--hard-offset"):
        BuildConfig(hard_offset=(0.0, 4.0)).check()


def test_local_shifts_cut_positives_at_their_ground_and_none_where_unknown(tmp_path):
    from geomatch.training.build import POSITIVE, cut_patches, plan_source

    opt = texture(256, seed=9) / 255.0
    # The ground under optical p sits at SAR p + (7, -5): out[y, x] = opt[y + 5, x - 7].
    sar = to_sar(ndi.shift(opt * 255.0, (-5, 7), order=1, mode="nearest"), 9) / 255.0
    valid = np.ones(opt.shape, bool)
    shift = np.zeros((2, 256, 256), np.float32)
    shift[0], shift[1] = 7, -5
    shift[:, :, 160:] = np.nan  # no correspondence known on the right: no keypoint there
    src = SourcePair(tmp_path / "o.png", tmp_path / "s.png", arrays=(opt, sar, valid, valid), local_shift=shift)
    plan = plan_source(src, opt, sar, valid, valid, CFG, np.random.default_rng(0))
    pos = plan.kinds == POSITIVE
    assert pos.sum() > 10 and plan.optical[:, 0].max() < 160
    np.testing.assert_array_equal(plan.target[pos] - plan.optical[pos], np.tile([7, -5], (pos.sum(), 1)))
    hard = plan.kinds == 2
    off = np.hypot(*(plan.target[hard] - plan.optical[hard] - [7, -5]).T)  # hard negatives: offsets from the ground
    assert hard.any() and off.min() >= CFG.hard_offset[0] - 1 and off.max() <= CFG.hard_offset[1] + 1
    x = cut_patches(src, opt, sar, plan, 64)
    assert ncc(x[pos, 0], x[pos, 1]).min() > 0.8
    src.local_shift = None  # the scene's one (zero) shift: the same keypoints' positives do not correspond
    plain = plan_source(src, opt, sar, valid, valid, CFG, np.random.default_rng(0))
    x2 = cut_patches(src, opt, sar, plain, 64)
    assert ncc(x2[plain.kinds == POSITIVE, 0], x2[plain.kinds == POSITIVE, 1]).mean() < 0.5
