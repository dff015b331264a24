"""Coarse stage: an initial optical -> SAR-view transform, found on a downsampled overview of the overlap.

Why: a local search radius of a dozen pixels cannot absorb a 100-pixel shift or a 15-degree rotation. This
stage searches shift (by FFT correlation), rotation and scale (by brute force over ``cfg``'s ranges) on a
modality-robust representation, so the fine search starts close and samples its patches through the found
rotation and scale.

Representation: CFOG-like dense channels (Ye et al., 2019): absolute directional derivatives at
``N_ORIENT`` orientations, smoothed in space and across orientation, L2-normalised per pixel. The absolute
value makes them blind to contrast reversal (vegetation is dark in VIS and bright in NIR; SAR and optical
disagree in sign everywhere), and the per-pixel normalisation makes them blind to the local gain.

Coordinates: inputs are overview arrays in which one pixel spans ``scale`` full-resolution pixels (GDAL
corner convention, so a corner coordinate times ``scale`` is the full-resolution coordinate). The returned
affine maps full-resolution optical pixel coordinates to full-resolution SAR-view pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

N_ORIENT = 8
SIGMA = 1.0  # spatial smoothing of the descriptor channels, overview pixels
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass
class Initial:
    affine: np.ndarray  # (2, 3): optical full-resolution pixel coords -> SAR-view pixel coords
    score: float  # correlation of the descriptors at the chosen transform (0 when not estimated)
    method: str  # how it was obtained, in words (identity fallbacks say why)
    details: dict = field(default_factory=dict)  # rotation_deg, scale, shift_px, confidence, ...


def _downsample(img: np.ndarray, valid: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
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


def descriptors(img: np.ndarray, valid: np.ndarray, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(C, h, w) float32 CFOG-like channels, zeroed outside the (eroded) valid area and zero-mean inside it."""
    fill = img[valid].mean() if valid.any() else 0.0
    x = ndi.gaussian_filter(np.where(valid, img, fill).astype(np.float32), 0.7)
    gy, gx = np.gradient(x)
    th = np.pi * np.arange(N_ORIENT, dtype=np.float32) / N_ORIENT
    ch = np.abs(np.cos(th)[:, None, None] * gx + np.sin(th)[:, None, None] * gy)
    ch = ndi.gaussian_filter(ch, (0, sigma, sigma))
    # Across orientation, [1, 2, 1] with wrap-around: neighbouring bins share a little.
    ch = 0.5 * ch + 0.25 * (np.roll(ch, 1, 0) + np.roll(ch, -1, 0))
    norm = np.sqrt((ch * ch).sum(0))
    grow = 2 * (int(math.ceil(2 * sigma)) + 2) + 1
    inner = ndi.minimum_filter(valid.astype(np.uint8), size=grow, mode="constant", cval=0).astype(bool)
    floor = 0.1 * np.median(norm[inner]) if inner.any() else 1e-6
    ch /= norm + floor + 1e-12
    ch *= inner
    if inner.any():
        ch -= (ch.sum((1, 2)) / inner.sum())[:, None, None] * inner
    return ch, inner


class _Correlator:
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


def _shift_window(shape: tuple[int, int], max_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Shift values along each axis of the correlation array, and a mask of those within max_shift."""
    uy = np.fft.fftfreq(shape[0], 1.0 / shape[0])
    ux = np.fft.fftfreq(shape[1], 1.0 / shape[1])
    allowed = (uy[:, None] ** 2 + ux[None, :] ** 2) <= max_shift**2
    return np.stack(np.meshgrid(uy, ux, indexing="ij")), allowed


def _parabola(sm: float, s0: float, sp: float) -> float:
    den = sm - 2 * s0 + sp
    if not (np.isfinite(den) and den < 0):
        return 0.0
    return float(np.clip(0.5 * (sm - sp) / den, -0.5, 0.5))


def _peak(ncc: np.ndarray, allowed: np.ndarray, uv: np.ndarray, excl: float):
    """Best allowed shift (sub-pixel), its value, and the best value farther than ``excl`` from it."""
    s = np.where(allowed, ncc, -np.inf)
    i = int(np.argmax(s))
    iy, ix = np.unravel_index(i, s.shape)
    best = float(s[iy, ix])
    if not np.isfinite(best):
        return np.zeros(2), -np.inf, -np.inf, 0.0
    hgt, wid = s.shape
    dy = _parabola(s[(iy - 1) % hgt, ix], best, s[(iy + 1) % hgt, ix])
    dx = _parabola(s[iy, (ix - 1) % wid], best, s[iy, (ix + 1) % wid])
    u = np.array([uv[1, iy, ix] + dx, uv[0, iy, ix] + dy])  # (ux, uy)
    far = np.hypot(uv[0] - uv[0, iy, ix], uv[1] - uv[1, iy, ix]) > excl
    second = float(np.max(np.where(far, s, -np.inf)))
    rest = s[far & np.isfinite(s)]
    z = float((best - rest.mean()) / (rest.std() + 1e-12)) if rest.size > 8 else 0.0
    return u, best, second, z


def _similarity(rot_deg: float, scale: float) -> np.ndarray:
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


def _values(lo: float, hi: float, step: float) -> np.ndarray:
    if hi <= lo or step <= 0:
        return np.array([lo])
    n = int(math.floor((hi - lo) / step + 1e-9))
    vals = lo + step * np.arange(n + 1)
    return vals if math.isclose(vals[-1], hi) else np.append(vals, hi)


def _scales(cfg) -> np.ndarray:
    sr = tuple(cfg.scale_range) or (1.0,)
    if len(sr) == 1:
        return np.array([float(sr[0])])
    if len(sr) == 2:
        lo, hi = sorted(map(float, sr))
        # Geometric steps: a 5 % step means the same at 0.85 as at 1.15.
        n = max(1, int(math.ceil(math.log(hi / lo) / math.log1p(getattr(cfg, "scale_step", 0.04)))))
        return np.exp(np.linspace(math.log(lo), math.log(hi), n + 1))
    return np.array(sorted(map(float, sr)))


def _search(ref, ref_mask, mov_img, mov_valid, rots, scales, max_shift, sigma, near=None, near_radius=0.0):
    """Try every (rotation, scale); return the best (rot, scale, u, ncc, runner-up) and how many were tried.

    ``near`` (ux, uy) restricts the shift to within ``near_radius`` of it (a refinement pass)."""
    h, w = ref_mask.shape
    corr = _Correlator(ref, ref_mask, max_shift)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    uv, allowed = _shift_window(corr.shape, max_shift)
    if near is not None:
        allowed &= np.hypot(uv[1] - near[0], uv[0] - near[1]) <= near_radius
    best = None
    tried = 0
    for rot in rots:
        for sc in scales:
            warped, ok = _warp(mov_img, mov_valid, _similarity(rot, sc), centre, (h, w))
            if ok.sum() < 64:
                continue
            desc, inner = descriptors(warped, ok, sigma)
            u, val, second, z = _peak(corr(desc, inner), allowed, uv, excl=max(3.0, 3 * sigma))
            tried += 1
            if best is None or val > best[3]:
                best = (float(rot), float(sc), u, val, second, z)
    return best, tried


def _refine_levels(f1: int, f2: int, n: int) -> list[tuple[int, int]]:
    """(factor, points per axis) of the refinement passes: f2, then f2 / 2 (fewer, finer steps)."""
    out = [(f2, 5)] if n >= 1 else []
    if n >= 2 and f2 >= 2:
        out.append((f2 // 2, 3))
    return out


def _pyramid_factors(shape, f: int) -> tuple[int, int]:
    """Search factor (coarser, cheap) and refinement factor for an overview of ``shape``."""
    f1 = 2 * f
    return (f1, f) if min(shape) // f1 >= 64 else (f, f)


def estimate_initial(optical: np.ndarray, optical_valid: np.ndarray, sar: np.ndarray, sar_valid: np.ndarray,
                     cfg, scale: float = 1.0) -> Initial:
    """Initial transform optical -> SAR view (full-resolution pixel coordinates) from overview arrays.

    ``cfg`` is a CoarseConfig: enabled, max_shift_px (full-resolution pixels), max_rotation_deg,
    rotation_step_deg, scale_range ((s,) fixed, (lo, hi) a range searched in scale_step steps, or an
    explicit list), downsample (target overview factor), min_confidence. Falls back to the identity, saying
    why in ``method``, when disabled, when the overlap is too small or textureless, or when the best peak does
    not stand out from the runner-up (peak / runner-up below min_confidence).
    """
    if not cfg.enabled:
        return Initial(IDENTITY.copy(), 0.0, "identity (coarse stage disabled)")
    optical = np.asarray(optical, np.float64)
    sar = np.asarray(sar, np.float64)
    if optical.shape != sar.shape:
        raise ValueError(f"optical {optical.shape} and SAR view {sar.shape} overviews must share one grid")
    f = max(1, int(round(cfg.downsample / max(scale, 1e-9))))
    while f > 1 and min(optical.shape) // f < 48:
        f -= 1
    f1, f2 = _pyramid_factors(optical.shape, f)
    levels = {}
    for fl in {f1, f2}:
        o_img, o_ok = _downsample(optical, optical_valid, fl)
        s_img, s_ok = _downsample(sar, sar_valid, fl)
        ref, ref_inner = descriptors(o_img, o_ok, SIGMA)
        levels[fl] = (ref, ref_inner, s_img, s_ok)
    ref, ref_inner, s_img, s_ok = levels[f2]
    if min(levels[f2][1].shape) < 32 or ref_inner.sum() < 256 or s_ok.sum() < 256:
        return Initial(IDENTITY.copy(), 0.0,
                       f"identity (overlap too small or all nodata at the coarse stage's 1/{f2 * scale:g} overview)")
    rmax = float(cfg.max_rotation_deg)
    rstep = float(getattr(cfg, "rotation_step_deg", 2.0))
    rots = _values(-rmax, rmax, rstep) if rmax > 0 else np.array([0.0])
    scales = _scales(cfg)

    # Level 1: every rotation and scale, every shift up to max_shift_px, on the coarser overview.
    ref1, inner1, s1, ok1 = levels[f1]
    best, tried = _search(ref1, inner1, s1, ok1, rots, scales, float(cfg.max_shift_px) / (f1 * scale), SIGMA)
    if best is None:
        return Initial(IDENTITY.copy(), 0.0, "identity (no usable SAR overlap at any tried rotation/scale)")
    rot, sc, u, val, second, z = best
    confidence = float(val / second) if second > 0 else float("inf")
    details = {"rotation_deg": rot, "scale": sc, "peak": val, "runner_up": second, "confidence": confidence, "z": z,
               "overview_factor": f2 * scale, "tried": tried}
    min_conf = float(getattr(cfg, "min_confidence", 1.1))
    min_peak = float(getattr(cfg, "min_peak", 0.15))
    if not np.isfinite(val) or val < min_peak or confidence < min_conf:
        return Initial(IDENTITY.copy(), 0.0,
                       f"identity (low confidence: peak {val:.3f} (min {min_peak:g}), runner-up {second:.3f}, "
                       f"ratio {confidence:.2f} (min {min_conf:g}))", details)

    # Refinement levels: halved steps around the best on finer overviews, shifts near the previous one.
    r_half = rstep / 2 if len(rots) > 1 else 0.0
    s_half = (scales[1] / scales[0] - 1) / 2 if len(scales) > 1 else 0.0
    prev = f1
    for fl, npts in _refine_levels(f1, f2, int(getattr(cfg, "refine_levels", 2))):
        rots2 = rot + np.linspace(-r_half, r_half, npts) if r_half else np.array([rot])
        scales2 = sc * (1 + np.linspace(-s_half, s_half, npts)) if s_half else np.array([sc])
        k = prev / fl
        if fl not in levels:
            o_img, o_ok = _downsample(optical, optical_valid, fl)
            levels[fl] = descriptors(o_img, o_ok, SIGMA) + _downsample(sar, sar_valid, fl)
        ref, ref_inner, s_img, s_ok = levels[fl]
        best2, tried2 = _search(ref, ref_inner, s_img, s_ok, rots2, scales2, float(cfg.max_shift_px) / (fl * scale),
                                SIGMA, near=u * k, near_radius=2.0 * k + 1)
        details["tried"] += tried2
        if best2 is not None and np.isfinite(best2[3]):
            rot, sc, u, val = best2[:4]
            details.update(rotation_deg=rot, scale=sc, peak=val)
        else:
            u = u * k
        prev = fl
        r_half, s_half = r_half / 2, s_half / 2
    f2 = prev
    factor = f2 * float(scale)
    lin = _similarity(rot, sc)
    h, w = levels[f2][1].shape
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    # Overview index coords: q = lin (p + u - c) + c. To GDAL corner coords (+0.5), then to full resolution.
    t_idx = lin @ (u - c) + c
    t_gdal = t_idx + 0.5 - lin @ np.array([0.5, 0.5])
    affine = np.hstack([lin, (factor * t_gdal)[:, None]])
    centre = np.array([optical.shape[1], optical.shape[0]]) * scale / 2
    details["shift_px"] = (affine[:, :2] @ centre + affine[:, 2] - centre).tolist()
    method = (f"cfog search at 1/{factor:g}: rotation {rot:.2f} deg, scale {sc:.3f}, "
              f"centre shift ({details['shift_px'][0]:.1f}, {details['shift_px'][1]:.1f}) px")
    return Initial(affine, float(val), method, details)
