"""``geomatch dataset build``: cut 64x64 patch pairs from co-registered image pairs and write the patch set.

The inputs (:class:`~geomatch.training.source_pairs.SourcePair`: aligned pairs, or pairs related by a known
affine) are read by :mod:`geomatch.training.source_pairs`. Per source image: keypoints from a detector plugin
on the optical image (restricted to pixels whose whole patch lands on valid pixels of both images), then, per
keypoint,

- one **positive**: the optical patch at the keypoint and the SAR patch at its corresponding point. With an
  affine the SAR patch is resampled (bilinear) through ``M`` around ``M @ p``, so the two patches show the
  same ground pixel for pixel, in the optical patch's orientation;
- one **negative**, balanced 1:1 with the positives: with probability ``hard_fraction`` a *hard* one (the SAR
  patch at the point offset by ``hard_offset`` (default 2-16) patch pixels in a random direction: what the fine
  search has to reject), otherwise a *random* one (the SAR patch at another keypoint of the same image at least
  a patch half-width away).

With ``zoom`` = (lo, hi) other than (1, 1), each keypoint's pair (positive and negative) is cut at one zoom z,
log-uniform in [lo, hi]: both patches sample the scene on a grid of z pixels per patch pixel (Gaussian
pre-filtered where z > 1, so the patch shows what a coarser sensor would), so the weights learn to tolerate
ground sampling distances from lo to hi times the scenes'. The manifest records the range.

Everything random comes from ``seed`` (one stream per source), so a rebuild gives the same files. Images
given without a split go to train or validation whole (``val_fraction`` of their valid pixels), by the one
split rule of :mod:`geomatch.training.splits`, so no image feeds both.

Output: the ``dir`` layout (``train.npy``, ``val.npy``, ``test_<name>.npy``, each with ``_label.npy``) or, with
the ``vis-nir`` preset, the VIS-NIR names (``country.npy``, ``country_val.npy``, ``field.npy``...), plus
``manifest.json`` (sources, counts, settings, seed). Arrays are uint8 (N, 2, P, P), written through memory
maps to temporary names (:func:`geomatch.fileio.atomic_output`) and renamed only when every file is complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from geomatch.errors import InputError, OutputExistsError
from geomatch.fileio import atomic_output, remove_stale_partials, write_atomic
from geomatch.training.source_pairs import SourcePair, read_pair
from geomatch.training.splits import assign_free_images, free_fractions

log = logging.getLogger(__name__)

POSITIVE, RANDOM_NEG, HARD_NEG = 0, 1, 2
VIS_NIR_TRAIN = "country"  # the vis-nir layout's training file stem (country.npy, country_val.npy)


@dataclass(frozen=True)
class BuildConfig:
    patch_size: int = 64
    max_points: int = 1000  # keypoints per source image; each gives one positive and one negative
    cell_size: int = 16  # grid non-maximum suppression cell of the detector
    min_contrast: float = 0.02  # skip patches whose grey std (0-1 units) is below this
    detector: str = "harris"
    hard_fraction: float = 0.5  # share of negatives that are hard (nearby offsets)
    hard_offset: tuple[float, float] = (2.0, 16.0)  # patch pixels
    zoom: tuple[float, float] = (1.0, 1.0)  # scene pixels per patch pixel, log-uniform per keypoint
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
            raise InputError(f"--hard-offset {lo:g} {hi:g} must satisfy 0 < min <= max")
        zlo, zhi = self.zoom
        if not 0.25 <= zlo <= zhi <= 4:
            raise InputError(f"--zoom {zlo:g} {zhi:g} must satisfy 0.25 <= min <= max <= 4")

    @property
    def reach(self) -> float:
        """Scene pixels from a patch centre to its edge at the largest zoom (what must be valid)."""
        return self.patch_size / 2 * max(1.0, self.zoom[1])


@dataclass
class _Plan:
    """Pairs of one source: optical centres, SAR centres (both in the optical frame), labels and kinds."""

    optical: np.ndarray  # (K, 2) x, y pixel-centre coordinates
    target: np.ndarray  # (K, 2) in the optical frame; mapped through the affine when sampled
    labels: np.ndarray
    kinds: np.ndarray
    zoom: np.ndarray  # (K,) scene pixels per patch pixel
    keypoints: int = 0
    valid_px: int = 0  # pixels valid in both images: the source's weight in the split



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
    return detector.detect(opt, valid, max_points=cfg.max_points, cell_size=cfg.cell_size,
                           min_contrast=cfg.min_contrast, border=int(np.ceil(cfg.reach)))


def plan_source(src: SourcePair, opt: np.ndarray, sar: np.ndarray, vo: np.ndarray, vs: np.ndarray,
                cfg: BuildConfig, rng: np.random.Generator) -> _Plan:
    """Choose the pairs of one source: a positive and a negative per keypoint."""
    valid = _valid_in_optical_frame(src, vo, vs)
    if src.local_shift is not None:
        valid &= np.isfinite(src.local_shift[0])
    kp = _detect(opt, valid, cfg)
    xy = np.column_stack([np.asarray(kp.x, float), np.asarray(kp.y, float)])
    # A hard negative's centre must have its whole patch valid too: the detector's own window rule.
    size = 2 * int(np.ceil(cfg.reach))
    window_ok = ndi.minimum_filter(valid.astype(np.uint8), size=size, mode="constant", cval=0) > 0
    h, w = valid.shape
    half = size // 2

    def fits(q) -> bool:
        qc, qr = int(q[0] - 0.5), int(q[1] - 0.5)
        return half <= qr < h - half and half <= qc < w - half and bool(window_ok[qr, qc])

    # Where each keypoint's ground sits in the SAR (the positive's centre; hard negatives are offsets from it).
    at = xy.copy()
    if src.local_shift is not None and len(xy):
        px = (xy - 0.5).astype(int)
        at += src.local_shift[:, px[:, 1], px[:, 0]].T
        keep = np.array([fits(q) for q in at], bool)
        xy, at = xy[keep], at[keep]
    n = len(xy)
    kinds_neg = np.where(rng.random(n) < cfg.hard_fraction, HARD_NEG, RANDOM_NEG)
    zlo, zhi = cfg.zoom
    zoom = np.exp(rng.uniform(np.log(zlo), np.log(zhi), n)) if zhi > zlo else np.full(n, zlo)
    neg_target = np.empty((n, 2))
    for i in range(n):
        placed = False
        if kinds_neg[i] == HARD_NEG:
            for _ in range(8):
                r = rng.uniform(*cfg.hard_offset) * zoom[i]
                a = rng.uniform(0, 2 * np.pi)
                q = np.round(at[i] - 0.5 + r * np.array([np.cos(a), np.sin(a)])) + 0.5
                if fits(q):
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
    xy, at, neg_target, kinds_neg, zoom = xy[keep], at[keep], neg_target[keep], kinds_neg[keep], zoom[keep]
    m = len(xy)
    return _Plan(
        optical=np.concatenate([xy, xy]),
        target=np.concatenate([at, neg_target]),
        labels=np.concatenate([np.ones(m, np.uint8), np.zeros(m, np.uint8)]),
        kinds=np.concatenate([np.full(m, POSITIVE, np.int8), kinds_neg.astype(np.int8)]),
        zoom=np.concatenate([zoom, zoom]),
        keypoints=m,
        valid_px=int(valid.sum()),
    )


def cut_patches(src: SourcePair, opt: np.ndarray, sar: np.ndarray, plan: _Plan, patch_size: int) -> np.ndarray:
    """(K, 2, P, P) uint8 patches for a plan."""
    from geomatch.pipeline.patches import sample_zoomed

    lin = np.eye(2) if src.affine is None else src.affine[:, :2]
    a = sample_zoomed(opt, plan.optical, patch_size, plan.zoom)
    b = sample_zoomed(sar, _to_target(src.affine, plan.target), patch_size, plan.zoom, linear=lin)
    pairs = np.stack([a, b], axis=1) * 255.0
    return np.clip(np.round(pairs), 0, 255).astype(np.uint8)


def _file_names(split: str, layout: str) -> tuple[str, str]:
    if layout == "vis-nir":
        stem = {"train": VIS_NIR_TRAIN, "val": f"{VIS_NIR_TRAIN}_val"}.get(split) or split.split(":", 1)[1]
    else:
        stem = split if split in ("train", "val") else "test_" + split.split(":", 1)[1]
    return f"{stem}.npy", f"{stem}_label.npy"


# ---- the build ---------------------------------------------------------------------------------------------------


def build_dataset(sources: list[SourcePair], out_dir: str | Path, config: BuildConfig | None = None,
                  layout: str = "dir", overwrite: bool = False, progress: bool = False) -> dict:
    """Cut every source into patch pairs and write the split files and ``manifest.json``; returns the manifest.

    Sources without a ``split`` are given one here (train or val, see :mod:`geomatch.training.splits`).
    """
    from tqdm import tqdm

    cfg = config or BuildConfig()
    cfg.check()
    if layout not in ("dir", "vis-nir"):
        raise InputError(f"layout '{layout}': use dir or vis-nir")
    if not sources:
        raise InputError("no image pairs given; use --pair OPTICAL SAR, --pairs FILE or --preset vis-nir --source DIR")
    out = Path(out_dir)
    # The split names are known before any image is read (every split asked for is filled), so an existing
    # dataset is refused before the slow part.
    asked = free_fractions(sum(s.split is None for s in sources), cfg.val_fraction)
    named = {s.split for s in sources if s.split is not None} | {sp for sp, f in asked.items() if f > 0}
    splits = sorted(named, key=lambda s: (s != "train", s != "val", s))
    files = {sp: _file_names(sp, layout) for sp in splits}
    targets = [out / f for pair in files.values() for f in pair] + [out / "manifest.json"]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]} exists; use --overwrite to replace the dataset in {out}")
    out.mkdir(parents=True, exist_ok=True)
    for target in targets:  # what a killed earlier build left behind (patch sets run to gigabytes)
        remove_stale_partials(target)

    plans: list[_Plan] = []
    for i, src in enumerate(tqdm(sources, desc="planning", unit="image", disable=not progress)):
        opt, sar, vo, vs = read_pair(src)
        plan = plan_source(src, opt, sar, vo, vs, cfg, np.random.default_rng([cfg.seed, i]))
        plans.append(plan)
        if plan.keypoints == 0:
            log.warning("%s: no usable keypoint (textureless, or no overlap with %s)", src.optical, src.sar)
    assign_free_images(sources, [pl.valid_px for pl in plans], cfg.val_fraction, cfg.seed)

    manifest_splits = _write_splits(sources, plans, splits, files, out, cfg, progress)

    from geomatch import __version__

    manifest = {
        "format": "geomatch-patches",
        "format_version": 1,
        "layout": layout,
        "geomatch": __version__,
        "config": {**asdict(cfg), "hard_offset": list(cfg.hard_offset), "zoom": list(cfg.zoom)},
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
    write_atomic(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _write_splits(sources: list[SourcePair], plans: list[_Plan], splits: list[str], files: dict, out: Path,
                  cfg: BuildConfig, progress: bool) -> dict:
    """Cut every planned pair into its split's memory-mapped file; returns the manifest's split counts.

    All split files are renamed into place together at the end (or all removed on failure), so a reader never
    sees a train file from this build beside a val file from the last.
    """
    from tqdm import tqdm

    p = cfg.patch_size
    manifest_splits: dict = {}
    with contextlib.ExitStack() as stack:
        writers = {}
        for sp in splits:
            idx = [i for i, s in enumerate(sources) if s.split == sp]
            total = sum(len(plans[i].labels) for i in idx)
            if total == 0:
                raise InputError(f"split {sp}: its source images gave no keypoints; lower --min-contrast or add images")
            img_name, lab_name = files[sp]
            tmp_img = stack.enter_context(atomic_output(out / img_name, check=False))
            tmp_lab = stack.enter_context(atomic_output(out / lab_name, check=False))
            arr = np.lib.format.open_memmap(tmp_img, mode="w+", dtype=np.uint8, shape=(total, 2, p, p))
            # One seeded permutation per split shuffles pairs across its images.
            perm = np.random.default_rng([cfg.seed, 11, splits.index(sp)]).permutation(total)
            writers[sp] = (arr, perm, np.empty(total, np.int64), [0], tmp_lab)
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
            arr, perm, labels, cursor, _ = writers[src.split]
            dest = perm[cursor[0]:cursor[0] + len(patches)]
            order = np.argsort(dest)  # ascending writes keep the memory map's page traffic sequential
            arr[dest[order]] = patches[order]
            labels[dest] = plan.labels
            cursor[0] += len(patches)
        for arr, _perm, labels, _cursor, tmp_lab in writers.values():
            arr.flush()
            np.save(tmp_lab, labels)
        writers.clear()
    return manifest_splits
