"""CFOG channels for a stack of images, and their correlation of patches against search windows, by FFT.

The representation (Ye et al., 2019) for every stage that uses it: the coarse stage computes it on its
overview (:mod:`geomatch.pipeline.coarse_surface`), the fine search's dense matchers once per tile image;
the ``cfog`` matcher plugin carries a differentiable PyTorch twin for patch-pair scoring (a test holds them
equal). Vectorised over a leading axis (a stack of patches is one pass, not a loop). NumPy/SciPy only, so
the coarse stage does not import torch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

N_ORIENT = 8
SIGMA = 1.0  # spatial smoothing of the channels, pixels of the image they are computed on


def erosion_px(sigma: float = SIGMA) -> int:
    """How far inside the valid area the channels are defined: the smoothing's support plus the gradient's."""
    return int(math.ceil(2 * sigma)) + 2


def channels(img: np.ndarray, valid: np.ndarray, sigma: float = SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """(..., C, h, w) float32 channels of (..., h, w) images, zeroed outside each eroded valid area and
    zero-mean inside it; and that area (..., h, w).

    Per image: absolute directional derivatives at ``N_ORIENT`` orientations, smoothed in space and across
    orientation, divided by the per-pixel L2 norm plus a floor of a tenth of the image's median norm (so flat
    areas stay small instead of amplifying noise to unit length).
    """
    img = np.asarray(img, np.float32)
    valid = np.asarray(valid, bool)
    lead = img.shape[:-2]
    h, w = img.shape[-2:]
    x = img.reshape(-1, h, w)
    ok = valid.reshape(-1, h, w)
    n = len(x)
    cnt = ok.sum((1, 2))
    fill = np.where(cnt > 0, np.where(ok, x, 0).sum((1, 2)) / np.maximum(cnt, 1), 0.0).astype(np.float32)
    x = ndi.gaussian_filter(np.where(ok, x, fill[:, None, None]), (0, 0.7, 0.7))
    gy, gx = np.gradient(x, axis=(1, 2))
    th = np.pi * np.arange(N_ORIENT, dtype=np.float32) / N_ORIENT
    ch = np.abs(np.cos(th)[None, :, None, None] * gx[:, None] + np.sin(th)[None, :, None, None] * gy[:, None])
    ch = ndi.gaussian_filter(ch, (0, 0, sigma, sigma))
    # Across orientation, [1, 2, 1] with wrap-around: neighbouring bins share a little.
    ch = 0.5 * ch + 0.25 * (np.roll(ch, 1, 1) + np.roll(ch, -1, 1))
    norm = np.sqrt((ch * ch).sum(1))
    grow = 2 * erosion_px(sigma) + 1
    inner = ndi.minimum_filter(ok.astype(np.uint8), size=(1, grow, grow), mode="constant", cval=0).astype(bool)
    n_in = inner.sum((1, 2))
    med = np.array([np.median(norm[i][inner[i]]) if n_in[i] else 0.0 for i in range(n)], np.float32)
    floor = np.where(n_in > 0, 0.1 * med, 1e-6).astype(np.float32)
    ch /= norm[:, None] + floor[:, None, None, None] + 1e-12
    ch *= inner[:, None]
    mean = ch.sum((2, 3)) / np.maximum(n_in, 1)[:, None]
    ch -= mean[:, :, None, None] * inner[:, None]
    return ch.reshape(*lead, N_ORIENT, h, w).astype(np.float32, copy=False), inner.reshape(*lead, h, w)


def box_sums(x: np.ndarray, p: int) -> np.ndarray:
    """(N, W, W) -> (N, W-p+1, W-p+1): the sum over each p x p crop (integral image, float64)."""
    n, hh, ww = x.shape
    c = np.zeros((n, hh + 1, ww + 1))
    c[:, 1:, 1:] = x.cumsum(1, dtype=np.float64).cumsum(2)
    return c[:, p:, p:] - c[:, :-p, p:] - c[:, p:, :-p] + c[:, :-p, :-p]


def crop_correlation(patches: np.ndarray, windows: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Zero-mean normalised cross-correlation of each (C, P, P) patch with every (C, P, P) crop of its window.

    ``patches`` (N, C, P, P), ``windows`` (N, C, W, W) -> (N, W-P+1, W-P+1) in [-1, 1]; entry [i, y, x] is
    patch i against ``windows[i, :, y:y+P, x:x+P]``, the channels taken together as one vector. The numerator
    comes from one FFT product per channel (no wrap-around: only crops fully inside the window are kept), the
    crops' means and energies from integral images. A constant crop scores 0. Chunked over keypoints so the
    spectra stay a few tens of MB.
    """
    n, c, p, _ = patches.shape
    wsz = windows.shape[-1]
    g = wsz - p + 1
    size = sfft.next_fast_len(wsz, real=True)
    out = np.empty((n, g, g), np.float32)
    cp2 = c * p * p
    for a in range(0, n, chunk):
        pa = patches[a:a + chunk].astype(np.float32)
        wi = windows[a:a + chunk].astype(np.float32)
        pa = pa - pa.mean((1, 2, 3), keepdims=True)
        na = np.sqrt((pa * pa).sum((1, 2, 3)))
        spec = np.conj(sfft.rfft2(pa, s=(size, size), workers=1)) * sfft.rfft2(wi, s=(size, size), workers=1)
        num = sfft.irfft2(spec.sum(1), s=(size, size), workers=1)[:, :g, :g]
        s1 = box_sums(wi.sum(1), p)
        s2 = box_sums((wi * wi).sum(1), p)
        var = np.clip(s2 - s1 * s1 / cp2, 0.0, None)
        den = na[:, None, None] * np.sqrt(var)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(den > 1e-9, num / den, 0.0)
        out[a:a + chunk] = np.clip(r, -1.0, 1.0)
    return out
