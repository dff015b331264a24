"""`geomatch batch` in this process: every pair run, a broken pair reported, reruns that skip finished pairs,
outputs made from something else left alone, the summary table read back, manifest mistakes refused."""

from __future__ import annotations

import csv
import json

import geopandas as gpd
import pyogrio
import pytest

import geomatch.pipeline.run as run_module
from geomatch.cli.main import cli
from geomatch.models import runtime
from tests.factories import make_pair

# The factory's SAR is contrast-inverted, so NCC scores |ncc|; 80-px tiles give every pair four.
SETS = ["--set", "match.params={absolute=true}", "--set", "tiles.size=80", "--set", "write.plot=false"]


def _pair(folder, seed, shift=(1.5, -1.0)):
    folder.mkdir(exist_ok=True)
    return make_pair(folder, shift=shift, size=(160, 160), seed=seed)


@pytest.fixture
def batch_dir(tmp_path):
    """Three good pairs and one whose SAR is not a raster, listed with paths relative to the manifest."""
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        _pair(tmp_path / name, seed)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sar.tif").write_text("not a raster")
    rows = [["id", "optical", "sar", "output", "match.search_radius"],
            ["a", "a/optical.tif", "a/sar.tif", "out/a.gpkg", ""],
            ["b", "b/optical.tif", "b/sar.tif", "out/b.gpkg", "8"],
            ["c", "c/optical.tif", "c/sar.tif", "out/c.csv", ""],
            ["broken", "a/optical.tif", "bad/sar.tif", "out/broken.gpkg", ""]]
    (tmp_path / "out").mkdir()
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return tmp_path


@pytest.fixture
def pipeline_runs(monkeypatch):
    """How many times the pipeline itself ran (the batch imports it inside each pair)."""
    calls = []
    real = run_module.run_pipeline

    def counting(*args, **kwargs):
        calls.append(args[:2])
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "run_pipeline", counting)
    return calls


def _batch(runner, manifest, *extra):
    result = runner.invoke(cli, ["batch", str(manifest), "--matcher", "ncc", *SETS, "--json", *extra])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_batch_runs_every_pair_reports_the_broken_one_and_a_rerun_does_no_work(runner, batch_dir, pipeline_runs):
    result, report = _batch(runner, batch_dir / "pairs.csv")
    assert result.exit_code == 1, result.output  # one pair failed
    assert report["counts"] == {"done": 3, "failed": 1}, report
    by_id = {row["pair_id"]: row for row in report["pairs"]}
    assert [row["pair_id"] for row in report["pairs"]] == ["a", "b", "c", "broken"]  # manifest order
    assert "sar.tif" in by_id["broken"]["error"] and "\n" not in by_id["broken"]["error"]
    assert not (batch_dir / "out" / "broken.gpkg").exists()
    for pid in ("a", "b"):
        back = gpd.read_file(batch_dir / "out" / f"{pid}.gpkg", layer="tiepoints")
        assert len(back) == by_id[pid]["points_found"] and by_id[pid]["points_kept"] >= 5, by_id[pid]
        assert 0 < by_id[pid]["rmse_px"] < 1.5 and by_id[pid]["seconds"] > 0
    assert (batch_dir / "out" / "c.csv.json").exists()
    # The per-pair override reached its pair only.
    runs = {pid: pyogrio.read_dataframe(batch_dir / "out" / f"{pid}.gpkg", layer="runs") for pid in ("a", "b")}
    assert "search_radius = 8.0" in runs["b"]["pipeline_toml"].iloc[0]
    assert "search_radius = 8.0" not in runs["a"]["pipeline_toml"].iloc[0]
    with open(batch_dir / "pairs-summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [(r["pair_id"], r["status"]) for r in summary] == [("a", "done"), ("b", "done"), ("c", "done"),
                                                              ("broken", "failed")]
    assert summary[0]["points_kept"] == str(by_id["a"]["points_kept"])
    assert len(pipeline_runs) == 3

    before = _mtimes(batch_dir / "out")
    again, report2 = _batch(runner, batch_dir / "pairs.csv")
    assert again.exit_code == 1 and report2["counts"] == {"skipped": 3, "failed": 1}, report2
    assert len(pipeline_runs) == 3  # nothing ran again
    assert _mtimes(batch_dir / "out") == before  # nothing rewritten
    again_by_id = {row["pair_id"]: row for row in report2["pairs"]}
    for pid in ("a", "b", "c"):  # the counts come from each output's own runs record
        assert again_by_id[pid]["points_kept"] == by_id[pid]["points_kept"]
        assert again_by_id[pid]["rmse_px"] == pytest.approx(by_id[pid]["rmse_px"])


def test_changed_input_or_pipeline_reruns_only_what_changed_and_needs_overwrite(runner, batch_dir, pipeline_runs):
    assert _batch(runner, batch_dir / "pairs.csv")[0].exit_code == 1
    assert len(pipeline_runs) == 3
    _pair(batch_dir / "b", 7, shift=(2.0, 0.5))  # new bytes for pair b's inputs
    kept_b = (batch_dir / "out" / "b.gpkg").read_bytes()
    result, report = _batch(runner, batch_dir / "pairs.csv")
    by_id = {row["pair_id"]: row for row in report["pairs"]}
    assert by_id["b"]["status"] == "failed" and "--overwrite" in by_id["b"]["error"], by_id["b"]
    assert (batch_dir / "out" / "b.gpkg").read_bytes() == kept_b  # the user's file is left alone
    assert {by_id[p]["status"] for p in ("a", "c")} == {"skipped"} and len(pipeline_runs) == 3

    result, report = _batch(runner, batch_dir / "pairs.csv", "--overwrite")
    by_id = {row["pair_id"]: row for row in report["pairs"]}
    assert by_id["b"]["status"] == "done" and len(pipeline_runs) == 4
    assert {by_id[p]["status"] for p in ("a", "c")} == {"skipped"}

    # Another resolved pipeline for every pair: every good pair runs again.
    result, report = _batch(runner, batch_dir / "pairs.csv", "--overwrite", "--set", "filter.min_score=0.2")
    assert report["counts"] == {"done": 3, "failed": 1} and len(pipeline_runs) == 7


def test_model_is_built_once_per_process_not_per_pair_or_tile(runner, batch_dir, monkeypatch):
    builds = []
    real = runtime._load
    monkeypatch.setattr(runtime, "_load", lambda *a, **k: builds.append(a[0]) or real(*a, **k))
    runtime.clear_cache()
    result, report = _batch(runner, batch_dir / "pairs.csv")
    assert report["counts"]["done"] == 3
    tiles = sum(json.loads(pyogrio.read_dataframe(batch_dir / "out" / f"{p}.gpkg", layer="runs")["summary_json"]
                           .iloc[0])["tiles"] for p in ("a", "b"))
    assert tiles >= 4  # several tiles per pair, three pairs ...
    assert builds == ["ncc"]  # ... and one model


def test_json_manifest_with_overrides_and_a_geopackage_summary(runner, tmp_path):
    _pair(tmp_path / "p", 4)
    manifest = {"pairs": [{"id": "one", "optical": "p/optical.tif", "sar": "p/sar.tif", "output": "one.gpkg",
                           "set": {"match.search_radius": 9}}]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    result, report = _batch(runner, tmp_path / "m.json", "--summary", str(tmp_path / "s.gpkg"))
    assert result.exit_code == 0, result.output
    table = pyogrio.read_dataframe(tmp_path / "s.gpkg", layer="batch")
    assert list(table["pair_id"]) == ["one"] and list(table["status"]) == ["done"]
    assert int(table["points_kept"].iloc[0]) == report["pairs"][0]["points_kept"] > 0
    runs = pyogrio.read_dataframe(tmp_path / "one.gpkg", layer="runs")
    assert "search_radius = 9.0" in runs["pipeline_toml"].iloc[0]


@pytest.mark.parametrize("rows, expected", [
    ([["optical", "sar"], ["a/optical.tif", "a/sar.tif"]], "no output"),
    ([["optical", "sar", "output", "colour"], ["a/optical.tif", "a/sar.tif", "o.gpkg", "red"]], "unknown field"),
    ([["optical", "sar", "output", "match.serch_radius"], ["a/optical.tif", "a/sar.tif", "o.gpkg", "3"]],
     "serch_radius"),
    ([["optical", "sar", "output", "match.search_radius"], ["a/optical.tif", "a/sar.tif", "o.gpkg", "-4"]],
     "search_radius"),
    ([["optical", "sar", "output"], ["a/optical.tif", "a/sar.tif", "o.gpkg"], ["b/optical.tif", "b/sar.tif",
                                                                                  "o.gpkg"]], "also written by"),
    ([["optical", "sar", "output"], ["a/optical.tif", "a/sar.tif", "a/sar.tif"]], "an input of pair"),
])
def test_manifest_mistakes_exit_2_before_any_pair_runs(runner, tmp_path, pipeline_runs, rows, expected):
    with open(tmp_path / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    result = runner.invoke(cli, ["batch", str(tmp_path / "m.csv")])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "m.csv" in result.stderr and "Traceback" not in result.stderr
    assert pipeline_runs == [] and not (tmp_path / "m-summary.csv").exists()


def test_a_summary_path_holding_a_users_file_is_refused(runner, batch_dir, pipeline_runs):
    (batch_dir / "notes.csv").write_text("my,own\n1,2\n")
    result = runner.invoke(cli, ["batch", str(batch_dir / "pairs.csv"), "--summary", str(batch_dir / "notes.csv")])
    assert result.exit_code == 2 and "not a geomatch batch summary" in result.stderr
    assert (batch_dir / "notes.csv").read_text() == "my,own\n1,2\n" and pipeline_runs == []


def test_a_scheduler_that_does_not_answer_is_exit_2_before_any_pair_runs(runner, batch_dir, pipeline_runs):
    result = runner.invoke(cli, ["batch", str(batch_dir / "pairs.csv"), "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 2 and "tcp://127.0.0.1:9" in result.stderr, result.output
    assert pipeline_runs == [] and not (batch_dir / "pairs-summary.csv").exists()


def test_manifest_paths_are_read_from_the_manifest_folder_and_options_from_the_working_folder(tmp_path,
                                                                                                monkeypatch):
    from geomatch.batch.manifest import read_manifest

    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "mine.toml").write_text('[match]\nplugin = "ncc"\nsearch_radius = 7.0\n')
    rows = [["optical", "sar", "output", "pipeline", "pair.sar_mask", "match.weights"],
            ["o.tif", "s.tif", "out.gpkg", "mine.toml", "m.tif", "ckpt/best.pt"],
            ["o.tif", "s.tif", "out2.gpkg", "", "", "optical-sar"]]
    with open(sub / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    monkeypatch.chdir(tmp_path)
    first, second = read_manifest("sub/m.csv", overrides={"pair.optical_mask": "masks/opt.tif"})
    assert (first.optical, first.sar, first.output) == (sub / "o.tif", sub / "s.tif", sub / "out.gpkg")
    assert first.cfg.match.search_radius == 7.0  # the pair's own pipeline file, found beside the manifest
    assert first.cfg.pair.sar_mask == str(sub / "m.tif") and first.cfg.match.weights == str(sub / "ckpt/best.pt")
    assert second.cfg.match.weights == "optical-sar"  # a shipped tag is a name, not a path
    assert first.cfg.pair.optical_mask == str(tmp_path / "masks/opt.tif")  # --set: from the working folder
    assert [p.pair_id for p in (first, second)] == ["1", "2"]
