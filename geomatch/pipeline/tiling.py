"""Tile plans: cores that partition an area exactly, each read with a halo around it.

A keypoint is owned by the tile whose core contains it, on half-open intervals
``[col_off, col_off + width) x [row_off, row_off + height)`` in continuous optical-grid coordinates, so
a keypoint on a seam belongs to exactly one tile and the union of all tiles' points has no duplicates.
The halo (patch radius plus search radius) gives keypoints near the core's edge full patches; the read
window may extend past the raster, where the readers return invalid pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True)
class Tile:
    id: int
    core: Window
    read: Window


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
