"""Keypoints of one tile, in the tile array's pixel-centre coordinates (GDAL: pixel (i, j) -> (j + .5, i + .5))."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Keypoints:
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    y: np.ndarray = field(default_factory=lambda: np.empty(0))
    response: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float64).ravel()
        self.y = np.asarray(self.y, dtype=np.float64).ravel()
        self.response = np.asarray(self.response, dtype=np.float64).ravel()
        if not (len(self.x) == len(self.y) == len(self.response)):
            raise ValueError(f"Keypoints: x, y, response lengths differ ({len(self.x)}, {len(self.y)}, "
                             f"{len(self.response)})")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) array of (x, y)."""
        return np.column_stack([self.x, self.y])

    def subset(self, index) -> Keypoints:
        """Keypoints selected by a boolean mask or an index array."""
        return Keypoints(self.x[index], self.y[index], self.response[index])


def _window_checks(image: np.ndarray, valid: np.ndarray, window: int, min_contrast: float, border: int) -> np.ndarray:
    """Pixels whose patch window is fully valid, inside the array, away from the border, and textured."""
    from scipy import ndimage as ndi

    h, w = image.shape
    # Even windows reach window//2 up/left and window//2 - 1 down/right: the patch convention of
    # geomatch.pipeline.patches, which scipy's even-sized filters share.
    ok = ndi.minimum_filter(valid.astype(np.uint8), size=window, mode="constant", cval=0).astype(bool)
    if border > 0:
        ok[:border] = False
        ok[h - border:] = False
        ok[:, :border] = False
        ok[:, w - border:] = False
    if min_contrast > 0:
        img = np.where(valid, image, 0).astype(np.float64)
        mean = ndi.uniform_filter(img, size=window, mode="constant")
        sq = ndi.uniform_filter(img * img, size=window, mode="constant")
        std = np.sqrt(np.clip(sq - mean * mean, 0, None))
        ok &= std >= min_contrast
    return ok


def select_keypoints(response: np.ndarray, image: np.ndarray, valid: np.ndarray, max_points: int, cell_size: int,
                     min_contrast: float, border: int, window: int, origin: tuple[float, float] = (0, 0),
                     candidates: np.ndarray | None = None) -> Keypoints:
    """Grid non-maximum suppression: the best eligible pixel per cell, then the strongest ``max_points``.

    Cells are aligned to the global grid through ``origin`` (the array's (x, y) offset), so tiles that
    overlap pick the same points. ``candidates`` (bool) restricts which pixels may be chosen.
    """
    image = np.asarray(image, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool)
    if image.ndim != 2 or image.shape != valid.shape:
        raise ValueError(f"image {image.shape} and valid {valid.shape} must be equal 2-D shapes")
    if cell_size < 1:
        raise ValueError(f"cell_size must be >= 1, got {cell_size}")
    if max_points <= 0 or image.size == 0:
        return Keypoints()
    ok = _window_checks(image, valid, int(window), float(min_contrast), int(border))
    ok &= np.isfinite(response)
    if candidates is not None:
        ok &= candidates
    score = np.where(ok, response, -np.inf)
    cs = int(cell_size)
    oy, ox = int(origin[1]) % cs, int(origin[0]) % cs
    h, w = score.shape
    hp, wp = -(-(h + oy) // cs) * cs, -(-(w + ox) // cs) * cs
    padded = np.full((hp, wp), -np.inf)
    padded[oy:oy + h, ox:ox + w] = score
    cells = padded.reshape(hp // cs, cs, wp // cs, cs).transpose(0, 2, 1, 3).reshape(hp // cs, wp // cs, cs * cs)
    arg = cells.argmax(axis=2)
    best = np.take_along_axis(cells, arg[..., None], axis=2)[..., 0]
    ci, cj = np.nonzero(np.isfinite(best))
    rows = ci * cs + arg[ci, cj] // cs - oy
    cols = cj * cs + arg[ci, cj] % cs - ox
    resp = best[ci, cj]
    order = np.argsort(-resp, kind="stable")[:max_points]
    return Keypoints(cols[order] + 0.5, rows[order] + 0.5, resp[order])
