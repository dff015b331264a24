"""A one-tile run: progress moves while it scores, and `register` without tie points runs the pipeline first
and leaves a GeoPackage whose `runs` row records what actually ran."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
from factories import make_pair

from geomatch import config
from geomatch.pipeline.register import register
from geomatch.pipeline.run import run_pipeline

SHIFT = (2.3, -1.4)


def _cfg():
    # The factory's SAR is contrast-inverted (bright optical = dark SAR), so the NCC baseline scores |ncc|.
    return config.load("default", {"match.plugin": "ncc", "match.params": {"absolute": True}, "tiles.size": 1000,
                                   "write.plot": False})


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("pair"), shift=SHIFT, size=(180, 200), seed=3)


def test_one_tile_run_reports_scoring_progress(pair, capsys):
    res = run_pipeline(pair.optical, pair.sar, _cfg(), progress=True)
    assert res.summary["tiles"] == 1
    err = capsys.readouterr().err
    counts = [float(part.split("pair")[0].split()[-1].rstrip("k")) for part in err.split("patch pairs scored:")[1:]
              if "pair" in part]
    assert counts and max(counts) > 0 and len(set(counts)) > 1, err[-500:]  # the bar moved within the one tile
    res = run_pipeline(pair.optical, pair.sar, _cfg(), progress=False)
    assert "patch pairs scored" not in capsys.readouterr().err


def test_register_runs_the_pipeline_and_records_the_run(pair, tmp_path):
    out = tmp_path / "sar_on_optical.tif"
    res = register(pair.optical, pair.sar, out, cfg=_cfg(), plot=False)
    tp = res.outputs["tiepoints"]
    runs = pyogrio.read_dataframe(tp, layer="runs")
    row = runs.iloc[0]
    assert row["matcher"] == "ncc" and row["device"] == "cpu" and row["runtime"]
    assert row["gdal_version"] == rasterio.__gdal_version__ and row["torch_version"] and row["proj_version"]
    timings = json.loads(row["timings_json"])
    assert {"pair", "coarse", "match", "filter", "write"} <= set(timings)
    assert res.summary["model"]["points"] >= 6
    # The known shift, recovered as the shift field (target minus reference, metres on a 10 m grid).
    with rasterio.open(res.outputs["shift_field"]) as field:
        sx = field.read(1)
    assert np.nanmedian(sx) == pytest.approx(SHIFT[0] * 10.0, abs=3.0)
