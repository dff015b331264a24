"""Synthetic pairs for the matching tests: a textured 'optical' image and a 'SAR-like' twin with known geometry."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def textured(shape=(256, 256), seed=0) -> np.ndarray:
    """Multi-scale smoothed noise in [0, 1]: texture at every scale, no two places alike."""
    rng = np.random.default_rng(seed)
    img = sum(w * ndi.gaussian_filter(rng.standard_normal(shape), s) for s, w in ((1.5, 0.5), (4, 2.0), (12, 6.0)))
    img -= img.min()
    return (img / img.max()).astype(np.float32)


def warp_gdal(img: np.ndarray, affine: np.ndarray, out_shape, order: int = 3):
    """out(q) = img(A^-1 q) in GDAL pixel-centre coordinates, i.e. the view in which optical p sits at A p."""
    a = np.vstack([np.asarray(affine, float), [0, 0, 1]])
    inv = np.linalg.inv(a)
    rows, cols = np.mgrid[0:out_shape[0], 0:out_shape[1]]
    q = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5, np.ones(rows.size)])
    p = inv @ q
    coords = np.stack([p[1] - 0.5, p[0] - 0.5])
    out = ndi.map_coordinates(img.astype(np.float64), coords, order=order, mode="constant", cval=0.0)
    inside = ndi.map_coordinates(np.ones(img.shape), coords, order=0, mode="constant", cval=0.0)
    return out.reshape(out_shape), inside.reshape(out_shape) > 0.5


def sar_like(img: np.ndarray, affine=None, out_shape=None, seed=1, looks=6.0, gamma=2.2):
    """A SAR-looking twin: warped by ``affine``, nonlinear radiometry, multiplicative speckle, a little blur."""
    rng = np.random.default_rng(seed)
    affine = np.array([[1.0, 0, 0], [0, 1.0, 0]]) if affine is None else np.asarray(affine, float)
    out_shape = img.shape if out_shape is None else out_shape
    base, valid = warp_gdal(img, affine, out_shape)
    sar = np.clip(base, 0, 1) ** gamma * rng.gamma(looks, 1.0 / looks, size=out_shape)
    sar = ndi.gaussian_filter(sar, 0.6)
    sar = np.where(valid, sar / np.percentile(sar[valid], 99.5), 0.0)
    valid &= ndi.binary_erosion(valid, iterations=2)
    return np.clip(sar, 0, 1).astype(np.float32), valid


def similarity(rot_deg: float, scale: float, shift, centre) -> np.ndarray:
    """Affine q = s R (p - c) + c + shift."""
    th = np.radians(rot_deg)
    lin = scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    c = np.asarray(centre, float)
    return np.hstack([lin, (c + np.asarray(shift, float) - lin @ c)[:, None]])

