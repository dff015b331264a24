"""The shift-vector plot and the before/after panel."""

from __future__ import annotations

import numpy as np
import pytest
from factories import make_tiepoints, optical_transform
from matplotlib.quiver import Quiver, QuiverKey
from PIL import Image

from geomatch.errors import OutputExistsError
from geomatch.pipeline.plot import LEVELS, _nice, pixel_shifts, plot_before_after, plot_shifts, shift_figure
from geomatch.pipeline.schema import add_shift_columns, empty_frame, to_geodataframe


def _gdf(**kw):
    df = add_shift_columns(make_tiepoints(20, outliers=3, shift_px=(1.5, -2.0), **kw), optical_transform())
    # Flag the three outliers at different levels: score, local, model.
    for i, col in enumerate(("outlier_score", "outlier_local", "outlier_model")):
        df[["outlier_score", "outlier_local", "outlier_model"]] = df[["outlier_score", "outlier_local",
                                                                      "outlier_model"]].astype(bool)
        df.loc[i, ["outlier_score", "outlier_local", "outlier_model"]] = False
        df.loc[i, col] = True
    return to_geodataframe(df, "EPSG:32631")


def test_plot_file_and_vectors(tmp_path):
    gdf = _gdf()
    u, v = pixel_shifts(gdf)
    np.testing.assert_allclose(u, 1.5)
    np.testing.assert_allclose(v, -2.0)
    img = np.random.default_rng(0).uniform(0, 1, (60, 80)).astype(np.float32)
    out = plot_shifts(img, gdf, tmp_path / "shifts.png", title="test", decimate=2.0, transform=optical_transform())
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400
    with pytest.raises(OutputExistsError):
        plot_shifts(img, gdf, out, title="again")
    assert plot_shifts(img, to_geodataframe(empty_frame(), None), tmp_path / "none.png").stat().st_size > 1000
    assert _nice(37.0) == 20.0 and _nice(0.7) == 0.5 and _nice(100.0) == 100.0


def test_plot_is_in_map_units_with_a_true_length_key_and_varying_colours():
    gdf = _gdf()
    gdf["residual_px"] = np.linspace(0.1, 2.0, len(gdf))
    img = np.zeros((60, 80), np.float32)
    t = optical_transform()
    fig = shift_figure(img, gdf, title="S2.tif vs S1.tif", decimate=2.0, transform=t)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (m)" and ax.get_ylabel() == "y (m)"
    np.testing.assert_allclose(ax.get_xlim(), (t.c, t.c + 160 * t.a))
    np.testing.assert_allclose(ax.get_ylim(), (t.f + 120 * t.e, t.f))
    quivers = [c for c in ax.collections if isinstance(c, Quiver)]
    kept = quivers[0]
    np.testing.assert_allclose(kept.U, 15.0)  # 1.5 px of 10 m, drawn at map scale
    colours = kept.get_array()
    np.testing.assert_allclose(colours, gdf["residual_px"][3:])  # coloured by the residual, which varies
    key = next(a for a in ax.artists + ax.get_children() if isinstance(a, QuiverKey))
    # The key arrow uses the vectors' own scale: U map units drawn as U * exaggeration on the axes.
    assert key.Q is kept and key.U == 20.0 and f"{key.U:g} m shift (drawn x{1.0 / kept.scale:g})" == key.text.get_text()
    # Each outlier drawn with its vector in its level's colour, and counted per level in the legend.
    assert len(quivers) == 1 + len(LEVELS)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["kept: 17", "outlier by score / ratio: 1", "outlier by local consistency: 1",
                      "outlier by global model: 1"]
    title = ax.get_title()
    assert "S2.tif vs S1.tif" in title and "matcher ncc" in title and "weights none" in title


def test_without_residuals_colour_is_the_score_rank():
    gdf = _gdf()
    fig = shift_figure(np.zeros((60, 80), np.float32), gdf, transform=optical_transform())
    kept = next(c for c in fig.axes[0].collections if isinstance(c, Quiver))
    score = gdf["score"].to_numpy()[3:]
    assert sorted(kept.get_array()) == list(range(1, 18))
    assert kept.get_array()[np.argmax(score)] == 1
    assert fig.axes[1].get_ylabel() == "score rank (1 = best)"


def test_before_after_panel(tmp_path):
    a = np.random.default_rng(0).uniform(0, 1, (50, 70))
    panels = [("before", a, np.roll(a, 3, axis=1), (0, 700, 0, 500)), ("after", a, a, (0, 700, 0, 500))]
    out = plot_before_after(panels, tmp_path / "ba.png", title="pair")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]
