"""The run verdict: ``registered``, ``uncertain`` or ``failed``, with the reasons, from what the run measured.

Why: a run that keeps a handful of mutually consistent but wrong tie points looks like success unless someone
asks how many of the matches agree, where they are and how the coarse stage got there. The verdict asks:

- coarse stage: was its transform confident, settled by the fine check, on the edge of a search range, or
  the identity fallback? Does the pair look rotated or scaled beyond the ranges searched?
- consistency: the share of the matches the filters keep (a right start gives many matches that agree; a
  wrong one scattered peaks of which RANSAC finds a small chance consensus);
- spread: the kept points' coverage of the textured part of the overlap (cells holding any matched point);
- residual: the model RMSE of the kept points against the RANSAC threshold.

Thresholds (module constants) were chosen on the VIS-NIR field pairs with the ``visnir`` pipeline and, as
negatives, the same pairs under the default pipeline (no rotation search); they are reported on the forest
pairs and on real optical/SAR material with synthetic large transforms (benchmarks/coarse_capture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geomatch.pipeline.coarse import looks

EXIT_NOT_REGISTERED = 3  # `geomatch run` exit code when the verdict is not `registered` (README: exit codes)
MIN_KEPT = 3  # fewer kept points than this: failed (no model can be trusted)
# Chosen on the VIS-NIR field pairs (validation): under the visnir pipeline all 20 right; under the default
# pipeline (no rotation search) 17 wrong, with at most 11 kept points, 3.1 % consistent, 38 % spread, and 3 right
# (15-106 kept, 5.1-30 % consistent, 25-56 % spread). See benchmarks/coarse_capture.md.
MIN_KEPT_SURE = 12  # fewer than this: at most uncertain
MIN_SHARE = 0.04  # kept / matched below this: uncertain
MIN_SPREAD = 0.2  # share of textured grid cells holding a kept point below this: uncertain
# Residuals spread evenly over the RANSAC disk of radius t have an RMS of t / sqrt(2) = 0.71 t: a consensus that
# looks like that is chance, not a model (right answers on the field pairs reached 0.58 t).
MAX_RMSE_FRACTION = 0.7
GRID = 4  # cells per side of the overlap for the spread measure


@dataclass(frozen=True)
class Verdict:
    status: str  # registered | uncertain | failed
    reasons: list[str] = field(default_factory=list)  # why it is not registered (empty when registered)
    warnings: list[str] = field(default_factory=list)  # worth knowing even when registered
    measures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"status": self.status, "reasons": list(self.reasons), "warnings": list(self.warnings),
                "measures": dict(self.measures)}



def warning_line(verdict: dict) -> str | None:
    """The one line a run prints about its verdict (a summary's ``verdict`` dict), or None when there is nothing
    to say: the status with its reasons, and the coarse stage's warnings."""
    status = verdict.get("status", "registered")
    said = list(verdict.get("reasons", [])) + list(verdict.get("warnings", []))
    if status == "registered" and not said:
        return None
    return f"verdict: {status}" + (f" ({'; '.join(said)})" if said else "")


def spread(kept_xy: np.ndarray, found_xy: np.ndarray, width: float, height: float, grid: int = GRID) -> float:
    """Share of the grid cells holding a matched point that also hold a kept point (1.0: kept everywhere)."""
    def cells(xy):
        xy = np.asarray(xy, float).reshape(-1, 2)
        cx = np.clip((xy[:, 0] / max(width, 1e-9) * grid).astype(int), 0, grid - 1)
        cy = np.clip((xy[:, 1] / max(height, 1e-9) * grid).astype(int), 0, grid - 1)
        return set(zip(cx.tolist(), cy.tolist(), strict=True))

    found = cells(found_xy)
    return len(cells(kept_xy) & found) / len(found) if found else 0.0


def coarse_notes(details: dict, confident: bool, method: str) -> tuple[list[str], list[str]]:
    """(reasons, warnings) from the coarse stage's details."""
    reasons, warnings = [], []
    if "shift" in details.get("edge", []):
        searched = details.get("max_shift_searched_px", 0.0)
        reasons.append(f"coarse peak on the edge of the {searched:g} px shift search: rerun with "
                       f"--max-shift {2 * searched:g}")
    beyond = details.get("beyond_range")
    if beyond:
        warnings.append(f"the pair looks {looks(beyond)} beyond the coarse ranges: use the visnir pipeline "
                        "(rotation 20 deg, scale 0.85-1.15) or --set coarse.max_rotation_deg=... --set "
                        "coarse.scale_range=[lo,hi]")
    if method.startswith("identity") and "disabled" not in method:
        warnings.append("coarse stage fell back to the identity (see the summary's coarse method)")
    elif not confident and details.get("chosen_by") != "fine check":
        reasons.append("coarse transform not confident")
    return reasons, warnings


def judge(model: dict, kept_xy, found_xy, size: tuple[float, float], ransac_threshold_px: float,
          coarse_details: dict | None = None, coarse_confident: bool = True, coarse_method: str = "") -> Verdict:
    """Verdict of one run. ``model`` is the filter's model info (n_points, n_kept, rmse_px, reason), ``kept_xy``
    and ``found_xy`` the (n, 2) pixel positions of the kept and of all matched points in an overlap of
    ``size`` = (width, height) pixels with its origin at (0, 0)."""
    n_found = int(model.get("n_points", len(np.reshape(found_xy, (-1, 2)))))
    n_kept = int(model.get("n_kept", 0))
    measures = {"points_matched": n_found, "points_kept": n_kept,
                "share_consistent": n_kept / n_found if n_found else 0.0,
                "spread": spread(kept_xy, found_xy, *size), "rmse_px": model.get("rmse_px"),
                "coarse": "confident" if coarse_confident else (coarse_details or {}).get("chosen_by", "in doubt")}
    reasons, warnings = coarse_notes(coarse_details or {}, coarse_confident, coarse_method)
    return decide(measures, ransac_threshold_px, reasons, warnings, model.get("reason"))


def decide(measures: dict, ransac_threshold_px: float, coarse_reasons=(), warnings=(),
           model_reason: str | None = None) -> Verdict:
    """The thresholds applied to :func:`judge`'s measures (kept apart so a benchmark can re-decide stored runs)."""
    n_kept, rmse = measures["points_kept"], measures["rmse_px"]
    reasons, warnings = list(coarse_reasons), list(warnings)
    if n_kept < MIN_KEPT or rmse is None:
        return Verdict("failed", [model_reason or f"only {n_kept} consistent tie point(s)", *reasons], warnings,
                       measures)
    if n_kept < MIN_KEPT_SURE:
        reasons.append(f"only {n_kept} consistent tie points (sure from {MIN_KEPT_SURE})")
    if measures["share_consistent"] < MIN_SHARE:
        reasons.append(f"{100 * measures['share_consistent']:.0f} % of the matches consistent "
                       f"(sure from {100 * MIN_SHARE:.0f} %)")
    if measures["spread"] < MIN_SPREAD:
        reasons.append(f"kept points cover {100 * measures['spread']:.0f} % of the matched area "
                       f"(sure from {100 * MIN_SPREAD:.0f} %)")
    if rmse > MAX_RMSE_FRACTION * ransac_threshold_px:
        reasons.append(f"model residual {rmse:.2f} px (sure below {MAX_RMSE_FRACTION * ransac_threshold_px:.2f} px)")
    return Verdict("uncertain" if reasons else "registered", reasons, warnings, measures)


def run_verdict(points, model: dict, initial, overlap, filter_cfg) -> Verdict:
    """:func:`judge` for a run: ``points`` the tie-point table (``ref_col``/``ref_row`` on the optical grid, or
    ``ref_x``/``ref_y`` in pixels; ``outlier``), ``initial`` the coarse stage's Initial, ``overlap`` the window
    (col_off, row_off, width, height) the points lie in."""
    cols = ("ref_col", "ref_row") if "ref_col" in getattr(points, "columns", ()) else ("ref_x", "ref_y")
    if len(points):
        xy = points[list(cols)].to_numpy(float) - [overlap.col_off, overlap.row_off]
        kept = xy[points["outlier"].to_numpy() == 0]
    else:
        xy = kept = np.zeros((0, 2))
    return judge(model, kept, xy, (overlap.width, overlap.height), filter_cfg.ransac_threshold_px,
                 initial.details, initial.confident, initial.method)
