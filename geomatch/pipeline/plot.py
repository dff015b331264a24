"""Figures: the tie points' shift vectors over the optical image, and ``register``'s before/after panel.

Both are drawn in MAP coordinates of the optical CRS (pixel axes only for rasters without one), rendered with
matplotlib's Agg canvas (no display needed) and written atomically as PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from geomatch.fileio import atomic_output
from geomatch.pipeline.schema import pixel_affine

# Outliers are drawn in the colour of the first level that flagged them (the order the filters run in).
LEVELS = (("outlier_score", "score / ratio", "tab:orange"), ("outlier_local", "local consistency", "tab:red"),
          ("outlier_model", "global model", "tab:purple"))


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


def _pixel_to_map(gdf, transform):
    """(a, b, c, d, e, f) of the optical grid: given, or fitted on the points' ref columns (None: pixel axes)."""
    if transform is not None:
        return tuple(transform)[:6]
    inv = pixel_affine(gdf) if len(gdf) else None
    if inv is None:
        return None
    full = np.linalg.inv(np.vstack([inv, [0.0, 0.0, 1.0]]))
    return tuple(full[:2].ravel())


def _unit(gdf) -> str:
    crs = getattr(gdf, "crs", None)
    if crs is None:
        return "px"
    if crs.is_geographic:
        return "deg"
    units = crs.axis_info[0].unit_name if crs.axis_info else "m"
    return "m" if units in ("metre", "meter") else units


def _colour_values(gdf, kept: np.ndarray) -> tuple[np.ndarray, str]:
    """A quantity that varies over the kept points: the residual to the model, else the score's rank."""
    if "residual_px" in gdf.columns:
        r = gdf["residual_px"].to_numpy(float)[kept]
        if r.size and np.isfinite(r).all() and np.ptp(r) > 0:
            return r, "residual to the model (px)"
    score = gdf["score"].to_numpy(float)[kept]
    rank = np.argsort(np.argsort(-score)) + 1 if score.size else score
    return rank.astype(float), "score rank (1 = best)"


def shift_figure(optical_grey: np.ndarray, gdf, title: str = "", decimate: float = 1.0,
                 origin: tuple[float, float] = (0.0, 0.0), exaggeration: float | None = None, transform=None):
    """The shift-vector figure (a matplotlib ``Figure``) without writing it; see :func:`plot_shifts`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    img = np.asarray(optical_grey, dtype=np.float32)
    h, w = img.shape
    n = len(gdf)
    t = _pixel_to_map(gdf, transform) or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    unit = _unit(gdf) if _pixel_to_map(gdf, transform) else "px"
    c0, r0 = float(origin[0]), float(origin[1])
    c1, r1 = c0 + w * decimate, r0 + h * decimate
    left, top = t[0] * c0 + t[1] * r0 + t[2], t[3] * c0 + t[4] * r0 + t[5]
    right, bottom = t[0] * c1 + t[1] * r1 + t[2], t[3] * c1 + t[4] * r1 + t[5]
    extent = (left, right, bottom, top)
    outlier = gdf["outlier"].to_numpy() != 0 if n else np.zeros(0, bool)
    kept = ~outlier
    if n:
        x, y = gdf["ref_x"].to_numpy(float), gdf["ref_y"].to_numpy(float)
        u, v = gdf["shift_x"].to_numpy(float), gdf["shift_y"].to_numpy(float)
        if unit == "px":  # no map: draw on the pixel grid (rows grow downwards)
            x, y = gdf["ref_col"].to_numpy(float), gdf["ref_row"].to_numpy(float)
            u, v = pixel_shifts(gdf)
    else:
        x = y = u = v = np.zeros(0)
    diag = math.hypot(right - left, top - bottom)
    if exaggeration is None:
        lengths = np.hypot(u[kept], v[kept])
        median = float(np.median(lengths)) if lengths.size else 0.0
        exaggeration = max(1.0, _nice(0.04 * diag / median)) if median > 0 else 1.0

    fig = Figure(figsize=(8.5, 8 * h / max(w, 1) + 0.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, extent=extent, interpolation="nearest")
    quiver = dict(angles="xy", scale_units="xy", scale=1.0 / exaggeration)
    handles = []
    if kept.any():
        values, label = _colour_values(gdf, kept)
        # Kept vectors on top and bolder: outliers are often many and long, and must not hide them.
        q = ax.quiver(x[kept], y[kept], u[kept], v[kept], values, cmap="viridis", width=0.005, zorder=3,
                      edgecolor="black", linewidth=0.4, **quiver)
        fig.colorbar(q, ax=ax, fraction=0.035, pad=0.02, label=label)
        key = _nice(float(np.median(np.hypot(u[kept], v[kept]))) or 1.0)
        # True length: the key arrow is drawn with the vectors' own scale, so it reads off the map axes.
        ax.quiverkey(q, 0.12, 1.02, key, f"{key:g} {unit} shift (drawn x{exaggeration:g})", coordinates="axes",
                     labelpos="E", fontproperties={"size": 8})
    handles.append(Line2D([], [], color="#21918c", marker=r"$\rightarrow$", linestyle="none", markersize=12,
                          label=f"kept: {int(kept.sum())}"))
    flagged = np.zeros(n, bool)
    for column, name, colour in LEVELS:
        level = (gdf[column].to_numpy() != 0) & outlier & ~flagged if column in gdf.columns else np.zeros(n, bool)
        flagged |= level
        if level.any():
            ax.quiver(x[level], y[level], u[level], v[level], color=colour, alpha=0.55, width=0.002, zorder=2,
                      **quiver)
            ax.scatter(x[level], y[level], marker="x", c=colour, s=18, linewidths=1.0, alpha=0.8, zorder=2)
        handles.append(Line2D([], [], color=colour, marker="x", linestyle="none",
                              label=f"outlier by {name}: {int(level.sum())}"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.8)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel(f"x ({unit})" if unit != "px" else "optical column (px)")
    ax.set_ylabel(f"y ({unit})" if unit != "px" else "optical row (px)")
    ax.ticklabel_format(useOffset=False, style="plain")
    names = []
    for column in ("matcher", "weights"):
        if n and column in gdf.columns:
            names.append(f"{column} {', '.join(sorted(set(map(str, gdf[column]))))}")
    simulated = "simulated" in gdf.columns and n and bool(np.asarray(gdf["simulated"]).any())
    full = (title or "tie points") + (f" ({'; '.join(names)})" if names else "")
    ax.set_title(full + (" [SIMULATED SAR]" if simulated else ""), fontsize=10, pad=18)
    fig.tight_layout()
    return fig


def plot_shifts(optical_grey: np.ndarray, gdf, path, title: str = "", decimate: float = 1.0,
                origin: tuple[float, float] = (0.0, 0.0), exaggeration: float | None = None,
                overwrite: bool = False, transform=None) -> Path:
    """Draw ``gdf``'s shift vectors over the image in map coordinates and write a PNG.

    ``optical_grey`` is the optical image (or an overview of it): its pixel (0, 0) corner sits at optical
    pixel ``origin`` and each of its pixels spans ``decimate`` optical pixels. ``transform`` is the optical
    grid's affine (fitted on the points when not given). Kept vectors are coloured by their residual to the
    model (by score rank when residuals are absent or constant); outliers are drawn with their vectors in the
    colour of the level that flagged them. Vectors are ``exaggeration`` times their length (automatic: the
    median becomes about 4 % of the image diagonal); the key arrow is drawn at the same scale.
    """
    fig = shift_figure(optical_grey, gdf, title, decimate, origin, exaggeration, transform)
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _composite(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
    """SAR in magenta over optical in green: aligned structure turns grey, misregistration shows fringes."""
    o, s = np.nan_to_num(np.clip(optical, 0, 1)), np.nan_to_num(np.clip(sar, 0, 1))
    return np.dstack([s, o, s])


def plot_before_after(panels, path, title: str = "", overwrite: bool = False) -> Path:
    """Side-by-side composites; ``panels`` is a list of (label, optical, sar, (left, right, bottom, top))."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = panels[0][1].shape
    fig = Figure(figsize=(6 * len(panels), 6 * h / max(w, 1) + 0.9), dpi=110)
    FigureCanvasAgg(fig)
    for i, (label, optical, sar, extent) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        ax.imshow(_composite(optical, sar), extent=extent, interpolation="nearest")
        ax.set_title(label + " (green: optical, magenta: SAR)", fontsize=9)
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
