"""What one process running tie-point tasks may use: threads and GDAL's block cache, set once per process.

Threads: dask task threads x scoring-engine threads <= cores. dask.distributed's nanny starts every worker
with ``OMP_NUM_THREADS=1``, so each of a worker's task threads runs its engine on one thread; a local run
mirrors that, one engine thread per task thread and as many task threads as cores. Before, two local dask
threads each asked ONNX Runtime for two threads on two cores, and a loopback cluster beat the local run by
1.37x (issue 13). A user's ``OMP_NUM_THREADS=k`` is honoured: k engine threads, cores // k task threads.

The engine reads the count once, when it is built (ONNX Runtime's session takes ``torch.get_num_threads()``),
so the layout is applied before the first scorer of a run, and on a worker before the scorer it receives is
rebuilt; a scorer built earlier in the process keeps the threads it was built with.

GDAL's block cache defaults to 5 % of RAM (1.2 GB on a 24 GB machine), which a run's peak memory then grows
into. A tile's reads (two rasters, a 512 px core plus halo and search margin, striped files read whole rows)
need tens of MB, so 256 MB keeps the row of tiles being read cached with room to spare. A ``GDAL_CACHEMAX``
the user set in the environment wins.

Freed memory: glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
tile-sized arrays come from per-thread heaps that keep what is freed; at 10980 px that retention was half the
peak RSS (2.1 GB against 1.2 GB with a fixed threshold, benchmarks/scale.md). A fixed 128 KiB threshold, as
``MALLOC_MMAP_THRESHOLD_=131072`` would set it, gives large arrays back when they are freed; a threshold the
user set wins.

GPUs on a cluster: a worker started with ``--resources GPU=1`` advertises a GPU; when any worker does, the
scoring tasks (the matched tiles of ``run``, pairs of ``batch``) ask for one GPU each
(:func:`scoring_resources`), so they run only there, one at a time per GPU, where the scorer's
``device = "auto"`` picks CUDA. Detection and reading go anywhere. Without such a worker nothing is restricted:
CPU workers score.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, replace

GDAL_CACHE_BYTES = 256 * 2**20
MMAP_THRESHOLD_BYTES = 128 * 2**10
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@dataclass(frozen=True)
class Layout:
    tasks: int  # dask threads of a local run
    engine: int  # threads each scoring call may use
    gdal_cache_bytes: int | None  # None: the user's GDAL_CACHEMAX
    mmap_threshold: int | None = None  # glibc's, once applied; None: not glibc, or the user's


def cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container quota)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def plan(n_cores: int | None = None, env=None) -> Layout:
    """The layout for ``n_cores`` (default: :func:`cores`) under environment ``env`` (default: os.environ)."""
    env = os.environ if env is None else env
    n = max(1, int(n_cores or cores()))
    try:
        engine = int(env.get("OMP_NUM_THREADS", "1"))
    except ValueError:
        engine = 1
    engine = min(max(engine, 1), n)
    return Layout(tasks=max(1, n // engine), engine=engine,
                  gdal_cache_bytes=None if env.get("GDAL_CACHEMAX") else GDAL_CACHE_BYTES)


_applied: Layout | None = None


def apply() -> Layout:
    """Set the layout for this process on first call (later calls return it unchanged)."""
    global _applied
    if _applied is None:
        import torch
        from rasterio.env import set_gdal_config
        from threadpoolctl import threadpool_limits

        layout = plan()
        # What the nanny's OMP/MKL/OPENBLAS_NUM_THREADS do for a worker, for pools already started: torch's
        # (which ONNX Runtime follows), OpenMP's and the BLAS libraries numpy and scipy load.
        torch.set_num_threads(layout.engine)
        threadpool_limits(limits=layout.engine)
        if layout.gdal_cache_bytes is not None:
            set_gdal_config("GDAL_CACHEMAX", layout.gdal_cache_bytes)
        _applied = replace(layout, mmap_threshold=_fix_mmap_threshold())
    return _applied


def _fix_mmap_threshold() -> int | None:
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return MMAP_THRESHOLD_BYTES if libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 else None
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


GPU_RESOURCE = "GPU"


def scoring_resources(client) -> dict | None:
    """``{"GPU": 1}`` when a worker of ``client``'s cluster advertises a GPU resource, else None."""
    workers = client.scheduler_info().get("workers", {})
    if any(w.get("resources", {}).get(GPU_RESOURCE, 0) >= 1 for w in workers.values()):
        return {GPU_RESOURCE: 1}
    return None
