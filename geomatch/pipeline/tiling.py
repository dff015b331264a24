"""Tile plans: cores that partition an area exactly, each read with a halo around it.

A keypoint is owned by the tile whose core contains it, on half-open intervals
``[col_off, col_off + width) x [row_off, row_off + height)`` in continuous optical-grid coordinates, so
a keypoint on a seam belongs to exactly one tile and the union of all tiles' points has no duplicates.
The halo (:func:`halo_for`) is the optical patch's reach plus one suppression cell: keypoints near the
core's edge get full patches and are selected exactly as a single window over the whole area selects them.
The search radius is not part of it: the search happens in a separate SAR read window around the tile
(:func:`geomatch.pipeline.affinetools.bbox_window`). The read window may extend past the raster, where the
readers return invalid pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True)
class Tile:
    id: int
    core: Window
    read: Window


def halo_for(patch_size: int, max_scale: float, cell_size: int) -> int:
    """Pixels added around each core: the reach of a patch plus one grid-suppression cell.

    A patch rotated and scaled by up to ``max_scale`` reaches ``patch_size / 2 * sqrt(2) * max(1, max_scale)``
    from its centre (plus 2 pixels of interpolation support); and a suppression cell touching the core may
    reach ``cell_size - 1`` pixels beyond it, where its candidates need their whole patch window inside the
    read window to be judged exactly as a single-window run judges them.
    """
    patch_reach = int(math.ceil(patch_size / 2 * math.sqrt(2) * max(1.0, max_scale))) + 2
    return patch_reach + int(cell_size)


def _int_window(area: Window) -> tuple[int, int, int, int]:
    vals = (area.col_off, area.row_off, area.width, area.height)
    if any(float(v) != int(v) for v in vals):
        raise ValueError(f"area must be an integer window, got {area}")
    return tuple(int(v) for v in vals)


def plan_tiles(area: Window, size: int, halo: int) -> list[Tile]:
    """Row-major tiles of ``size`` x ``size`` (the last row and column smaller) covering ``area``."""
    if size < 1:
        raise ValueError(f"tile size must be at least 1, got {size}")
    if halo < 0:
        raise ValueError(f"halo must be non-negative, got {halo}")
    c0, r0, w, h = _int_window(area)
    if w <= 0 or h <= 0:
        return []
    tiles = []
    for row in range(r0, r0 + h, size):
        th = min(size, r0 + h - row)
        for col in range(c0, c0 + w, size):
            tw = min(size, c0 + w - col)
            core = Window(col, row, tw, th)
            read = Window(col - halo, row - halo, tw + 2 * halo, th + 2 * halo)
            tiles.append(Tile(len(tiles), core, read))
    return tiles


def owns(tile: Tile, col, row):
    """True where (col, row) (scalars or arrays, optical-grid coordinates) lies in the tile's core."""
    c, r = np.asarray(col, float), np.asarray(row, float)
    k = tile.core
    inside = (c >= k.col_off) & (c < k.col_off + k.width) & (r >= k.row_off) & (r < k.row_off + k.height)
    return bool(inside) if inside.ndim == 0 else inside
