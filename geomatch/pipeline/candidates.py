"""When the coarse peak is in doubt, let the fine matcher decide: try each coarse hypothesis with a quick fine pass.

Why: a descriptor correlation peak can be right and still low (water, haze, little texture) or high and wrong
(sky, repeated fields). Tie points that agree with one affine model cannot be faked by a wrong start: a
search radius of a dozen pixels around a wrong transform finds only scattered peaks. So each distinct
hypothesis of the coarse stage (and the identity) gets a quick fine pass on the overview it was found on,
and the one with the most model-consistent matches wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from geomatch import registry
from geomatch.pipeline.coarse import IDENTITY, Initial, centre_shift, estimate_initial
from geomatch.pipeline.filters import flag_outliers
from geomatch.pipeline.search import match_points

QUICK_POINTS = 120  # keypoints of the quick pass over the whole overview
MIN_CONSISTENT = 6  # a hypothesis needs this many model-consistent matches to be chosen over the identity


@dataclass(frozen=True)
class Trial:
    label: str  # "candidate 1" ... or "identity"
    affine: np.ndarray
    consistent: int  # matches kept by the filters
    matched: int  # matches found

    def as_dict(self) -> dict:
        return {"label": self.label, "consistent": self.consistent, "matched": self.matched}


def _quick_keypoints(optical, optical_valid, cfg, patch: int):
    """The quick pass's keypoints: the same for every hypothesis, so detected once."""
    detector = registry.load("detectors", cfg.detect.plugin)(**cfg.detect.params)
    return detector.detect(optical, optical_valid, max_points=QUICK_POINTS, cell_size=cfg.detect.cell_size,
                           min_contrast=cfg.detect.min_contrast, border=patch // 2)


def quick_pass(optical, optical_valid, sar, sar_valid, kps, scale: float, affine: np.ndarray, cfg, scorer,
               radius_px: float) -> tuple[int, int]:
    """(consistent, matched) tie points of a fine pass on the float32 overview arrays for one full-resolution
    affine, at keypoints ``kps`` (:func:`_quick_keypoints`).

    ``cfg`` is the PipelineConfig, ``radius_px`` the fine search radius in full-resolution pixels; on an
    overview of ``scale`` full-resolution pixels per pixel both the affine's shift and the radius shrink.
    """
    if len(kps) == 0:
        return 0, 0
    ov_affine = np.hstack([affine[:, :2], affine[:, 2:] / scale])
    match = replace(cfg.match, search_radius=max(4.0, radius_px / scale), search_units="px")
    df = match_points(optical, sar, optical_valid, sar_valid, kps, ov_affine, scorer, match)
    if df.empty:
        return 0, 0
    df, info = flag_outliers(df, cfg.filter)
    return int(info.get("n_kept", 0)), int(len(df))


def settle_initial(optical, optical_valid, sar, sar_valid, scale: float, cfg, scorer, radius_px: float) -> Initial:
    """The coarse transform of :func:`estimate_initial`, with its doubts settled by quick fine passes.

    A confident coarse answer is returned as is. Otherwise each alternative and the identity are tried and the
    one with the most consistent matches (at least ``MIN_CONSISTENT``, else the identity) is returned, with the
    trials in ``details["fine_check"]``.
    """
    initial = estimate_initial(optical, optical_valid, sar, sar_valid, cfg.coarse, scale, radius_px)
    if initial.confident or not initial.alternatives:
        return initial
    hyps = [(f"candidate {i + 1}", h.affine) for i, h in enumerate(initial.alternatives)]
    opt32, sar32 = np.asarray(optical, np.float32), np.asarray(sar, np.float32)
    kps = _quick_keypoints(opt32, optical_valid, cfg, scorer.patch_size)
    trials = [Trial(label, affine, *quick_pass(opt32, optical_valid, sar32, sar_valid, kps, scale, affine, cfg,
                                               scorer, radius_px))
              for label, affine in [*hyps, ("identity", IDENTITY.copy())]]
    # Ties go to the earlier trial: the higher coarse peak, the identity last.
    best = max(range(len(trials)), key=lambda i: (trials[i].consistent, -i))
    details = dict(initial.details)
    details["fine_check"] = [t.as_dict() for t in trials]
    chosen = trials[best]
    summary = ", ".join(f"{t.label} {t.consistent}/{t.matched}" for t in trials)
    if chosen.label == "identity" or chosen.consistent < MIN_CONSISTENT:
        return Initial(IDENTITY.copy(), 0.0, f"{initial.method}; fine check kept the identity ({summary})", details,
                       alternatives=initial.alternatives)
    c = initial.alternatives[best].candidate
    details.update(rotation_deg=c.rotation_deg, scale=c.scale, peak=c.peak, chosen_by="fine check",
                   shift_px=centre_shift(chosen.affine, np.shape(optical), scale))
    method = (f"cfog search, {chosen.label} of {len(hyps)} chosen by a quick fine pass ({summary}): rotation "
              f"{c.rotation_deg:.2f} deg, scale {c.scale:.3f}, centre shift ({details['shift_px'][0]:.1f}, "
              f"{details['shift_px'][1]:.1f}) px")
    return Initial(chosen.affine, float(c.peak), method, details, confident=False,
                   alternatives=initial.alternatives)
