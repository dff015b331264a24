"""The detector contract every keypoint detector follows (``geomatch.detectors`` entry points).

A detector is a class built from its options, ``Detector(**params)``, whose ``detect(image, valid,
max_points, cell_size, min_contrast, border, origin=(0, 0), window=None)`` returns the tile's
:class:`~geomatch.pipeline.keypoints.Keypoints`. The registry refuses a ``geomatch.detectors`` entry point
that is not a subclass of :class:`Detector`.

Plugin authors: subclass ``Detector``, set ``name`` and ``PARAMS`` (option -> default) and implement
``response(image, valid)``, a float map whose larger values are better keypoints; the base class spreads
them by grid selection (:func:`geomatch.pipeline.keypoints.select_keypoints`). ``candidates`` may restrict
which pixels can be chosen (the grid detector's cell centres). A detector with its own selection overrides
``detect`` instead.
"""

from __future__ import annotations

import numpy as np

from geomatch.errors import ConfigError
from geomatch.pipeline.keypoints import Keypoints, select_keypoints


class Detector:
    """``detect(image, valid, max_points, cell_size, min_contrast, border, origin, window) -> Keypoints``.

    ``image`` is float32 (h, w) in [0, 1]; ``valid`` is bool (h, w). A point is kept only if its
    ``window`` x ``window`` patch (default: 2 * border, or 64 when border is 0) lies inside the array and
    on valid pixels, it is at least ``border`` pixels from the edge, and the patch's standard deviation is
    at least ``min_contrast``. ``origin`` is the array's (x, y) offset in the whole grid, so tiles that
    overlap choose the same points.
    """

    name = ""
    PARAMS: dict = {}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise ConfigError(f"detector '{self.name}': unknown parameter(s) {', '.join(unknown)}; "
                              f"valid: {', '.join(self.PARAMS) or '(none)'}")
        self.params = {**self.PARAMS, **params}

    def response(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"detector '{self.name}' does not implement response")

    def candidates(self, shape: tuple[int, int], cell_size: int, origin) -> np.ndarray | None:
        """Pixels that may be chosen (bool, ``shape``), or None for all."""
        return None

    def detect(self, image: np.ndarray, valid: np.ndarray, max_points: int, cell_size: int, min_contrast: float,
               border: int, origin: tuple[float, float] = (0, 0), window: int | None = None) -> Keypoints:
        image = np.asarray(image, dtype=np.float32)
        valid = np.asarray(valid, dtype=bool)
        if window is None:
            window = 2 * border if border > 0 else 64
        # Nodata filled with the valid mean so its edge does not dominate the response map.
        fill = float(image[valid].mean()) if valid.any() else 0.0
        resp = self.response(np.where(valid, image, fill).astype(np.float32), valid)
        return select_keypoints(resp, image, valid, max_points, cell_size, min_contrast, border, window, origin,
                                self.candidates(image.shape, cell_size, origin))
