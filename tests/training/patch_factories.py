"""Tiny patch datasets in the published format, written into a test's tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi


def textures(n: int, size: int, rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    """(n, size, size) smooth random textures stretched to 0..255 (float)."""
    t = ndi.gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, sigma, sigma))
    t -= t.min(axis=(1, 2), keepdims=True)
    t /= t.max(axis=(1, 2), keepdims=True)
    return 255.0 * t


def learnable_pairs(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced pairs: a match is a texture and its contrast-reduced, noisy copy; a non-match two textures."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.array([1, 0], np.int64), n // 2 + 1)[:n]
    rng.shuffle(labels)
    optical = textures(n, size, rng)
    other = textures(n, size, rng)
    sar = np.where(labels[:, None, None] == 1, optical, other) * 0.6 + 50 + rng.normal(0, 8, (n, size, size))
    images = np.stack([optical, sar], axis=1).clip(0, 255).round().astype(np.uint8)
    return images, labels


def write_split(root: Path, images_name: str, labels_name: str, images: np.ndarray, labels: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / images_name, images)
    np.save(root / labels_name, labels)


def write_published(root: Path, layout: str, n_train: int = 64, n_test: int = 32, size: int = 32,
                    tests: tuple[str, ...] = ("field", "forest"), val_data: int = 0) -> Path:
    """Write a small dataset with the published file names of ``layout`` (vis-nir, os, sen1-2, dir)."""
    seed = 0

    def pairs(n):
        nonlocal seed
        seed += 1
        return learnable_pairs(n, size, seed)

    if layout == "vis-nir":
        write_split(root, "country.npy", "country_label.npy", *pairs(n_train))
        for name in tests:
            write_split(root, f"{name}.npy", f"{name}_label.npy", *pairs(n_test))
        if val_data:
            write_split(root, "val_data.npy", "val_label.npy", *pairs(val_data))
    elif layout == "os":
        write_split(root, "os_train_image.npy", "os_train_label.npy", *pairs(n_train))
        write_split(root, "os_test_image.npy", "os_test_label.npy", *pairs(n_test))
    elif layout == "sen1-2":
        write_split(root, "sne_train_image.npy", "sne_train_label.npy", *pairs(n_train))
        write_split(root, "sne_test_image.npy", "sne_test_label.npy", *pairs(n_test))
    elif layout == "dir":
        write_split(root, "train.npy", "train_label.npy", *pairs(n_train))
        write_split(root, "val.npy", "val_label.npy", *pairs(n_test))
        for name in tests:
            write_split(root, f"test_{name}.npy", f"test_{name}_label.npy", *pairs(n_test))
    else:
        raise ValueError(layout)
    return root
