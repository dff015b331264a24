"""`geomatch demo`: the default pipeline on the built-in pair, measured against its known displacement."""

import json

import geopandas as gpd
import pytest

from geomatch.cli.main import cli


@pytest.mark.slow
def test_demo_runs_writes_outputs_and_measures_error(runner, tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(cli, ["demo", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["simulated"] is True
    assert stats["points_kept"] >= 20, stats
    assert stats["median_error_px"] < 1.5, stats
    gdf = gpd.read_file(out / "tiepoints.gpkg", layer="tiepoints")
    assert len(gdf) == stats["points_found"]
    assert (out / "tiepoints.png").stat().st_size > 10_000
    assert (out / "sar_SIMULATED.tif").exists()
    # A second run replaces its own demo folder (the NCC matcher: the same job in seconds).
    again = runner.invoke(cli, ["demo", "--out", str(out), "--matcher", "ncc", "--json"])
    assert again.exit_code == 0, again.output
    assert gpd.read_file(out / "tiepoints.gpkg", layer="tiepoints")["matcher"].iloc[0] == "ncc"


def test_demo_refuses_a_folder_it_did_not_make(runner, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = runner.invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not a geomatch demo folder" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
