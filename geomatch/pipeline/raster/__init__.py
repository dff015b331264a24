"""An optical raster and a SAR raster paired on the optical grid.

``sources`` opens and inspects the files (and ``check_readable`` tests one cheaply, without torch),
``geometry`` holds the grid, overlap, resolutions and coordinate maps, ``reader`` the warped reads, the
validity rule and the shared stretches, and ``pair.RasterPair`` puts them behind one object.
"""

from geomatch.pipeline.raster.geometry import Grid
from geomatch.pipeline.raster.pair import Overview, RasterPair
from geomatch.pipeline.raster.sources import check_readable

__all__ = ["Grid", "Overview", "RasterPair", "check_readable"]
