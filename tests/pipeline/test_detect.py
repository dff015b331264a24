import numpy as np
import pytest
from matching_synth import textured

from geomatch import registry
from geomatch.errors import ConfigError
from geomatch.pipeline.keypoints import Keypoints
from geomatch_plugins.detectors.corners import Harris, ShiTomasi
from geomatch_plugins.detectors.grid import Grid

DETECTORS = [Harris, ShiTomasi, Grid]


@pytest.fixture(scope="module")
def image():
    return textured((200, 260), seed=3)


def _rows_cols(kp):
    return (kp.y - 0.5).astype(int), (kp.x - 0.5).astype(int)


@pytest.mark.parametrize("cls", DETECTORS)
def test_one_point_per_cell_and_cap(cls, image):
    valid = np.ones(image.shape, bool)
    kp = cls().detect(image, valid, max_points=1000, cell_size=20, min_contrast=0.0, border=10, window=20)
    assert len(kp) > 40
    rows, cols = _rows_cols(kp)
    np.testing.assert_array_equal(kp.x, cols + 0.5)  # pixel centres
    cells = set(zip(rows // 20, cols // 20, strict=True))
    assert len(cells) == len(kp)
    few = cls().detect(image, valid, max_points=7, cell_size=20, min_contrast=0.0, border=10, window=20)
    assert len(few) == 7
    assert np.all(np.diff(few.response) <= 0)
    np.testing.assert_array_equal(np.sort(few.response), np.sort(kp.response)[-7:])


@pytest.mark.parametrize("cls", DETECTORS)
def test_skips_nodata_border_and_flat_areas(cls, image):
    img = image.copy()
    img[:, :100] = 0.4  # textureless left part
    valid = np.ones(img.shape, bool)
    valid[150:, :] = False  # nodata at the bottom
    win, border = 32, 24
    kp = cls().detect(img, valid, max_points=500, cell_size=16, min_contrast=0.02, border=border, window=win)
    assert len(kp) > 5
    rows, cols = _rows_cols(kp)
    assert rows.min() >= border and cols.min() >= border
    assert rows.max() < img.shape[0] - border and cols.max() < img.shape[1] - border
    # Every patch window lies on valid, textured pixels.
    assert np.all(rows + win - win // 2 <= 150)
    assert np.all(cols + win - win // 2 > 100)  # no window entirely in the flat part
    for r, c in zip(rows, cols, strict=True):
        patch = img[r - win // 2:r + win - win // 2, c - win // 2:c + win - win // 2]
        assert patch.std() >= 0.02


def test_origin_aligns_cells_across_windows(image):
    """A sub-window read with its origin picks the same points as the whole image, away from its edges."""
    valid = np.ones(image.shape, bool)
    det = Harris()
    full = det.detect(image, valid, 10_000, cell_size=16, min_contrast=0.0, border=16, window=32)
    x0, y0 = 37, 21
    sub = det.detect(image[y0:y0 + 150, x0:x0 + 200], valid[y0:y0 + 150, x0:x0 + 200], 10_000, cell_size=16,
                     min_contrast=0.0, border=16, window=32, origin=(x0, y0))
    inner = lambda x, y: (x > x0 + 48) & (x < x0 + 152) & (y > y0 + 48) & (y < y0 + 102)
    a = {(x, y) for x, y in zip(full.x, full.y, strict=True) if inner(x, y)}
    b = {(x + x0, y + y0) for x, y in zip(sub.x, sub.y, strict=True) if inner(x + x0, y + y0)}
    assert len(a) > 10
    assert a == b


def test_grid_points_sit_on_cell_centres(image):
    kp = Grid().detect(image, np.ones(image.shape, bool), 1000, cell_size=32, min_contrast=0.0, border=16,
                       window=32, origin=(5, 0))
    rows, cols = _rows_cols(kp)
    assert len(kp) > 20
    assert np.all(rows % 32 == 16) and np.all((cols + 5) % 32 == 16)


def test_keypoints_container_and_edge_cases(image):
    kp = Keypoints([1.5, 2.5, 3.5], [4.5, 5.5, 6.5], [3.0, 2.0, 1.0])
    assert len(kp.subset(kp.response > 1.5)) == 2
    assert kp.xy.shape == (3, 2)
    with pytest.raises(ValueError):
        Keypoints([1.0], [1.0, 2.0], [0.0])
    valid = np.zeros(image.shape, bool)
    assert len(Harris().detect(image, valid, 50, 16, 0.0, 8)) == 0
    assert len(Harris().detect(image, np.ones(image.shape, bool), 0, 16, 0.0, 8)) == 0
    with pytest.raises(ConfigError, match="unknown parameter"):
        Harris(sigmaa=2)


def test_registered_as_plugins():
    for name, cls in (("harris", Harris), ("shi-tomasi", ShiTomasi), ("grid", Grid)):
        assert registry.load("detectors", name) is cls
