"""``geomatch dataset build``: cut 64x64 patch pairs from co-registered image pairs into the published format.

Sources are (optical, SAR/NIR) image pairs that are either aligned (GeoTIFFs on one grid, or plain images of
the same size) or related by a known 2x3 affine ``M`` that takes an optical pixel ``(col, row)`` to the SAR
pixel ``M @ (col, row, 1)`` (array-index coordinates, as the VIS-NIR registration files are written).

Per source image: keypoints from a detector plugin on the optical image (restricted to pixels whose whole
patch lands on valid pixels of both images), then, per keypoint,

- one **positive**: the optical patch at the keypoint and the SAR patch at its corresponding point. With an
  affine the SAR patch is resampled (bilinear) through ``M`` around ``M @ p``, so the two patches show the
  same ground pixel for pixel, in the optical patch's orientation;
- one **negative**, balanced 1:1 with the positives: with probability ``hard_fraction`` a *hard* one (the SAR
  patch at the point offset by 8-24 px in a random direction), otherwise a *random* one (the SAR patch at
  another keypoint of the same image at least a patch half-width away).

Everything random comes from ``seed`` (one stream per source), so a rebuild gives the same files. Sources are
assigned to train or validation by image (``val_fraction``), never by pair, so no image feeds both.

Radiometry: plain images (JPEG, PNG...) are read as 8-bit grey (RGB -> ITU-R 601 luma), unstretched, like the
published VIS-NIR patches; GeoTIFFs go through the run pipeline's rules (``geomatch.pipeline.normalise``:
optical bands averaged, SAR in dB, 1-99 % stretch) so trained matchers see what ``geomatch run`` feeds them.

Output: the ``dir`` layout (``train.npy``, ``val.npy``, ``test_<name>.npy``, each with ``_label.npy``) or, with
the ``vis-nir`` preset, the VIS-NIR names (``country.npy``, ``country_val.npy``, ``field.npy``...), plus
``manifest.json`` (sources, counts, settings, seed). Arrays are uint8 (N, 2, P, P), written through memory
maps to temporary names and renamed when complete.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from geomatch.errors import InputError, OutputExistsError, RasterError

log = logging.getLogger(__name__)

POSITIVE, RANDOM_NEG, HARD_NEG = 0, 1, 2
PLAIN_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
VIS_NIR_TRAIN = "country"


@dataclass(frozen=True)
class BuildConfig:
    patch_size: int = 64
    max_points: int = 1000  # keypoints per source image; each gives one positive and one negative
    cell_size: int = 16  # grid non-maximum suppression cell of the detector
    min_contrast: float = 0.02  # skip patches whose grey std (0-1 units) is below this
    detector: str = "harris"
    hard_fraction: float = 0.5  # share of negatives that are hard (nearby offsets)
    hard_offset: tuple[float, float] = (8.0, 24.0)  # pixels
    val_fraction: float = 0.2  # share of the unassigned source images that go to validation
    seed: int = 0

    def check(self) -> None:
        if self.patch_size < 8 or self.patch_size % 2:
            raise InputError(f"--patch-size {self.patch_size}: use an even size of at least 8 (published: 64)")
        if self.max_points < 1 or self.cell_size < 1:
            raise InputError("--max-points and --cell-size must be at least 1")
        if not 0 <= self.hard_fraction <= 1:
            raise InputError(f"--hard-fraction {self.hard_fraction} must be between 0 and 1")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"--val-fraction {self.val_fraction} must be in [0, 1)")
        lo, hi = self.hard_offset
        if not 0 < lo <= hi:
            raise InputError(f"hard offsets {self.hard_offset} must satisfy 0 < min <= max")


@dataclass
class SourcePair:
    optical: Path
    sar: Path
    affine: np.ndarray | None = None  # (2, 3): optical (col, row, 1) -> SAR (col, row)
    split: str | None = None  # train | val | test:<name>; None: assigned by val_fraction
    name: str = ""
    # Images already read (optical, sar, optical_valid, sar_valid; float32 [0, 1] on one grid): read_pair
    # returns them instead of reading the files, which then only name the source (training.sources uses it).
    arrays: tuple | None = None

    def __post_init__(self):
        self.optical, self.sar = Path(self.optical), Path(self.sar)
        if self.affine is not None:
            self.affine = np.asarray(self.affine, dtype=np.float64).reshape(2, 3)
        if not self.name:
            self.name = self.optical.stem


@dataclass
class _Plan:
    """Pairs of one source: optical centres, SAR centres (both in the optical frame), labels and kinds."""

    optical: np.ndarray  # (K, 2) x, y pixel-centre coordinates
    target: np.ndarray  # (K, 2) in the optical frame; mapped through the affine when sampled
    labels: np.ndarray
    kinds: np.ndarray
    keypoints: int = 0


# ---- reading ---------------------------------------------------------------------------------------------------


def read_affine(path: str | Path) -> np.ndarray:
    """A 2x3 affine from ``.npy`` or text (any six numbers, brackets allowed, as the VIS-NIR ``_nir.txt``)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            m = np.load(path, allow_pickle=False)
        else:
            m = np.array([float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?",
                                                         path.read_text(errors="replace"))])
        m = np.asarray(m, dtype=np.float64)
        if m.size == 9 and np.allclose(m.reshape(3, 3)[2], (0, 0, 1)):
            m = m.reshape(3, 3)[:2]
        return m.reshape(2, 3)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a 2x3 affine matrix ({exc}); give 6 numbers as .npy or text") from exc


def _is_plain(path: Path) -> bool:
    return path.suffix.lower() in PLAIN_SUFFIXES


def _read_plain(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise RasterError(f"{path}: cannot read image ({exc})") from exc
    return grey, np.ones(grey.shape, bool)


def _read_geotiff(path: Path, role: str):
    import rasterio

    from geomatch.pipeline import normalise as nm

    try:
        with rasterio.open(path) as src:
            bands = nm.grey_bands(src.count, ()) if role == "optical" else nm.sar_bands(src.count, ())
            data = src.read(list(bands), masked=True).astype(np.float64)
            grid = (src.crs, src.transform, src.width, src.height)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"{path}: cannot read raster ({exc})") from exc
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    values = np.ma.getdata(data).mean(axis=0)
    valid &= np.isfinite(values)
    if role == "sar" and nm.detect_sar_scale(values[valid]) == "linear":
        values = nm.to_db(values)
    stretch = nm.Stretch.fit(values[valid])
    return stretch.apply(np.where(valid, values, stretch.lo)), valid, grid


def read_pair(src: SourcePair) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(optical, sar, optical_valid, sar_valid): float32 [0, 1] grey images and their valid masks."""
    if src.arrays is not None:
        return src.arrays
    for p in (src.optical, src.sar):
        if not p.is_file():
            raise InputError(f"{p}: image not found")
    if _is_plain(src.optical) or _is_plain(src.sar):
        (opt, vo), (sar, vs) = _read_plain(src.optical), _read_plain(src.sar)
    else:
        opt, vo, grid_o = _read_geotiff(src.optical, "optical")
        sar, vs, grid_s = _read_geotiff(src.sar, "sar")
        same = grid_o[0] == grid_s[0] and grid_o[2:] == grid_s[2:] and np.allclose(
            tuple(grid_o[1])[:6], tuple(grid_s[1])[:6], rtol=0, atol=1e-9 * max(1.0, abs(grid_o[1].a)))
        if src.affine is None and not same:
            raise RasterError(
                f"{src.sar}: not on the grid of {src.optical} (CRS, transform or size differ); warp it onto that "
                "grid first (e.g. gdalwarp -te/-tr/-t_srs) or give the pixel affine between them"
            )
    if src.affine is None and opt.shape != sar.shape:
        raise InputError(f"{src.optical} is {opt.shape[::-1]} but {src.sar} is {sar.shape[::-1]} pixels; "
                         "aligned pairs must be the same size (or give an affine)")
    return opt, sar, vo, vs


# ---- planning and cutting ------------------------------------------------------------------------------------


def _to_target(affine: np.ndarray | None, xy: np.ndarray) -> np.ndarray:
    """Pixel-centre coordinates in the optical frame -> pixel-centre coordinates in the SAR image."""
    if affine is None:
        return xy
    return (xy - 0.5) @ affine[:, :2].T + affine[:, 2] + 0.5


def _valid_in_optical_frame(src: SourcePair, vo: np.ndarray, vs: np.ndarray) -> np.ndarray:
    if src.affine is None:
        return vo & vs
    rows, cols = np.mgrid[0:vo.shape[0], 0:vo.shape[1]]
    xy = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    t = _to_target(src.affine, xy) - 0.5
    h, w = vs.shape
    inside = (t[:, 0] >= 0) & (t[:, 0] <= w - 1) & (t[:, 1] >= 0) & (t[:, 1] <= h - 1)
    sar_ok = ndi.map_coordinates(vs.astype(np.float32), [t[:, 1], t[:, 0]], order=0, mode="constant", cval=0) > 0
    return vo & (inside & sar_ok).reshape(vo.shape)


def _detect(opt: np.ndarray, valid: np.ndarray, cfg: BuildConfig):
    from geomatch import registry

    detector = registry.load("detectors", cfg.detector)()
    half = cfg.patch_size // 2
    return detector.detect(opt, valid, max_points=cfg.max_points, cell_size=cfg.cell_size,
                           min_contrast=cfg.min_contrast, border=half)


def plan_source(src: SourcePair, opt: np.ndarray, sar: np.ndarray, vo: np.ndarray, vs: np.ndarray,
                cfg: BuildConfig, rng: np.random.Generator) -> _Plan:
    """Choose the pairs of one source: a positive and a negative per keypoint."""
    valid = _valid_in_optical_frame(src, vo, vs)
    kp = _detect(opt, valid, cfg)
    xy = np.column_stack([np.asarray(kp.x, float), np.asarray(kp.y, float)])
    # A hard negative's centre must have its whole patch valid too: the detector's own window rule.
    window_ok = ndi.minimum_filter(valid.astype(np.uint8), size=cfg.patch_size, mode="constant", cval=0) > 0
    h, w = valid.shape
    half = cfg.patch_size // 2
    n = len(xy)
    kinds_neg = np.where(rng.random(n) < cfg.hard_fraction, HARD_NEG, RANDOM_NEG)
    neg_target = np.empty((n, 2))
    for i in range(n):
        placed = False
        if kinds_neg[i] == HARD_NEG:
            for _ in range(8):
                r = rng.uniform(*cfg.hard_offset)
                a = rng.uniform(0, 2 * np.pi)
                q = np.round(xy[i] - 0.5 + r * np.array([np.cos(a), np.sin(a)])) + 0.5
                qc, qr = int(q[0] - 0.5), int(q[1] - 0.5)
                if half <= qr < h - half and half <= qc < w - half and window_ok[qr, qc]:
                    neg_target[i], placed = q, True
                    break
            if not placed:
                kinds_neg[i] = RANDOM_NEG
        if not placed:
            far = np.nonzero(np.hypot(*(xy - xy[i]).T) >= half)[0]
            if len(far) == 0:
                kinds_neg[i] = -1  # a lone keypoint: no negative for it, and so no positive either
                continue
            neg_target[i] = xy[rng.choice(far)]
    keep = kinds_neg >= 0
    xy, neg_target, kinds_neg = xy[keep], neg_target[keep], kinds_neg[keep]
    m = len(xy)
    return _Plan(
        optical=np.concatenate([xy, xy]),
        target=np.concatenate([xy, neg_target]),
        labels=np.concatenate([np.ones(m, np.uint8), np.zeros(m, np.uint8)]),
        kinds=np.concatenate([np.full(m, POSITIVE, np.int8), kinds_neg.astype(np.int8)]),
        keypoints=m,
    )


def cut_patches(src: SourcePair, opt: np.ndarray, sar: np.ndarray, plan: _Plan, patch_size: int) -> np.ndarray:
    """(K, 2, P, P) uint8 patches for a plan."""
    from geomatch.pipeline.patches import sample_patches

    a = sample_patches(opt, plan.optical, patch_size)
    linear = None if src.affine is None else src.affine[:, :2]
    b = sample_patches(sar, _to_target(src.affine, plan.target), patch_size, linear=linear)
    pairs = np.stack([a, b], axis=1) * 255.0
    return np.clip(np.round(pairs), 0, 255).astype(np.uint8)


# ---- sources -----------------------------------------------------------------------------------------------------


def vis_nir_sources(root: str | Path) -> list[SourcePair]:
    """The VIS-NIR registration folders: ``country/`` (train + val, aligned) and every other category as a test.

    Pairs are ``XXXX_rgb.jpg`` + ``XXXX_nir.jpg``, with ``XXXX_nir.npy`` (or ``.txt``) holding the affine where
    the NIR image was warped.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--source {root}: folder not found; give the VIS-NIR registration folder "
                         "(country/, field/, ...)")
    out = []
    for cat in sorted(p for p in root.iterdir() if p.is_dir()):
        for rgb in sorted(cat.glob("*_rgb.*")):
            stem = rgb.name[: -len("_rgb" + rgb.suffix)]
            nir = next(iter(sorted(cat.glob(f"{stem}_nir.jp*g")) + sorted(cat.glob(f"{stem}_nir.png"))), None)
            if nir is None:
                log.warning("%s: no matching %s_nir image; skipped", rgb, stem)
                continue
            affine = None
            for ext in (".npy", ".txt"):
                f = cat / f"{stem}_nir{ext}"
                if f.is_file():
                    affine = read_affine(f)
                    break
            split = None if cat.name == VIS_NIR_TRAIN else f"test:{cat.name}"
            out.append(SourcePair(rgb, nir, affine, split, f"{cat.name}/{stem}"))
    if not any(s.split is None for s in out):
        raise InputError(f"--source {root}: no {VIS_NIR_TRAIN}/XXXX_rgb.jpg + XXXX_nir.jpg pairs to train on")
    return out


def read_pair_list(path: str | Path) -> list[SourcePair]:
    """CSV rows ``optical,sar[,affine[,split]]`` (paths relative to the file; a header row is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--pairs {path}: file not found")
    out = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not row or not row[0] or row[0].startswith("#") or (i == 1 and row[0].lower() == "optical"):
                continue
            if len(row) < 2:
                raise InputError(f"{path}:{i}: expected optical,sar[,affine[,split]]")
            opt, sar = (path.parent / row[0]), (path.parent / row[1])
            affine = read_affine(path.parent / row[2]) if len(row) > 2 and row[2] else None
            split = row[3] if len(row) > 3 and row[3] else None
            if split is not None and not (split in ("train", "val") or re.fullmatch(r"test:[\w.-]+", split)):
                raise InputError(f"{path}:{i}: split '{split}' must be train, val or test:NAME")
            out.append(SourcePair(opt, sar, affine, split))
    if not out:
        raise InputError(f"--pairs {path}: no image pairs listed")
    return out


def assign_splits(sources: list[SourcePair], val_fraction: float, seed: int) -> None:
    """Give every unassigned source train or val, by image; at least one val image when two or more are free."""
    free = [s for s in sources if s.split is None]
    n_val = int(round(len(free) * val_fraction))
    if val_fraction > 0 and len(free) >= 2:
        n_val = min(max(n_val, 1), len(free) - 1)
    order = np.random.default_rng([seed, 7]).permutation(len(free))
    for rank, i in enumerate(order):
        free[i].split = "val" if rank < n_val else "train"


def _file_names(split: str, layout: str) -> tuple[str, str]:
    if layout == "vis-nir":
        stem = {"train": VIS_NIR_TRAIN, "val": f"{VIS_NIR_TRAIN}_val"}.get(split) or split.split(":", 1)[1]
    else:
        stem = split if split in ("train", "val") else "test_" + split.split(":", 1)[1]
    return f"{stem}.npy", f"{stem}_label.npy"


# ---- the build ---------------------------------------------------------------------------------------------------


def build_dataset(sources: list[SourcePair], out_dir: str | Path, config: BuildConfig | None = None,
                  layout: str = "dir", overwrite: bool = False, progress: bool = False) -> dict:
    """Cut every source into patch pairs and write the split files and ``manifest.json``; returns the manifest."""
    from tqdm import tqdm

    cfg = config or BuildConfig()
    cfg.check()
    if layout not in ("dir", "vis-nir"):
        raise InputError(f"layout '{layout}': use dir or vis-nir")
    if not sources:
        raise InputError("no image pairs given; use --pair OPTICAL SAR, --pairs FILE or --preset vis-nir --source DIR")
    out = Path(out_dir)
    assign_splits(sources, cfg.val_fraction, cfg.seed)
    splits = sorted({s.split for s in sources}, key=lambda s: (s != "train", s != "val", s))
    files = {sp: _file_names(sp, layout) for sp in splits}
    targets = [out / f for pair in files.values() for f in pair] + [out / "manifest.json"]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]} exists; use --overwrite to replace the dataset in {out}")
    out.mkdir(parents=True, exist_ok=True)

    plans: list[_Plan] = []
    for i, src in enumerate(tqdm(sources, desc="planning", unit="image", disable=not progress)):
        opt, sar, vo, vs = read_pair(src)
        plan = plan_source(src, opt, sar, vo, vs, cfg, np.random.default_rng([cfg.seed, i]))
        plans.append(plan)
        if plan.keypoints == 0:
            log.warning("%s: no usable keypoint (textureless, or no overlap with %s)", src.optical, src.sar)

    p = cfg.patch_size
    manifest_splits: dict = {}
    tmp_paths: list[tuple[Path, Path]] = []
    try:
        writers = {}
        for sp in splits:
            idx = [i for i, s in enumerate(sources) if s.split == sp]
            total = sum(len(plans[i].labels) for i in idx)
            if total == 0:
                raise InputError(f"split {sp}: its source images gave no keypoints; lower --min-contrast or add images")
            img_name, lab_name = files[sp]
            tmp_img = out / f".{img_name}.partial.npy"
            arr = np.lib.format.open_memmap(tmp_img, mode="w+", dtype=np.uint8, shape=(total, 2, p, p))
            # One seeded permutation per split shuffles pairs across its images.
            perm = np.random.default_rng([cfg.seed, 11, splits.index(sp)]).permutation(total)
            labels = np.empty(total, np.int64)
            writers[sp] = (arr, perm, labels, [0])
            tmp_paths.append((tmp_img, out / img_name))
            kinds = np.concatenate([plans[i].kinds for i in idx])
            manifest_splits[sp] = {
                "images_file": img_name, "labels_file": lab_name, "pairs": int(total),
                "positives": int(np.sum(kinds == POSITIVE)), "negatives": int(np.sum(kinds != POSITIVE)),
                "hard_negatives": int(np.sum(kinds == HARD_NEG)), "random_negatives": int(np.sum(kinds == RANDOM_NEG)),
                "sources": len(idx),
            }
        for i, src in enumerate(tqdm(sources, desc="cutting", unit="image", disable=not progress)):
            plan = plans[i]
            if not len(plan.labels):
                continue
            opt, sar, _, _ = read_pair(src)
            patches = cut_patches(src, opt, sar, plan, p)
            arr, perm, labels, cursor = writers[src.split]
            dest = perm[cursor[0]:cursor[0] + len(patches)]
            order = np.argsort(dest)  # ascending writes keep the memory map's page traffic sequential
            arr[dest[order]] = patches[order]
            labels[dest] = plan.labels
            cursor[0] += len(patches)
        for sp, (arr, _perm, labels, _c) in writers.items():
            arr.flush()
            np.save(out / f".{files[sp][1]}.partial.npy", labels)
            tmp_paths.append((out / f".{files[sp][1]}.partial.npy", out / files[sp][1]))
        writers.clear()
        for tmp, final in tmp_paths:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in tmp_paths:
            tmp.unlink(missing_ok=True)
        raise

    from geomatch import __version__

    manifest = {
        "format": "geomatch-patches",
        "format_version": 1,
        "layout": layout,
        "geomatch": __version__,
        "config": {**asdict(cfg), "hard_offset": list(cfg.hard_offset)},
        "splits": manifest_splits,
        "sources": [
            {"name": s.name, "optical": str(s.optical), "sar": str(s.sar),
             "affine": None if s.affine is None else s.affine.round(10).tolist(), "split": s.split,
             "keypoints": pl.keypoints, "pairs": len(pl.labels),
             "hard_negatives": int(np.sum(pl.kinds == HARD_NEG)),
             "random_negatives": int(np.sum(pl.kinds == RANDOM_NEG))}
            for s, pl in zip(sources, plans, strict=True)
        ],
    }
    from geomatch.models.checkpoint import write_atomic

    write_atomic(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
