"""Shift-vector plot of the tie points over the optical image (PNG, matplotlib Agg, atomic write)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from geomatch.pipeline.schema import pixel_affine
from geomatch.pipeline.writer import atomic_output


def _nice(value: float) -> float:
    """Round down to 1, 2 or 5 times a power of ten (a factor people can read off a legend)."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (5, 2, 1):
        if m * 10**exp <= value:
            return float(m * 10**exp)
    return float(10**exp)


def pixel_shifts(gdf) -> tuple[np.ndarray, np.ndarray]:
    """Target minus reference in optical pixels (columns, rows) for every point."""
    if {"shift_col_px", "shift_row_px"} <= set(gdf.columns):
        u, v = gdf["shift_col_px"].to_numpy(float), gdf["shift_row_px"].to_numpy(float)
        if np.isfinite(u).all() and np.isfinite(v).all():
            return u, v
    aff = pixel_affine(gdf)
    if aff is None:
        raise ValueError("cannot express shifts in pixels: add shift_col_px/shift_row_px (add_shift_columns "
                         "with the grid transform)")
    dx, dy = gdf["shift_x"].to_numpy(float), gdf["shift_y"].to_numpy(float)
    return aff[0, 0] * dx + aff[0, 1] * dy, aff[1, 0] * dx + aff[1, 1] * dy


def plot_shifts(optical_grey: np.ndarray, gdf, path, title: str = "", decimate: float = 1.0,
                origin: tuple[float, float] = (0.0, 0.0), exaggeration: float | None = None,
                overwrite: bool = False) -> Path:
    """Draw ``gdf``'s shift vectors (kept points, coloured by score) and outliers (x) over the image.

    ``optical_grey`` is the optical image (or an overview of it): its pixel (0, 0) corner sits at optical
    pixel ``origin`` and each of its pixels spans ``decimate`` optical pixels (1 / the overview scale).
    Vectors are drawn ``exaggeration`` times their length (automatic: the median becomes about 4 % of
    the image diagonal, rounded to 1/2/5 x 10^k); the legend states the factor and the counts.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    img = np.asarray(optical_grey, dtype=np.float32)
    h, w = img.shape
    c0, r0 = float(origin[0]), float(origin[1])
    extent = (c0, c0 + w * decimate, r0 + h * decimate, r0)
    n = len(gdf)
    outlier = gdf["outlier"].to_numpy() != 0 if n else np.zeros(0, bool)
    kept = ~outlier
    x, y = (gdf["ref_col"].to_numpy(float), gdf["ref_row"].to_numpy(float)) if n else (np.zeros(0), np.zeros(0))
    u, v = pixel_shifts(gdf) if n else (np.zeros(0), np.zeros(0))
    if exaggeration is None:
        lengths = np.hypot(u[kept], v[kept])
        median = float(np.median(lengths)) if lengths.size else 0.0
        target = 0.04 * math.hypot(w * decimate, h * decimate)
        exaggeration = max(1.0, _nice(target / median)) if median > 0 else 1.0

    fig = Figure(figsize=(8, 8 * h / max(w, 1) + 0.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, extent=extent, interpolation="nearest")
    handles = []
    if kept.any():
        q = ax.quiver(x[kept], y[kept], u[kept] * exaggeration, v[kept] * exaggeration,
                      gdf["score"].to_numpy(float)[kept], cmap="viridis", clim=(0.0, 1.0), angles="xy",
                      scale_units="xy", scale=1.0, width=0.003)
        fig.colorbar(q, ax=ax, fraction=0.035, pad=0.02, label="score")
    handles.append(Line2D([], [], color="tab:green", marker=r"$\rightarrow$", linestyle="none", markersize=12,
                          label=f"kept: {int(kept.sum())} (vectors x{exaggeration:g})"))
    if outlier.any():
        ax.scatter(x[outlier], y[outlier], marker="x", c="red", s=22, linewidths=1.2)
    handles.append(Line2D([], [], color="red", marker="x", linestyle="none", label=f"outliers: {int(outlier.sum())}"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.8)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("optical column (px)")
    ax.set_ylabel("optical row (px)")
    simulated = "simulated" in gdf.columns and n and bool(np.asarray(gdf["simulated"]).any())
    full_title = (title or "tie points") + (" [SIMULATED SAR]" if simulated else "")
    ax.set_title(full_title, fontsize=10)
    fig.tight_layout()
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
