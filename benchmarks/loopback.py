"""A real dask.distributed cluster on loopback for the tests and benchmarks: one ``dask scheduler`` and
``dask worker`` processes (importable as ``loopback`` from both: ``pythonpath = benchmarks`` for the tests).

The workers are separate processes started in their own working folder (``cwd``), so a test sees what a
remote worker sees: a relative path given to the client does not resolve there.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def loopback_cluster(folder: Path, names=("w1", "w2"), cwd: Path | None = None,
                     resources: dict[str, str] | None = None) -> Iterator[tuple[str, dict]]:
    """Yield (scheduler address, {worker name: process}) once every worker has joined; all stopped at exit.

    ``resources`` gives a worker's ``--resources`` (e.g. ``{"w2": "GPU=1"}``)."""
    import distributed

    folder.mkdir(parents=True, exist_ok=True)
    sched_file = folder / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": cwd or folder}
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file",
                               str(sched_file), "--no-dashboard"], **quiet)]
    workers: dict[str, subprocess.Popen] = {}
    try:
        wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0, 60, "the scheduler file")
        address = json.loads(sched_file.read_text())["address"]
        for name in names:
            workers[name] = subprocess.Popen(
                [DASK, "worker", address, "--name", name, "--nthreads", "1", "--nworkers", "1", "--host",
                 "127.0.0.1", "--no-dashboard", "--local-directory", str(folder / name)]
                + (["--resources", resources[name]] if resources and name in resources else []), **quiet)
        procs += list(workers.values())
        with distributed.Client(address, timeout=30) as client:
            wait_for(lambda: len(client.scheduler_info()["workers"]) == len(names), 120, "the workers")
        yield address, workers
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
