"""The coarse stage's score surface: masked FFT correlation of CFOG channels over shift, per rotation/scale.

Representation: CFOG-like dense channels (Ye et al., 2019; :mod:`geomatch.pipeline.cfog_features`): absolute
directional derivatives, smoothed in space and across orientation, L2-normalised per pixel. The absolute
value makes them blind to contrast reversal (vegetation is dark in VIS and bright in NIR; SAR and optical
disagree in sign everywhere), and the per-pixel normalisation makes them blind to the local gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from geomatch.pipeline.cfog_features import SIGMA, channels


def downsample(img: np.ndarray, valid: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Block means over valid pixels; a block is valid when it is entirely valid."""
    img = np.asarray(img, np.float64)
    valid = np.asarray(valid, bool)
    if f == 1:
        return np.where(valid, img, 0.0), valid.copy()
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    v = valid[:h, :w].reshape(h // f, f, w // f, f)
    x = np.where(valid, img, 0.0)[:h, :w].reshape(h // f, f, w // f, f)
    cnt = v.sum((1, 3))
    mean = x.sum((1, 3)) / np.maximum(cnt, 1)
    return mean, cnt == f * f


class Correlator:
    """Masked, channel-summed normalised cross-correlation of a fixed reference against moving images (FFT).

    Padding covers only ``max_shift`` (not the full size): shifts beyond it wrap around and are masked out.
    """

    def __init__(self, ref: np.ndarray, ref_mask: np.ndarray, max_shift: float):
        c, h, w = ref.shape
        pad = int(math.ceil(max_shift)) + 2
        self.shape = (sfft.next_fast_len(h + pad, real=True), sfft.next_fast_len(w + pad, real=True))
        ref = ref.astype(np.float32)
        self.fr = self._f(ref)
        self.fr2 = self._f((ref * ref).sum(0))
        self.fm = self._f(ref_mask.astype(np.float32))
        self.area = ref_mask.sum()
        uy = np.fft.fftfreq(self.shape[0], 1.0 / self.shape[0])
        ux = np.fft.fftfreq(self.shape[1], 1.0 / self.shape[1])
        self.uv = np.stack(np.meshgrid(uy, ux, indexing="ij"))  # (uy, ux) of each cell

    def _f(self, x: np.ndarray) -> np.ndarray:
        return sfft.rfft2(x, s=self.shape, axes=(-2, -1), workers=1)

    def _i(self, x: np.ndarray) -> np.ndarray:
        return sfft.irfft2(x, s=self.shape, workers=1)

    def __call__(self, mov: np.ndarray, mov_mask: np.ndarray) -> np.ndarray:
        """ncc[u] for shifts u = (uy, ux): ref(p) against mov(p + u), as an array indexed [uy % H, ux % W]."""
        mov = mov.astype(np.float32)
        fmm = self._f(mov_mask.astype(np.float32))
        num = self._i((np.conj(self.fr) * self._f(mov)).sum(0))
        e_ref = self._i(np.conj(self.fr2) * fmm)
        e_mov = self._i(np.conj(self.fm) * self._f((mov * mov).sum(0)))
        overlap = self._i(np.conj(self.fm) * fmm)
        with np.errstate(divide="ignore", invalid="ignore"):
            ncc = num / np.sqrt(np.clip(e_ref, 1e-6, None) * np.clip(e_mov, 1e-6, None))
        min_overlap = 0.25 * min(self.area, mov_mask.sum())
        ncc[overlap < max(min_overlap, 16)] = -np.inf
        return ncc


@dataclass(eq=False)
class Level:
    """One overview level of a pair: the optical descriptors and the raw SAR view they are correlated with."""

    ref: np.ndarray  # (C, h, w) optical descriptors
    ref_inner: np.ndarray  # where they are defined
    sar: np.ndarray  # SAR view, block means
    sar_valid: np.ndarray
    correlators: dict = field(default_factory=dict)  # padding -> Correlator

    def correlator(self, max_shift: float) -> Correlator:
        pad = int(math.ceil(max_shift))
        if pad not in self.correlators:
            self.correlators[pad] = Correlator(self.ref, self.ref_inner, pad)
        return self.correlators[pad]


def make_level(optical, optical_valid, sar, sar_valid, f: int) -> Level:
    o_img, o_ok = downsample(optical, optical_valid, f)
    s_img, s_ok = downsample(sar, sar_valid, f)
    ref, inner = channels(o_img, o_ok, SIGMA)
    return Level(ref, inner, s_img, s_ok)


def similarity(rot_deg: float, scale: float) -> np.ndarray:
    th = math.radians(rot_deg)
    return scale * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])


def _warp(img: np.ndarray, valid: np.ndarray, lin: np.ndarray, centre_xy: np.ndarray, out_shape):
    """Resample the moving image at q = lin (p - c) + c, so it lies in the reference frame (index coords)."""
    # ndimage works in (row, col); swap axes of the 2x2 map and the centre.
    m = lin[::-1, ::-1]
    c = centre_xy[::-1]
    offset = c - m @ c
    out = ndi.affine_transform(img, m, offset=offset, output_shape=out_shape, order=1, mode="constant", cval=0.0)
    ok = ndi.affine_transform(valid.astype(np.float32), m, offset=offset, output_shape=out_shape, order=1,
                              mode="constant", cval=0.0) > 0.999
    return out, ok


def _parabola(sm: float, s0: float, sp: float) -> float:
    den = sm - 2 * s0 + sp
    if not (np.isfinite(den) and den < 0):
        return 0.0
    return float(np.clip(0.5 * (sm - sp) / den, -0.5, 0.5))


def score_surface(level: Level, lin: np.ndarray, radius: float, around=None, excl: float = 3.0,
                  pad: float | None = None):
    """Warp the SAR view of ``level`` by ``lin`` about its centre and correlate it with the optical descriptors.

    Shifts are limited to the disk of ``radius`` (overview pixels), and to the disk ``around`` = (centre (ux, uy),
    radius) when given. Returns (u (ux, uy) sub-pixel and clipped to the disk, peak, runner-up farther than
    ``excl`` from it, prominence of the peak over the rest of the surface in standard deviations), or None
    when the warped SAR view leaves too little valid overlap. ``pad`` (>= radius) sizes the FFT, so that one
    correlator serves several radii.
    """
    h, w = level.ref_inner.shape
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    warped, ok = _warp(level.sar, level.sar_valid, lin, centre, (h, w))
    if ok.sum() < 64:
        return None
    desc, inner = channels(warped, ok, SIGMA)
    corr = level.correlator(max(radius, pad or 0.0))
    uv = corr.uv
    allowed = (uv[0] ** 2 + uv[1] ** 2) <= radius**2
    if around is not None:
        (cx, cy), r = around
        allowed &= np.hypot(uv[1] - cx, uv[0] - cy) <= r
    s = np.where(allowed, corr(desc, inner), -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(s)), s.shape)
    best = float(s[iy, ix])
    if not np.isfinite(best):
        return None
    hgt, wid = s.shape
    dy = _parabola(s[(iy - 1) % hgt, ix], best, s[(iy + 1) % hgt, ix])
    dx = _parabola(s[iy, (ix - 1) % wid], best, s[iy, (ix + 1) % wid])
    u = np.array([uv[1, iy, ix] + dx, uv[0, iy, ix] + dy])
    if np.hypot(*u) > radius:  # the sub-pixel step may not leave the range
        u *= radius / np.hypot(*u)
    far = np.hypot(uv[0] - uv[0, iy, ix], uv[1] - uv[1, iy, ix]) > excl
    second = float(np.max(np.where(far, s, -np.inf)))
    rest = s[far & np.isfinite(s)]
    z = float((best - rest.mean()) / (rest.std() + 1e-12)) if rest.size > 8 else 0.0
    return u, best, second, z
