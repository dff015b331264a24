"""Regular grid points: for scenes where corners are scarce (fields, water edges, SAR-like texture)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from geomatch.pipeline.detector import Detector


class Grid(Detector):
    """One point at the centre of each cell (aligned to the global grid); response = local standard deviation.

    param ``sigma``: scale of the standard-deviation window used as the response (pixels).
    """

    name = "grid"
    PARAMS = {"sigma": 8.0}

    def response(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        s = float(self.params["sigma"])
        img = image.astype(np.float64)
        mean = ndi.gaussian_filter(img, s)
        return np.sqrt(np.clip(ndi.gaussian_filter(img * img, s) - mean * mean, 0, None))

    def candidates(self, shape: tuple[int, int], cell_size: int, origin) -> np.ndarray:
        h, w = shape
        rows = (np.arange(h) + int(origin[1])) % cell_size == cell_size // 2
        cols = (np.arange(w) + int(origin[0])) % cell_size == cell_size // 2
        return rows[:, None] & cols[None, :]
