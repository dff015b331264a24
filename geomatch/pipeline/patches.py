"""Patch sampling through a local linear map (rotation, scale) with bilinear interpolation.

Convention: patch pixel (r, c) of a ``size`` patch centred at (x, y) samples the image at
``(x, y) + linear @ (c - size // 2, r - size // 2)`` in pixel-centre coordinates (GDAL: the centre of array
pixel (i, j) is (j + 0.5, i + 0.5)). So with the identity and a centre on pixel (i, j) the patch is the
plain crop ``image[i - size//2 : i - size//2 + size, j - size//2 : j - size//2 + size]``: pixel (i, j)
sits at patch pixel (size//2, size//2), and no interpolation blurs it. Outside the array reads ``fill``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _as_linear(linear, n: int) -> np.ndarray:
    lin = np.eye(2) if linear is None else np.asarray(linear, dtype=np.float64)
    if lin.shape == (2, 2):
        return np.broadcast_to(lin, (n, 2, 2))
    if lin.shape != (n, 2, 2):
        raise ValueError(f"linear must be (2, 2) or ({n}, 2, 2), got {lin.shape}")
    return lin


def _is_plain_crop(centres: np.ndarray, lin: np.ndarray) -> bool:
    if not np.allclose(lin, np.eye(2), atol=1e-12, rtol=0):
        return False
    frac = centres - 0.5
    return bool(np.all(frac == np.round(frac)))


def sample_patches(image: np.ndarray, centres, size: int = 64, linear=None, fill: float = 0.0,
                   order: int = 1) -> np.ndarray:
    """(N, size, size) float32 patches of ``image`` at ``centres`` ((N, 2) x, y), grids mapped by ``linear``."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    n = len(centres)
    size = int(size)
    if n == 0:
        return np.empty((0, size, size), np.float32)
    lin = _as_linear(linear, n)
    half = size // 2
    if _is_plain_crop(centres, lin):
        # Integer crops: gather from a padded copy, exact and much faster than interpolation.
        pad = size + 1
        padded = np.pad(image.astype(np.float32, copy=False), pad, constant_values=fill)
        r0 = (np.round(centres[:, 1] - 0.5).astype(np.int64) - half + pad)
        c0 = (np.round(centres[:, 0] - 0.5).astype(np.int64) - half + pad)
        inside = (r0 >= 0) & (c0 >= 0) & (r0 + size <= padded.shape[0]) & (c0 + size <= padded.shape[1])
        out = np.full((n, size, size), fill, np.float32)
        k = np.arange(size)
        idx = np.nonzero(inside)[0]
        if len(idx):
            out[idx] = padded[(r0[idx, None] + k)[:, :, None], (c0[idx, None] + k)[:, None, :]]
        return out
    k = np.arange(size, dtype=np.float64) - half
    u, v = np.meshgrid(k, k)  # u: column offset, v: row offset
    grid = np.stack([u.ravel(), v.ravel()])  # (2, size*size) as (x, y)
    pts = np.einsum("nij,jk->nik", lin, grid) + centres[:, :, None]  # (n, 2, size*size)
    coords = np.stack([pts[:, 1] - 0.5, pts[:, 0] - 0.5])  # (row, col) index coordinates
    vals = ndi.map_coordinates(image.astype(np.float32, copy=False), coords.reshape(2, -1), order=order,
                               mode="constant", cval=fill, prefilter=False)
    return vals.reshape(n, size, size).astype(np.float32, copy=False)


def antialias_sigma(zoom: float) -> float:
    """Gaussian sigma (image pixels) that keeps a grid of ``zoom`` image pixels per sample free of aliasing."""
    return 0.5 * float(np.sqrt(zoom * zoom - 1.0)) if zoom > 1.0 else 0.0


def sample_zoomed(image: np.ndarray, centres, size: int, zoom, linear=None, levels: int = 8) -> np.ndarray:
    """Patches sampled at ``zoom`` image pixels per patch pixel (a scalar, or one per centre), through ``linear``.

    Zooms above 1 see the image Gaussian-filtered first (:func:`antialias_sigma`), as a coarser sensor would;
    per-centre zooms share one filtered copy per band of ``levels`` log-spaced bands, so a batch of any size
    filters the image at most ``levels`` times.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    n = len(centres)
    z = np.broadcast_to(np.asarray(zoom, dtype=np.float64), (n,))
    lin = _as_linear(linear, n)
    if n == 0 or np.allclose(z, 1.0, rtol=0, atol=1e-9):
        return sample_patches(image, centres, size, lin)
    out = np.empty((n, int(size), int(size)), np.float32)
    logz = np.log(z)
    edges = np.linspace(logz.min(), logz.max() + 1e-12, levels + 1)
    band = np.clip(np.searchsorted(edges, logz, side="right") - 1, 0, levels - 1)
    for b in np.unique(band):
        sel = np.nonzero(band == b)[0]
        sigma = antialias_sigma(float(np.exp(logz[sel].mean())))
        img = ndi.gaussian_filter(np.asarray(image, np.float32), sigma) if sigma > 0.05 else image
        out[sel] = sample_patches(img, centres[sel], size, lin[sel] * z[sel, None, None])
    return out
