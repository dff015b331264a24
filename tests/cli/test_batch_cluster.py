"""`geomatch batch` and `geomatch run --scheduler` on a real loopback cluster (a `dask scheduler` and two
`dask worker` processes started in another folder): relative paths work, each worker builds the model once,
a broken pair is reported, a rerun submits nothing, and a killed worker costs no pair."""

from __future__ import annotations

import csv
import json
import threading

import geopandas as gpd
import pytest
from loopback import DASK, loopback_cluster, wait_for

from geomatch.cli.main import cli
from tests.factories import make_pair

distributed = pytest.importorskip("distributed")
if DASK is None:
    pytest.skip("the `dask` command (dask.distributed's CLI) is not installed", allow_module_level=True)
pytestmark = pytest.mark.slow  # a cluster start and several pipeline runs: 20-60 s per test on 2 cores

SETS = ["--matcher", "ncc", "--set", "match.params={absolute=true}", "--set", "tiles.size=80", "--set",
        "write.plot=false"]


@pytest.fixture
def cluster(tmp_path):
    # The workers' own working folder is not the client's: a relative path only the client can resolve fails.
    elsewhere = tmp_path / "workers"
    elsewhere.mkdir()
    with loopback_cluster(tmp_path / "cluster", cwd=elsewhere) as (address, workers):
        yield address, workers


def _manifest(folder, n_good: int) -> None:
    rows = [["id", "optical", "sar", "output"]]
    for i in range(n_good):
        (folder / f"p{i}").mkdir()
        make_pair(folder / f"p{i}", shift=(1.5, -1.0), size=(160, 160), seed=10 + i)
        rows.append([f"p{i}", f"p{i}/optical.tif", f"p{i}/sar.tif", f"out/p{i}.gpkg"])
    (folder / "bad.tif").write_text("not a raster")
    rows.append(["broken", "p0/optical.tif", "bad.tif", "out/broken.gpkg"])
    (folder / "out").mkdir()
    with open(folder / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _count_model_builds(client) -> dict:
    """Per worker, how many models geomatch.models.runtime has built since this was first called there."""

    def install_and_read():  # runs on each worker (nested, so it travels by value)
        from geomatch.models import runtime

        if not hasattr(runtime, "_builds_seen_by_test"):
            real = runtime._load
            runtime._builds_seen_by_test = []

            def counting(*args, **kwargs):
                runtime._builds_seen_by_test.append(args[0])
                return real(*args, **kwargs)

            runtime._load = counting
        return len(runtime._builds_seen_by_test)

    return client.run(install_and_read)


def test_batch_on_a_loopback_cluster_builds_each_model_once_per_worker_and_resumes(cluster, tmp_path, runner,
                                                                                   monkeypatch):
    address, _ = cluster
    _manifest(tmp_path, n_good=4)
    monkeypatch.chdir(tmp_path)  # the manifest and every path in it are relative
    with distributed.Client(address, timeout=30) as client:
        assert set(_count_model_builds(client).values()) == {0}
        result = runner.invoke(cli, ["batch", "pairs.csv", "--scheduler", address, *SETS, "--json"])
        assert result.exit_code == 1, result.output
        report = json.loads(result.stdout)
        assert report["counts"] == {"done": 4, "failed": 1}, report
        rows = {r["pair_id"]: r for r in report["pairs"]}
        assert "bad.tif" in rows["broken"]["error"]
        for i in range(4):
            back = gpd.read_file(tmp_path / "out" / f"p{i}.gpkg", layer="tiepoints")
            assert len(back) == rows[f"p{i}"]["points_found"] and rows[f"p{i}"]["points_kept"] >= 5
        builds = _count_model_builds(client)
        # Four pairs of four tiles each on two workers: one model per worker that ran a pair, never one per
        # pair or per tile.
        assert all(n <= 1 for n in builds.values()) and 1 <= sum(builds.values()) <= 2, builds
        before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}

        again = runner.invoke(cli, ["batch", "pairs.csv", "--scheduler", address, *SETS, "--json"])
        assert json.loads(again.stdout)["counts"] == {"skipped": 4, "failed": 1}, again.output
        assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before
        assert _count_model_builds(client) == builds  # the rerun built no model and rewrote nothing


def test_a_killed_worker_costs_no_pair(cluster, tmp_path, runner):
    address, workers = cluster
    _manifest(tmp_path, n_good=4)
    names = {}
    outcome: dict = {}
    with distributed.Client(address, timeout=30) as client:
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
        batch = threading.Thread(target=lambda: outcome.update(r=runner.invoke(
            cli, ["batch", str(tmp_path / "pairs.csv"), "--scheduler", address, *SETS, "--json"])))
        batch.start()

        def w1_busy():
            return any(names.get(a) == "w1" and any("geomatch-pair" in str(k) for k in keys)
                       for a, keys in client.processing().items())

        wait_for(w1_busy, 300, "a pair on worker w1")
        workers["w1"].kill()  # SIGKILL: no goodbye to the scheduler
        batch.join(600)
        assert not batch.is_alive(), "the batch did not finish after the worker was killed"
    report = json.loads(outcome["r"].stdout)
    assert report["counts"] == {"done": 4, "failed": 1}, report
    assert all((tmp_path / "out" / f"p{i}.gpkg").exists() for i in range(4))


def test_run_with_relative_paths_on_a_loopback_cluster(cluster, tmp_path, runner, monkeypatch):
    address, _ = cluster
    (tmp_path / "pair").mkdir()
    make_pair(tmp_path / "pair", shift=(1.5, -1.0), size=(160, 160), seed=5)
    monkeypatch.chdir(tmp_path / "pair")
    result = runner.invoke(cli, ["run", "--optical", "optical.tif", "--sar", "sar.tif", "-o", "tp.gpkg",
                                 "--scheduler", address, "--json", *SETS])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tiles"] == 4 and summary["points_kept"] >= 5, summary
    assert len(gpd.read_file(tmp_path / "pair" / "tp.gpkg", layer="tiepoints")) == summary["points_found"]


def test_a_worker_with_a_gpu_resource_takes_every_scoring_task(tmp_path, runner):
    """`dask worker --resources GPU=1`: pairs are routed to it (its scorer picks CUDA where there is one); the
    plain worker scores nothing. Without such a worker (the tests above) both workers score."""
    _manifest(tmp_path, n_good=3)
    with loopback_cluster(tmp_path / "cluster", cwd=tmp_path, resources={"w2": "GPU=1"}) as (address, _):
        with distributed.Client(address, timeout=30) as client:
            _count_model_builds(client)
            result = runner.invoke(cli, ["batch", str(tmp_path / "pairs.csv"), "--scheduler", address, *SETS,
                                         "--json"])
            assert json.loads(result.stdout)["counts"] == {"done": 3, "failed": 1}, result.output
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
            builds = {names[a]: n for a, n in _count_model_builds(client).items()}
            assert builds == {"w1": 0, "w2": 1}, builds
            # `run --scheduler`: its four matched tiles go to the GPU worker too (the scorer is rebuilt there).
            run = runner.invoke(cli, ["run", "--optical", str(tmp_path / "p0" / "optical.tif"), "--sar",
                                      str(tmp_path / "p0" / "sar.tif"), "-o", str(tmp_path / "run.gpkg"),
                                      "--scheduler", address, "--json", *SETS])
            assert run.exit_code == 0 and json.loads(run.stdout)["tiles"] == 4, run.output
            after = {names[a]: n for a, n in _count_model_builds(client).items()}
    assert after["w1"] == 0 and after["w2"] >= 1, after
