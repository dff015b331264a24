"""Patch datasets in the published format, memory-mapped.

Every split is a pair of ``.npy`` files: images ``(N, 2, P, P)`` uint8 (index 0 optical/VIS, 1 NIR/SAR)
and labels ``(N,)`` with 1 = match, 0 = non-match. Image arrays are opened with ``mmap_mode="r"``, so a
600,000-pair file is paged in batch by batch instead of being read into RAM.

Layouts (the file names the seed and the published archives use; every image file has a ``_label`` twin):

- ``vis-nir``: train ``country.npy``; tests ``field``, ``forest``, ``indoor``, ``mountain``, ``oldbuilding``,
  ``street``, ``urban``, ``water`` (``<name>.npy``, ``<name>_label.npy``; whichever exist); the seed's validation
  ``val_data.npy`` / ``val_label.npy`` (8 blocks of pairs drawn from the test subsets); a clean validation
  ``country_val.npy`` / ``country_val_label.npy`` (written by ``geomatch dataset build``, split by source image).
- ``os``: ``os_train_image.npy`` / ``os_train_label.npy``, test ``os_test_image.npy`` / ``os_test_label.npy``.
- ``sen1-2``: ``sne_train_image.npy`` / ``sne_train_label.npy``, test ``sne_test_image.npy`` /
  ``sne_test_label.npy`` (the "sne" spelling is the published one).
- ``dir`` (``geomatch dataset build`` without a preset): ``train.npy``, ``val.npy``, ``test_<name>.npy``.

A folder given as ``--dataset DIR`` is recognised by the files in it (any of the four layouts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geomatch.errors import InputError

log = logging.getLogger(__name__)

VIS_NIR_TESTS = ("field", "forest", "indoor", "mountain", "oldbuilding", "street", "urban", "water")
NAMED = ("vis-nir", "os", "sen1-2")

# layout -> (train (images, labels), seed validation or None, clean validation or None, fixed tests)
_FILES = {
    "vis-nir": (
        ("country.npy", "country_label.npy"),
        ("val_data.npy", "val_label.npy"),
        ("country_val.npy", "country_val_label.npy"),
        {name: (f"{name}.npy", f"{name}_label.npy") for name in VIS_NIR_TESTS},
    ),
    "os": (("os_train_image.npy", "os_train_label.npy"), None, None,
           {"os_test": ("os_test_image.npy", "os_test_label.npy")}),
    "sen1-2": (("sne_train_image.npy", "sne_train_label.npy"), None, None,
               {"sne_test": ("sne_test_image.npy", "sne_test_label.npy")}),
    "dir": (("train.npy", "train_label.npy"), None, ("val.npy", "val_label.npy"), {}),
}  # fmt: skip

LAYOUT_HELP = {
    "vis-nir": "country.npy + country_label.npy for training; test subsets <name>.npy + <name>_label.npy "
    f"for {', '.join(VIS_NIR_TESTS)}; optional val_data.npy + val_label.npy",
    "os": "os_train_image.npy + os_train_label.npy, os_test_image.npy + os_test_label.npy",
    "sen1-2": "sne_train_image.npy + sne_train_label.npy, sne_test_image.npy + sne_test_label.npy ('sne' spelling)",
    "dir": "train.npy + train_label.npy, optional val.npy + val_label.npy, test_<name>.npy + test_<name>_label.npy",
}


@dataclass
class PatchSet:
    """One split: memory-mapped images (N, 2, P, P) and in-memory labels (N,).

    ``rows`` makes a view of some rows of the file (a carved validation split) without copying images.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    path: Path | None = None
    blocks: int = 1  # the seed scores val_data.npy as the mean FPR95 of 8 equal blocks
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def patch_size(self) -> int:
        return int(self.images.shape[-1])

    def counts(self) -> dict:
        pos = int(np.count_nonzero(self.labels == 1))
        return {"pairs": len(self), "positives": pos, "negatives": len(self) - pos}

    def subset(self, index: np.ndarray, name: str) -> PatchSet:
        """A view of rows ``index`` (sorted, so memory-mapped reads stay in file order)."""
        index = np.sort(np.asarray(index))
        rows = index if self.rows is None else self.rows[index]
        return PatchSet(name, self.images, self.labels[index], self.path, 1, rows)

    def batch(self, index: np.ndarray) -> np.ndarray:
        """Images of rows ``index`` (relative to this split) as an in-memory array."""
        index = np.asarray(index)
        if self.rows is not None:
            index = self.rows[index]
        return np.asarray(self.images[index])


@dataclass
class PatchDataset:
    name: str  # vis-nir | os | sen1-2 | dir
    root: Path
    train: PatchSet | None
    seed_val: PatchSet | None  # the split the seed selects on (may be drawn from the tests)
    clean_val: PatchSet | None  # a validation split that shares nothing with the tests
    tests: dict[str, PatchSet]

    @property
    def missing_tests(self) -> list[str]:
        return [n for n in VIS_NIR_TESTS if n not in self.tests] if self.name == "vis-nir" else []

    def describe(self) -> dict:
        d = {"name": self.name, "root": str(self.root)}
        for key in ("train", "seed_val", "clean_val"):
            s = getattr(self, key)
            d[key] = s.counts() if s is not None else None
        d["tests"] = {k: v.counts() for k, v in self.tests.items()}
        return d


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc}); write it with numpy.save") from exc


def _open_pair(root: Path, images_name: str, labels_name: str, name: str, layout: str) -> PatchSet:
    ipath, lpath = root / images_name, root / labels_name
    for p in (ipath, lpath):
        if not p.is_file():
            raise InputError(f"{p}: file not found; the {layout} layout expects {LAYOUT_HELP[layout]} in {root}")
    images = _load_npy(ipath, mmap=True)
    labels = _load_npy(lpath, mmap=False)
    if images.ndim != 4 or images.shape[1] != 2 or images.shape[2] != images.shape[3]:
        raise InputError(f"{ipath}: expected image pairs shaped (N, 2, P, P), got {images.shape}")
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != images.shape[0]:
        raise InputError(f"{lpath}: {labels.shape[0]} labels for {images.shape[0]} image pairs in {ipath.name}")
    uniq = np.unique(labels)
    if not np.isin(uniq, (0, 1)).all():
        raise InputError(f"{lpath}: labels must be 0 (non-match) or 1 (match), found {uniq[:6].tolist()}")
    if images.dtype != np.uint8:
        # The seed divides by 255 whatever the dtype; say so rather than silently accept [0, 1] floats.
        log.warning("%s: dtype %s, expected uint8; values are divided by 255 as the seed does", ipath, images.dtype)
    return PatchSet(name, images, labels.astype(np.int64), ipath)


def detect_layout(root: Path) -> str:
    for layout, (train, *_rest) in _FILES.items():
        if (root / train[0]).is_file():
            return layout
    for layout in ("os", "sen1-2"):
        if any((root / f[0]).is_file() for f in _FILES[layout][3].values()):
            return layout
    if any(root.glob("test_*.npy")):
        return "dir"
    if any((root / f"{n}.npy").is_file() for n in VIS_NIR_TESTS):
        return "vis-nir"
    raise InputError(
        f"{root}: no patch dataset found; expected one of these layouts: "
        + "; ".join(f"{k}: {v}" for k, v in LAYOUT_HELP.items())
    )


def resolve(dataset: str, data_dir: str | Path | None = None) -> tuple[str, Path]:
    """Map ``--dataset``/``--data-dir`` to (layout, folder). Named datasets default to ``data/<name>``."""
    if dataset in NAMED:
        root = Path(data_dir) if data_dir else Path("data") / dataset
        if not root.is_dir():
            raise InputError(f"{root}: dataset folder not found; give --data-dir with {LAYOUT_HELP[dataset]}")
        return dataset, root
    root = Path(dataset)
    if data_dir and not root.is_absolute():
        root = Path(data_dir) / root
    if not root.is_dir():
        raise InputError(
            f"--dataset {dataset}: not one of {', '.join(NAMED)} and not a folder; "
            "give a dataset name or a folder written by `geomatch dataset build`"
        )
    return detect_layout(root), root


def load_dataset(dataset: str, data_dir: str | Path | None = None, need_train: bool = True) -> PatchDataset:
    """Open a patch dataset; splits that are absent are None (tests: only those present)."""
    layout, root = resolve(dataset, data_dir)
    train_f, seed_f, clean_f, tests_f = _FILES[layout]
    train = None
    if need_train or (root / train_f[0]).is_file():
        train = _open_pair(root, *train_f, "train", layout)
    seed_val = clean_val = None
    if seed_f and (root / seed_f[0]).is_file():
        seed_val = _open_pair(root, *seed_f, "val_data", layout)
        if len(seed_val) % 8 == 0:
            seed_val.blocks = 8
    if clean_f and (root / clean_f[0]).is_file():
        clean_val = _open_pair(root, *clean_f, "val", layout)
    if layout == "dir":
        tests_f = {
            p.name[5:-4]: (p.name, p.name[:-4] + "_label.npy")
            for p in sorted(root.glob("test_*.npy"))
            if not p.name.endswith("_label.npy")
        }
    tests = {name: _open_pair(root, *files, name, layout) for name, files in tests_f.items()
             if (root / files[0]).is_file()}  # fmt: skip
    if layout in ("os", "sen1-2") and not tests and not need_train:
        raise InputError(f"{root}: no test file; the {layout} layout expects {LAYOUT_HELP[layout]}")
    if train is not None:
        sizes = {s.patch_size for s in (train, seed_val, clean_val, *tests.values()) if s is not None}
        if len(sizes) > 1:
            raise InputError(f"{root}: splits have different patch sizes {sorted(sizes)}; rebuild them alike")
    return PatchDataset(layout, root, train, seed_val, clean_val, tests)


def carve_validation(train: PatchSet, fraction: float, seed: int, max_pairs: int | None = None
                     ) -> tuple[PatchSet, PatchSet]:
    """Split a seeded random ``fraction`` of the training rows off as validation.

    Rows are split, not source images: the published files do not say which image a pair came from
    (and the OS pairs share source images between train and test, spec §6.1). ``dataset build`` output
    carries a validation file split by source image instead, and that is used when present.
    """
    n = len(train)
    n_val = int(round(n * fraction))
    if max_pairs:
        n_val = min(n_val, max_pairs)
    if n_val < 2 or n - n_val < 2:
        raise InputError(f"{train.path}: {n} pairs are too few to carve a validation split of {fraction:.0%}")
    perm = np.random.default_rng(seed).permutation(n)
    return train.subset(perm[n_val:], "train"), train.subset(perm[:n_val], "val")
