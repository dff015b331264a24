"""Coarse stage: an initial optical -> SAR-view transform, found on a downsampled overview of the overlap.

Why: a local search radius of a dozen pixels cannot absorb a 100-pixel shift or a 15-degree rotation. This
stage searches shift (by FFT correlation), rotation and scale (by brute force over ``cfg``'s ranges) on a
modality-robust representation (:mod:`geomatch.pipeline.coarse_surface`), so the fine search starts close and samples
its patches through the found rotation and scale.

Ranges are hard limits: no rotation, scale or shift outside them is returned, refinement included. A peak on
the edge of a range is never used silently: on the shift edge the search is widened (up to
``max_shift_px * max_shift_widen``, and at most half the overlap's shorter side) and reported if it stays
there; on a rotation or scale edge the stage probes a few values beyond it and reports
(``details["beyond_range"]``) when one of them scores clearly higher, i.e. when the pair looks rotated or
scaled beyond what the pipeline searches.

Confidence: the peak must reach ``min_peak`` and stand out from the runner-up by ``min_confidence``. A peak
that does not is not thrown away: the identity is returned with the best distinct hypotheses in
``alternatives``, and the fine matches they lead to decide (:mod:`geomatch.pipeline.candidates`), so a right
low-contrast answer survives on the consistency of its matches and a wrong one does not. The peak's
prominence over its score surface (in standard deviations) is reported; on the VIS-NIR field pairs it did
not separate right from wrong answers (2.4-4.2 against 2.1-3.2 for mismatched pairs), so it decides nothing.

Coordinates: inputs are overview arrays in which one pixel spans ``scale`` full-resolution pixels (GDAL
corner convention, so a corner coordinate times ``scale`` is the full-resolution coordinate). The returned
affine maps full-resolution optical pixel coordinates to full-resolution SAR-view pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from geomatch.pipeline.coarse_surface import SIGMA, Level, make_level, score_surface, similarity

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
N_ALTERNATIVES = 3  # distinct hypotheses handed to the fine check when the coarse peak is in doubt
EDGE_PX = 1.0  # a shift peak this close (overview pixels) to the edge of its disk is on the edge
BEYOND_MARGIN = 1.1  # a probe beyond the range must beat the in-range peak by this factor to be reported
PROBE_ROT_DEG = (5.0, 10.0)  # rotation probes beyond the edge of the range
PROBE_SCALE = 1.1  # scale probe factor beyond the edge of the range


@dataclass(frozen=True, eq=False)
class Candidate:
    """One (rotation, scale) hypothesis with its best shift, as scored on one overview level."""

    rotation_deg: float
    scale: float
    shift: tuple[float, float]  # (ux, uy) in pixels of overview ``level``: q = L (p + u - c) + c about its centre c
    level: int  # overview factor the shift is measured on
    peak: float  # descriptor correlation at the shift
    runner_up: float  # best correlation farther than a few pixels from the peak, same surface
    prominence: float  # (peak - mean of the rest of the surface) / its standard deviation

    @property
    def ratio(self) -> float:
        return self.peak / self.runner_up if self.runner_up > 0 else math.inf


@dataclass(frozen=True, eq=False)
class Hypothesis:
    """A refined candidate and its full-resolution affine, for the fine check to try."""

    candidate: Candidate
    affine: np.ndarray  # (2, 3) optical full-resolution pixel coords -> SAR-view pixel coords


@dataclass
class Initial:
    affine: np.ndarray  # (2, 3): optical full-resolution pixel coords -> SAR-view pixel coords
    score: float  # correlation of the descriptors at the chosen transform (0 when not estimated)
    method: str  # how it was obtained, in words (identity fallbacks say why)
    details: dict = field(default_factory=dict)  # rotation_deg, scale, shift_px, confidence, edge, beyond_range...
    confident: bool = False  # the peak passed the confidence test (no fine check needed)
    alternatives: list[Hypothesis] = field(default_factory=list)  # in doubt: distinct hypotheses, best first

    def json_details(self) -> dict:
        """``details`` for a JSON summary: a ratio with no positive runner-up (infinite) becomes null."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.details.items()}


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
        n = max(1, int(math.ceil(math.log(hi / lo) / math.log1p(cfg.scale_step))))
        return np.exp(np.linspace(math.log(lo), math.log(hi), n + 1))
    return np.array(sorted(map(float, sr)))


def _pyramid_factors(shape, f: int) -> tuple[int, int]:
    """Search factor (coarser, cheap) and refinement factor for an overview of ``shape``."""
    f1 = 2 * f
    return (f1, f) if min(shape) // f1 >= 64 else (f, f)


class CoarseSearch:
    """The overview pyramid of one pair and the searches over it, all inside the configured ranges."""

    def __init__(self, optical, optical_valid, sar, sar_valid, cfg, scale: float = 1.0):
        self.cfg, self.scale = cfg, float(scale)
        self.arrays = (np.asarray(optical, np.float64), np.asarray(optical_valid, bool),
                       np.asarray(sar, np.float64), np.asarray(sar_valid, bool))
        if self.arrays[0].shape != self.arrays[2].shape:
            raise ValueError(f"optical {self.arrays[0].shape} and SAR view {self.arrays[2].shape} overviews must "
                             "share one grid")
        f = max(1, int(round(cfg.downsample / max(self.scale, 1e-9))))
        while f > 1 and min(self.arrays[0].shape) // f < 48:
            f -= 1
        self.f1, self.f2 = _pyramid_factors(self.arrays[0].shape, f)
        self._levels: dict[int, Level] = {}
        rmax = float(cfg.max_rotation_deg)
        self.rotations = _values(-rmax, rmax, cfg.rotation_step_deg) if rmax > 0 else np.array([0.0])
        self.scales = _scales(cfg)
        self.rot_limits = (float(self.rotations.min()), float(self.rotations.max()))
        self.scale_limits = (float(self.scales.min()), float(self.scales.max()))

    def level(self, fl: int) -> Level:
        if fl not in self._levels:
            self._levels[fl] = make_level(*self.arrays, fl)
        return self._levels[fl]

    def unusable(self) -> str | None:
        """Why the overlap cannot be searched at all, or None."""
        lv = self.level(self.f2)
        if min(lv.ref_inner.shape) < 32 or lv.ref_inner.sum() < 256 or lv.sar_valid.sum() < 256:
            return f"overlap too small or all nodata at the coarse stage's 1/{self.f2 * self.scale:g} overview"
        return None

    def scan(self, fl: int, max_shift_px: float, rots, scales, near: Candidate | None = None) -> list[Candidate]:
        """Every (rotation, scale) on level ``fl``, shifts up to ``max_shift_px`` (full resolution, at the centre);
        ``near`` restricts them to a few pixels around a candidate of the level above (a refinement pass)."""
        lv = self.level(fl)
        radius = max_shift_px / (fl * self.scale)
        around = None
        if near is not None:
            k = near.level / fl
            around = (np.asarray(near.shift) * k, 2.0 * k + 1)
        out = []
        for rot in rots:
            for sc in scales:
                # The centre moves by L u: a shift of radius / sc in u is a shift of radius in the image.
                found = score_surface(lv, similarity(rot, sc), radius / sc, around, excl=max(3.0, 3 * SIGMA),
                                      pad=radius / self.scale_limits[0])
                if found is not None:
                    u, peak, second, z = found
                    out.append(Candidate(float(rot), float(sc), (float(u[0]), float(u[1])), fl, peak, second, z))
        return sorted(out, key=lambda c: -c.peak)

    def on_shift_edge(self, c: Candidate, max_shift_px: float) -> bool:
        radius = max_shift_px / (c.level * self.scale) / c.scale
        return math.hypot(*c.shift) >= radius - EDGE_PX

    def refine(self, c: Candidate, max_shift_px: float) -> Candidate:
        """Halved rotation and scale steps around ``c`` on finer levels, clipped to the ranges."""
        r_half = self.cfg.rotation_step_deg / 2 if len(self.rotations) > 1 else 0.0
        s_half = (self.scales[1] / self.scales[0] - 1) / 2 if len(self.scales) > 1 else 0.0
        levels = [(self.f2, 5)] if self.cfg.refine_levels >= 1 else []
        if self.cfg.refine_levels >= 2 and self.f2 >= 2:
            levels.append((self.f2 // 2, 3))
        for fl, npts in levels:
            rots = np.unique(np.clip(c.rotation_deg + np.linspace(-r_half, r_half, npts), *self.rot_limits))
            scales = np.unique(np.clip(c.scale * (1 + np.linspace(-s_half, s_half, npts)), *self.scale_limits))
            found = self.scan(fl, max_shift_px, rots, scales, near=c)
            if found and np.isfinite(found[0].peak):
                best = found[0]
                # Confidence stays the global search's: the refinement sees only a small neighbourhood.
                c = replace(c, rotation_deg=best.rotation_deg, scale=best.scale, shift=best.shift, level=fl,
                            peak=best.peak)
            else:
                k = c.level / fl
                c = replace(c, shift=(c.shift[0] * k, c.shift[1] * k), level=fl)
            r_half, s_half = r_half / 2, s_half / 2
        return c

    def affine(self, c: Candidate) -> np.ndarray:
        lin = similarity(c.rotation_deg, c.scale)
        h, w = self.level(c.level).ref_inner.shape
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        # Overview index coords: q = lin (p + u - c) + c. To GDAL corner coords (+0.5), then to full resolution.
        t_idx = lin @ (np.asarray(c.shift) - centre) + centre
        t_gdal = t_idx + 0.5 - lin @ np.array([0.5, 0.5])
        return np.hstack([lin, (c.level * self.scale * t_gdal)[:, None]])

    def distinct(self, ranked: list[Candidate], n: int, apart_px: float) -> list[Candidate]:
        """The best ``n`` candidates whose transforms differ pairwise by more than ``apart_px`` somewhere."""
        h, w = self.arrays[0].shape
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float) * self.scale
        picked, maps = [], []
        for c in ranked:
            a = self.affine(c)
            q = corners @ a[:, :2].T + a[:, 2]
            if all(np.hypot(*(q - m).T).max() > apart_px for m in maps):
                picked.append(c)
                maps.append(q)
            if len(picked) == n:
                break
        return picked

    def probe_beyond(self, top: Candidate, max_shift_px: float) -> dict | None:
        """Rotations and scales just outside the range on the side(s) where ``top`` sits on its edge; the best
        of them when it scores clearly higher than ``top`` (the pair looks rotated or scaled beyond the range)."""
        rots, scales = [], []
        lo, hi = self.rot_limits
        step = max(self.cfg.rotation_step_deg, 1e-6)
        if top.rotation_deg <= lo + step / 2:
            rots += [lo - d for d in PROBE_ROT_DEG]
        if top.rotation_deg >= hi - step / 2:
            rots += [hi + d for d in PROBE_ROT_DEG]
        s_lo, s_hi = self.scale_limits
        if top.scale <= s_lo * (1 + self.cfg.scale_step / 2):
            scales.append(s_lo / PROBE_SCALE)
        if top.scale >= s_hi / (1 + self.cfg.scale_step / 2):
            scales.append(s_hi * PROBE_SCALE)
        probes = self.scan(self.f1, max_shift_px, rots, [top.scale]) if rots else []
        probes += self.scan(self.f1, max_shift_px, [top.rotation_deg], scales) if scales else []
        # Only a probe that would itself pass the confidence test says anything: on an unrelated pair every
        # peak is noise, and one of them beating another by 10 % means nothing.
        probes = [c for c in probes if _confident(c, self.cfg)]
        best = max(probes, key=lambda c: c.peak, default=None)
        if best is None or not best.peak > BEYOND_MARGIN * max(top.peak, 1e-6):
            return None
        return {"rotation_deg": best.rotation_deg, "scale": best.scale, "peak": best.peak, "in_range_peak": top.peak}


def centre_shift(affine: np.ndarray, shape, scale: float) -> list[float]:
    """Displacement (x, y) of the overview's centre, full-resolution pixels, for an overview of ``shape``."""
    centre = np.array([shape[1], shape[0]]) * scale / 2
    return (affine[:, :2] @ centre + affine[:, 2] - centre).tolist()


def looks(beyond: dict) -> str:
    """'rotated 10 deg' or 'scaled x1.10' (or both) for a ``details["beyond_range"]`` entry."""
    parts = [f"rotated {beyond['rotation_deg']:.0f} deg" if abs(beyond["rotation_deg"]) > 1e-6 else "",
             f"scaled x{beyond['scale']:.2f}" if abs(beyond["scale"] - 1.0) > 1e-6 else ""]
    return " and ".join(p for p in parts if p) or "outside the ranges"


def _confident(c: Candidate, cfg) -> bool:
    return bool(np.isfinite(c.peak) and c.peak >= cfg.min_peak and c.ratio >= cfg.min_confidence)


def estimate_initial(optical: np.ndarray, optical_valid: np.ndarray, sar: np.ndarray, sar_valid: np.ndarray,
                     cfg, scale: float = 1.0, search_radius_px: float = 12.0) -> Initial:
    """Initial transform optical -> SAR view (full-resolution pixel coordinates) from overview arrays.

    ``cfg`` is a CoarseConfig. Falls back to the identity, saying why in ``method``, when disabled, when the
    overlap is too small or textureless, or when the best peak fails the confidence test; in that last case
    ``alternatives`` holds up to three distinct hypotheses (differing by more than ``search_radius_px``, the
    fine search's reach) for :func:`geomatch.pipeline.candidates.settle_initial` to try.
    """
    if not cfg.enabled:
        return Initial(IDENTITY.copy(), 0.0, "identity (coarse stage disabled)")
    search = CoarseSearch(optical, optical_valid, sar, sar_valid, cfg, scale)
    why = search.unusable()
    if why:
        return Initial(IDENTITY.copy(), 0.0, f"identity ({why})")

    max_shift = float(cfg.max_shift_px)
    # Widening stops at half the overview's shorter side: beyond it too little overlap is left to trust a peak.
    limit = min(max_shift * max(1.0, float(cfg.max_shift_widen)), 0.5 * min(search.arrays[0].shape) * search.scale)
    ranked = search.scan(search.f1, max_shift, search.rotations, search.scales)
    if not ranked:
        return Initial(IDENTITY.copy(), 0.0, "identity (no usable SAR overlap at any tried rotation/scale)")
    while search.on_shift_edge(ranked[0], max_shift) and max_shift < limit:
        max_shift = min(limit, 2 * max_shift)
        ranked = search.scan(search.f1, max_shift, search.rotations, search.scales)
    top = ranked[0]
    details = {"rotation_deg": top.rotation_deg, "scale": top.scale, "peak": top.peak, "runner_up": top.runner_up,
               "confidence": top.ratio, "prominence": top.prominence, "overview_factor": search.f2 * search.scale,
               "max_shift_searched_px": max_shift, "edge": []}
    notes = []
    if max_shift > cfg.max_shift_px:
        notes.append(f"shift search widened to {max_shift:g} px")
    if search.on_shift_edge(top, max_shift):
        details["edge"].append("shift")
        notes.append(f"peak on the edge of the {max_shift:g} px shift search")
    beyond = search.probe_beyond(top, max_shift)
    if beyond is not None:
        details["beyond_range"] = beyond
        notes.append(f"the pair looks {looks(beyond)}, beyond the searched range")
    note = "".join(f"; {n}" for n in notes)

    if not _confident(top, cfg):
        picked = search.distinct(ranked, N_ALTERNATIVES, search_radius_px)
        alternatives = []
        for c in picked:
            r = search.refine(c, max_shift)
            alternatives.append(Hypothesis(r, search.affine(r)))
        return Initial(IDENTITY.copy(), 0.0,
                       f"identity (low confidence: peak {top.peak:.3f} (min {cfg.min_peak:g}), runner-up "
                       f"{top.runner_up:.3f}, ratio {top.ratio:.2f} (min {cfg.min_confidence:g})){note}", details,
                       alternatives=alternatives)

    best = search.refine(top, max_shift)
    affine = search.affine(best)
    details.update(rotation_deg=best.rotation_deg, scale=best.scale, peak=best.peak,
                   shift_px=centre_shift(affine, search.arrays[0].shape, search.scale))
    factor = best.level * search.scale
    method = (f"cfog search at 1/{factor:g}: rotation {best.rotation_deg:.2f} deg, scale {best.scale:.3f}, "
              f"centre shift ({details['shift_px'][0]:.1f}, {details['shift_px'][1]:.1f}) px{note}")
    return Initial(affine, float(best.peak), method, details, confident=True)
