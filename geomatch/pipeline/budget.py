"""The scene's point budget: how many keypoints a run matches and where, whatever the tiling.

Matching costs per keypoint, so the budget (``detect.max_points``, ``--max-points``) is what a user chooses
a scene's cost by. A run first detects in every tile (cheap: a response map and grid suppression) and keeps
each tile's candidates as a small table; :func:`spread` then picks the budget over the whole overlap, and
only the chosen points are matched.

The budget is spread over *blocks* of the overlap, not over the processing tiles: the blocks follow from the
area and the budget alone, so a run tiled 37 px wide chooses exactly the points a single-window run chooses,
and a tile size is never a density setting. Selection goes in rounds: every block's strongest candidate,
then every block's second strongest, and so on, the last round cut by response. A textureless block gives
its share to the others instead of contributing weak points.
"""

from __future__ import annotations

import math

import numpy as np
from rasterio.windows import Window

from geomatch import process_limits, registry
from geomatch.config import DetectConfig
from geomatch.pipeline.keypoints import Keypoints
from geomatch.pipeline.tiling import Tile, owns


def detect_tile(pair, tile: Tile, detect: DetectConfig, patch_size: int) -> Keypoints:
    """Candidates of one tile: keypoints its core owns, in optical-grid coordinates of the whole raster."""
    process_limits.apply()  # a dask worker's first read: GDAL's cache and threads (once per process)
    optical, opt_valid = pair.read_optical(tile.read)
    detector = registry.load("detectors", detect.plugin)(**detect.params)
    origin = (tile.read.col_off, tile.read.row_off)
    # No count here: the cells bound a tile's candidates, and the budget is the scene's, chosen by spread().
    cap = detect.max_points_per_tile or optical.size
    kps = detector.detect(optical, opt_valid, max_points=cap, cell_size=detect.cell_size,
                          min_contrast=detect.min_contrast, border=patch_size // 2, origin=origin)
    kps = Keypoints(kps.x + origin[0], kps.y + origin[1], kps.response)
    return kps.subset(owns(tile, kps.x, kps.y))


def block_side(area: Window, max_points: int, cell_size: int) -> float:
    """Side of the spreading blocks: about one block per budgeted point, never finer than a suppression cell."""
    return max(float(cell_size), math.sqrt(float(area.width) * float(area.height) / max_points))


def spread(kps: Keypoints, area: Window, max_points: int, cell_size: int) -> np.ndarray:
    """Indices (ascending) of the ``max_points`` candidates chosen round by round over the area's blocks.

    All candidates when they fit the budget or the budget is 0 (unlimited). Ties in response are broken by
    position, so the choice does not depend on the order in which tiles delivered their candidates.
    """
    n = len(kps)
    if max_points <= 0 or n <= max_points:
        return np.arange(n)
    side = block_side(area, max_points, cell_size)
    n_cols = max(1, math.ceil(float(area.width) / side))
    bx = np.clip(((kps.x - float(area.col_off)) // side).astype(np.int64), 0, n_cols - 1)
    by = np.maximum(((kps.y - float(area.row_off)) // side).astype(np.int64), 0)
    block = by * n_cols + bx
    strength = (kps.x, kps.y, -kps.response)  # lexsort: last key first, so strongest, then y, then x
    order = np.lexsort((*strength, block))
    grouped = block[order]
    first = np.r_[True, grouped[1:] != grouped[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - start  # 0 for each block's strongest candidate, 1 for its second, ...
    return np.sort(np.lexsort((*strength, rank))[:max_points])


def choose(found: list[Keypoints], area: Window, detect: DetectConfig) -> list[Keypoints]:
    """Per tile (in ``found``'s order) the candidates the scene's budget keeps."""
    sizes = [len(k) for k in found]
    if sum(sizes) == 0:
        return [Keypoints() for _ in found]
    every = Keypoints(np.concatenate([k.x for k in found]), np.concatenate([k.y for k in found]),
                      np.concatenate([k.response for k in found]))
    keep = np.zeros(len(every), bool)
    keep[spread(every, area, detect.max_points, detect.cell_size)] = True
    bounds = np.cumsum([0, *sizes])
    return [k.subset(keep[a:b]) for k, a, b in zip(found, bounds[:-1], bounds[1:], strict=True)]
