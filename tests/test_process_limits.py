"""One thread layout that never oversubscribes, and GDAL's cache sized for tiles, set once per process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from geomatch import config, process_limits
from geomatch.process_limits import GDAL_CACHE_BYTES, Layout, plan


@pytest.mark.parametrize("omp", [None, "1", "2", "3", "0", "64", "lots"])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 16])
def test_task_threads_times_engine_threads_never_exceed_the_cores(n, omp):
    layout = plan(n, {} if omp is None else {"OMP_NUM_THREADS": omp})
    assert layout.tasks >= 1 and layout.engine >= 1
    assert layout.tasks * layout.engine <= n


def test_a_local_run_mirrors_the_nanny_and_honours_the_user():
    assert plan(4, {}) == Layout(tasks=4, engine=1, gdal_cache_bytes=GDAL_CACHE_BYTES)  # the nanny's OMP=1
    assert plan(8, {"OMP_NUM_THREADS": "2"}) == Layout(tasks=4, engine=2, gdal_cache_bytes=GDAL_CACHE_BYTES)
    assert plan(4, {"GDAL_CACHEMAX": "512"}).gdal_cache_bytes is None  # the user's cache wins


def test_apply_sets_the_engine_blas_and_gdal_once_in_a_fresh_process():
    code = """
import json, torch, threadpoolctl
from rasterio.env import get_gdal_config
from geomatch import process_limits
first = process_limits.apply()
torch.set_num_threads(3)
again = process_limits.apply()  # set once: a second call changes nothing
blas = {i["user_api"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}
print(json.dumps({"first": first.engine, "same": first is again, "torch": torch.get_num_threads(),
                  "blas": blas.get("blas"), "gdal": get_gdal_config("GDAL_CACHEMAX")}))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "GDAL_CACHEMAX")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["first"] == 1 and got["same"] is True
    assert got["torch"] == 3  # apply() did not reset what the caller set after it
    assert got["blas"] in (None, 1)
    assert got["gdal"] == GDAL_CACHE_BYTES


RETENTION = """
import os, sys, numpy as np
from geomatch import process_limits
if sys.argv[1] == "apply":
    assert process_limits.apply().mmap_threshold == process_limits.MMAP_THRESHOLD_BYTES
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
big = np.ones(16 * 2**20 // 8)
del big  # freeing a 16 MB block raises glibc's dynamic mmap threshold to 16 MB
base = rss()
blocks = [np.ones(2 * 2**20 // 8) for _ in range(200)]  # 400 MB of tile-sized arrays
last = blocks[-1]
del blocks  # all freed but the last
print(rss() - base)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_freed_tile_sized_arrays_go_back_to_the_system():
    def retained(mode):
        out = subprocess.run([sys.executable, "-c", RETENTION, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    # Without the fix ("plain") this script keeps ~400 MB on glibc's defaults (measured in a fresh process); the
    # baseline is not asserted because, late in a long pytest session, it has come out at 2 MB (cause not found),
    # and the property that matters is the fixed one.
    assert retained("apply") < 50


def test_a_local_run_uses_the_layouts_task_threads(tmp_path, monkeypatch):
    from geomatch.pipeline import run as run_mod
    from tests.factories import make_pair

    pair = make_pair(tmp_path, shift=(1.0, 0.5), size=(160, 160), seed=4)
    monkeypatch.setattr(process_limits, "_applied", Layout(tasks=1, engine=1, gdal_cache_bytes=None))
    seen = set()
    inner = run_mod.process_tile

    def recording(*args, **kwargs):
        seen.add(threading.get_ident())
        return inner(*args, **kwargs)

    monkeypatch.setattr(run_mod, "process_tile", recording)
    cfg = config.load("default", {"match.plugin": "ncc", "match.params": {"absolute": True}, "write.plot": False,
                                  "tiles.size": 20, "detect.cell_size": 12})
    result = run_mod.run_pipeline(pair.optical, pair.sar, cfg)
    assert result.summary["tiles"] >= 25 and len(result.gdf) > 0
    assert len(seen) == 1  # one task thread, as the layout says
