"""The dataset build presets of ``geomatch dataset build``: ``vis-nir`` and ``optical-sar``.

- ``vis-nir``: the VIS-NIR registration folders (``country/`` aligned, the other categories warped by a known
  affine) as :class:`SourcePair` rows; the build splits ``country/`` into train and val.
- ``optical-sar``: the Sentinel-1/2 scenes of :mod:`geomatch.training.scene_files`, read by
  :mod:`geomatch.training.scenes`, split by place (:func:`geomatch.training.splits.split_scenes`) into train,
  val and ``test_optical-sar``, then cut by :func:`geomatch.training.build.build_dataset`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from geomatch.errors import InputError
from geomatch.fileio import write_atomic
from geomatch.training.build import VIS_NIR_TRAIN, BuildConfig, build_dataset
from geomatch.training.scene_files import DEFAULT_EXCLUDE
from geomatch.training.scenes import TRUSTED, left_out_reason, load_scene_pairs, tile_shifts
from geomatch.training.source_pairs import SourcePair, read_affine
from geomatch.training.splits import split_scenes

log = logging.getLogger(__name__)

TEST_NAME = "optical-sar"  # the test split's file: test_optical-sar.npy (the ``dir`` layout)


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


def build_optical_sar_patches(data_dir, out_dir, seed: int = 0, per_scene: int = 1000, val_fraction: float = 0.15,
                              test_fraction: float = 0.15, sources: tuple[str, ...] | None = None,
                              exclude: tuple[str, ...] = DEFAULT_EXCLUDE, config=None, overwrite: bool = False,
                              progress: bool = False, align: bool = True, tile_align: int = 0) -> dict:
    """Cut the scenes of ``data_dir`` into a patch dataset ``geomatch train --dataset OUT_DIR`` reads.

    Scenes are split by place (:func:`split_scenes`), then ``geomatch.training.build`` cuts them: up to
    ``per_scene`` detector keypoints per scene, each giving a positive (both patches at the keypoint) and a
    negative (hard: the SAR patch a few pixels off, ``config.hard_offset``; or random: at another keypoint).
    ``config`` (a BuildConfig) sets the rest; its ``max_points`` and ``seed`` are replaced by ``per_scene`` and
    ``seed``. Writes
    ``train.npy``, ``val.npy``, ``test_optical-sar.npy`` (+ ``_label.npy``) and ``manifest.json``, whose
    ``preset`` section lists the scenes of each split (val and test: whole places in no training split), pair
    counts per split and source, each scene's radiometry and alignment, a per-source ``alignment`` summary
    and the scenes ``left_out`` (a ``must_align`` source whose shift could not be established). ``sources``
    and ``exclude`` take source names or scene id starts. Returns the manifest.

    ``tile_align`` (px, 0: off): scenes at least twice that on each side get positives cut at their tiles' own
    residual shifts (:func:`~geomatch.training.scenes.tile_shifts`), none where a tile has no single shift; the
    manifest's ``scene_info`` records each scene's ``tile_alignment``.

    Speckle is not added here: ``geomatch.training.augment`` (``speckle_prob``) adds it during training.
    """
    loaded = load_scene_pairs(data_dir, sources, exclude, align=align)
    left_out = {p.scene_id: why for p in loaded if (why := left_out_reason(p))}
    for sid, why in left_out.items():
        log.warning("%s: left out, %s", sid, why)
    pairs = [p for p in loaded if p.scene_id not in left_out]
    if not pairs:
        raise InputError(f"--data-dir {data_dir}: every scene was left out for want of a measured alignment; "
                         "see the log, or pass --include with other sources")
    split = split_scenes(pairs, val_fraction, test_fraction, seed)
    cfg = replace(config or BuildConfig(), max_points=int(per_scene), seed=int(seed), val_fraction=float(val_fraction))
    tags = {"train": "train", "val": "val", "test": f"test:{TEST_NAME}"}
    build_sources = [
        SourcePair(Path(p.info["optical"][0]), Path(p.info["sar"]), split=tags[name], name=p.scene_id,
                   arrays=(p.optical, p.sar, p.valid, p.valid), local_shift=_tile_shifts(p, tile_align))
        for name, ps in split.items() for p in ps
    ]
    manifest = build_dataset(build_sources, out_dir, cfg, layout="dir", overwrite=overwrite, progress=progress)

    pairs_of = {s["name"]: s["pairs"] for s in manifest["sources"]}
    by_source: dict = {}
    for name, ps in split.items():
        for p in ps:
            cell = by_source.setdefault(name, {}).setdefault(p.source, {"scenes": 0, "pairs": 0})
            cell["scenes"] += 1
            cell["pairs"] += pairs_of.get(p.scene_id, 0)
    manifest["preset"] = {
        "name": "optical-sar",
        "data_dir": str(data_dir),
        "sources": sorted({p.source for p in pairs}),
        "excluded_sources": list(exclude or ()),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "split_by": "place (same place name or overlapping footprint), fractions of valid pixels",
        "scenes": {name: [p.scene_id for p in ps] for name, ps in split.items()},
        "places": {name: sorted({p.place for p in ps}) for name, ps in split.items()},
        "counts": by_source,
        "aligned": align,
        "tile_align_px": int(tile_align),
        "alignment": alignment_summary(loaded, left_out) if align else {},
        "left_out": left_out,
        "scene_info": {p.scene_id: {"source": p.source, "place": p.place, "shape": list(p.shape),
                                    "bounds_lonlat": p.bounds, **p.info} for p in loaded},
    }
    write_atomic(Path(out_dir) / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _tile_shifts(pair, tile: int) -> np.ndarray | None:
    """The scene's per-tile shift map when ``tile`` is on and the scene spans two tiles a side (recorded in its
    info), else None."""
    if tile <= 0 or min(pair.shape) < 2 * tile:
        return None
    shifts, record = tile_shifts(pair.optical, pair.valid, pair.sar, pair.valid, tile)
    pair.info["tile_alignment"] = record
    log.info("%s: %d of %d tiles without a single shift, %d moved (max %s px)", pair.scene_id,
             record["no_single_shift"], record["tiles"], record["moved"], record["max_px"])
    return shifts


def alignment_summary(pairs: list, left_out: dict) -> dict:
    """Per source: how many scenes had their residual shift measured, confirmed against the folder's own
    table, moved (and by how much), and left out."""
    out: dict = {}
    for p in pairs:
        rec = p.info["alignment"]
        cell = out.setdefault(p.source, {"scenes": 0, "measured": 0, "confirmed": 0, "shifted": 0,
                                         "left_out": 0, "applied_px": []})
        cell["scenes"] += 1
        cell[rec["status"]] = cell.get(rec["status"], 0) + 1
        cell["left_out"] += p.scene_id in left_out
        if rec["status"] in TRUSTED and rec["applied_shift_px"] != [0, 0]:
            cell["shifted"] += 1
            cell["applied_px"].append(float(np.hypot(*rec["applied_shift_px"])))
    for cell in out.values():
        moved = cell.pop("applied_px")
        cell["median_shift_px"] = round(float(np.median(moved)), 2) if moved else 0.0
        cell["max_shift_px"] = round(max(moved), 2) if moved else 0.0
    return out
