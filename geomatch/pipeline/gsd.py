"""Scale-aware patches (issue 9): match at the ground sampling distance (GSD) the weights were trained at.

Weights record the GSD of their training chips (``gsd_m``) and the range their scale augmentation covered
(``gsd_range_m``), in the checkpoint's metadata and in the shipped index (``geomatch models package --gsd``);
the scorer exposes them. An input whose optical pixel size lies outside that range is not resampled: the
patch windows are (:func:`geomatch.pipeline.score_table.sample_windows`), at the zoom that brings the input to
the nearest end of the range (z = range end / input GSD; the training GSD itself when no range is recorded).
Why the nearest end and not the training GSD: the scale augmentation drew zooms log-uniformly over the range,
so its ends are as familiar to the network as its centre, and a smaller zoom keeps more of the input's detail.
A position found at z > ``REFINE_ABOVE`` is only as fine as z input pixels, so it is then refined at full
resolution by the classical dense matcher of the cascade (``match.proposer``) within ``ceil(z) + 1`` pixels;
score and ratio stay the matcher's, for the filters. An input coarser than the weights (z < 1) has nothing
finer to refine.

``match.patch_gsd``: "auto" (the above), "native" (never resample), or a GSD in metres to sample at (any
matcher, classical ones included, which have no GSD of their own).
"""

from __future__ import annotations

import math

import pandas as pd

from geomatch.errors import InputError
from geomatch.pipeline.refine import refine_positions

REFINE_ABOVE = 1.5  # zoom above which found positions are refined at full resolution


def patch_zoom(setting: float | str, weights_gsd_m: float | None, weights_range_m, input_gsd_m: float | None,
               source: str = "the optical raster") -> float:
    """Optical pixels per patch pixel for ``match.patch_gsd = setting`` (1.0: native sampling)."""
    if setting == "native":
        return 1.0
    if isinstance(setting, str):  # "auto" (config.build refuses other words)
        if weights_gsd_m is None or input_gsd_m is None:
            return 1.0
        lo, hi = weights_range_m or (weights_gsd_m, weights_gsd_m)
        return float(min(max(input_gsd_m, lo), hi)) / input_gsd_m
    if input_gsd_m is None:
        raise InputError(f"{source}: match.patch_gsd = {setting:g} m needs its pixel size in metres, and it has no "
                         "CRS; set patch_gsd = \"native\" or georeference the raster")
    return float(setting) / input_gsd_m


def footprint(patch_size: int, zoom: float) -> int:
    """Optical pixels a patch spans at ``zoom`` (never fewer than at native sampling)."""
    return int(math.ceil(patch_size * max(1.0, zoom)))


def refine_radius(zoom: float) -> float:
    """Full-resolution search radius around a position found at ``zoom``: its step, plus one pixel."""
    return float(math.ceil(zoom) + 1)


def refine_native(optical, sar, opt_valid, sar_valid, df: pd.DataFrame, affine, patch_size: int, zoom: float,
                  cfg) -> pd.DataFrame:
    """``df`` (rows of :func:`geomatch.pipeline.search.match_points`) with each position re-found by the dense
    proposer at full resolution around it; rows whose native window leaves the valid SAR keep theirs."""
    return refine_positions(optical, sar, opt_valid, sar_valid, df, affine, patch_size, refine_radius(zoom),
                            cfg.proposer)
