"""Tile plans: cores partition the area exactly; halos; ownership of points on seams."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from geomatch.pipeline.tiling import Tile, owns, plan_tiles


@pytest.mark.parametrize("area, size, halo", [
    (Window(0, 0, 101, 77), 17, 5),
    (Window(3, 5, 64, 64), 32, 0),
    (Window(7, 2, 33, 190), 50, 13),
    (Window(0, 0, 5, 3), 512, 40),
])
def test_cores_partition_the_area_and_reads_add_the_halo(area, size, halo):
    tiles = plan_tiles(area, size, halo)
    cover = np.zeros((area.row_off + area.height + 1, area.col_off + area.width + 1), int)
    for k, t in enumerate(tiles):
        assert t.id == k
        c = t.core
        assert 0 < c.width <= size and 0 < c.height <= size
        cover[c.row_off:c.row_off + c.height, c.col_off:c.col_off + c.width] += 1
        assert t.read == Window(c.col_off - halo, c.row_off - halo, c.width + 2 * halo, c.height + 2 * halo)
    inside = cover[area.row_off:area.row_off + area.height, area.col_off:area.col_off + area.width]
    assert (inside == 1).all()
    assert cover.sum() == area.width * area.height  # nothing outside the area
    n_cols = -(-area.width // size)
    n_rows = -(-area.height // size)
    assert len(tiles) == n_cols * n_rows
    # Full-size tiles except the last row and column.
    assert all(t.core.width == size for t in tiles if t.core.col_off + size <= area.col_off + area.width)


def test_every_point_is_owned_by_exactly_one_tile():
    area = Window(2, 4, 97, 61)
    tiles = plan_tiles(area, 20, 6)
    rng = np.random.default_rng(0)
    cols = np.concatenate([rng.uniform(2, 99, 2000), np.arange(2, 99, 1.0), np.full(61, 22.0)])
    rows = np.concatenate([rng.uniform(4, 65, 2000), np.full(97, 24.0), np.arange(4, 65, 1.0)])
    count = sum(owns(t, cols, rows).astype(int) for t in tiles)
    assert (count == 1).all()  # seams (x = 22, y = 24) included
    assert owns(tiles[0], 2.0, 4.0) is True and owns(tiles[0], 22.0, 4.0) is False
    assert sum(owns(t, 99.0, 10.0) for t in tiles) == 0  # the far edge is outside (half-open)


def test_bad_plans():
    with pytest.raises(ValueError, match="tile size"):
        plan_tiles(Window(0, 0, 10, 10), 0, 2)
    with pytest.raises(ValueError, match="halo"):
        plan_tiles(Window(0, 0, 10, 10), 4, -1)
    with pytest.raises(ValueError, match="integer"):
        plan_tiles(Window(0.5, 0, 10, 10), 4, 1)
    assert plan_tiles(Window(0, 0, 0, 10), 4, 1) == []
    t = plan_tiles(Window(0, 0, 10, 10), 4, 1)[0]
    assert isinstance(t, Tile)
    with pytest.raises(AttributeError):
        t.id = 3  # frozen
