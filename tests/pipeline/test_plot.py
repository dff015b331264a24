"""The shift-vector plot."""

from __future__ import annotations

import numpy as np
import pytest
from factories import make_tiepoints, optical_transform
from PIL import Image

from geomatch.errors import OutputExistsError
from geomatch.pipeline.plot import _nice, pixel_shifts, plot_shifts
from geomatch.pipeline.schema import add_shift_columns, empty_frame, to_geodataframe


def test_plot_file_and_vectors(tmp_path):
    df = add_shift_columns(make_tiepoints(20, outliers=3, shift_px=(1.5, -2.0)), optical_transform())
    gdf = to_geodataframe(df, "EPSG:32631")
    u, v = pixel_shifts(gdf)
    np.testing.assert_allclose(u, 1.5) and np.testing.assert_allclose(v, -2.0)
    img = np.random.default_rng(0).uniform(0, 1, (60, 80)).astype(np.float32)
    out = plot_shifts(img, gdf, tmp_path / "shifts.png", title="test", decimate=2.0)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400
    with pytest.raises(OutputExistsError):
        plot_shifts(img, gdf, out, title="again")
    assert plot_shifts(img, to_geodataframe(empty_frame(), None), tmp_path / "none.png").stat().st_size > 1000
    assert _nice(37.0) == 20.0 and _nice(0.7) == 0.5 and _nice(100.0) == 100.0
