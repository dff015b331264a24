"""Corner detectors from scikit-image, spread by grid non-maximum suppression."""

from __future__ import annotations

import numpy as np
from skimage.feature import corner_harris, corner_shi_tomasi

from geomatch.pipeline.detector import Detector


class Harris(Detector):
    """Harris corner response (skimage.feature.corner_harris); params: sigma, k."""

    name = "harris"
    PARAMS = {"sigma": 1.5, "k": 0.05}

    def response(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return corner_harris(image, method="k", k=float(self.params["k"]), sigma=float(self.params["sigma"]))


class ShiTomasi(Detector):
    """Shi-Tomasi minimum-eigenvalue response (skimage.feature.corner_shi_tomasi); param: sigma."""

    name = "shi-tomasi"
    PARAMS = {"sigma": 1.5}

    def response(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return corner_shi_tomasi(image, sigma=float(self.params["sigma"]))
