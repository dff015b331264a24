"""A real ``dask scheduler`` and two ``dask worker`` processes on loopback; one worker is killed while it
matches a tile. The scheduler gives its tiles to the other, and the tie points equal a local run's."""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest
from loopback import DASK, loopback_cluster, wait_for

from geomatch import config
from geomatch.pipeline.run import run_pipeline
from tests.factories import make_pair

distributed = pytest.importorskip("distributed")
if DASK is None:
    pytest.skip("the `dask` command (dask.distributed's CLI) is not installed", allow_module_level=True)

CFG = {"match.plugin": "ncc", "match.params": {"absolute": True}, "tiles.size": 40, "write.plot": False,
       "match.search_radius": 20.0}


@pytest.fixture
def cluster(tmp_path):
    with loopback_cluster(tmp_path / "cluster") as (address, workers):
        yield address, workers


@pytest.mark.slow
def test_killed_worker_changes_no_tie_point(cluster, tmp_path):
    address, workers = cluster
    pair = make_pair(tmp_path, shift=(2.3, -1.4), size=(200, 200), seed=3)
    cfg = config.load("default", CFG)
    with distributed.Client(address, timeout=30) as client:
        wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 120, "two workers")
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(r=run_pipeline(pair.optical, pair.sar, cfg,
                                                                              scheduler=address)))
        runner.start()

        def w1_busy():
            return any(names.get(a) == "w1" and keys for a, keys in client.processing().items())

        wait_for(w1_busy, 300, "a tile on worker w1")
        workers["w1"].kill()  # SIGKILL: no goodbye to the scheduler
        runner.join(600)
        assert not runner.is_alive(), "the run did not finish after the worker was killed"
    assert workers["w1"].poll() == -signal.SIGKILL
    remote = result["r"].gdf
    local = run_pipeline(pair.optical, pair.sar, cfg).gdf
    assert len(remote) == len(local) > 10
    key = ["ref_col", "ref_row"]
    a = remote.sort_values(key).reset_index(drop=True)
    b = local.sort_values(key).reset_index(drop=True)
    for col in ("ref_col", "ref_row", "tgt_col", "tgt_row", "score", "outlier"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), atol=1e-6, err_msg=col)
