"""The checks a run passes before any heavy import (torch, dask) or any computation.

A run that is going to fail on its inputs or outputs should fail in the first second, in one line, with
nothing written; not after the pair, coarse and matching stages. ``check_run`` validates, in this order:

1. every file the run will write (table, its sidecars, the shift plot): a registered writer for the
   output (``--format`` or the suffix), no two outputs on one path, no output on an input, no existing
   file without ``--overwrite``;
2. the inputs (rasters, masks) open and their pixels can be read;
3. a ``--weights`` file exists (loading and verifying it needs torch: that comes with the scorer);
4. the output folder accepts new files (a real probe: ``os.access`` says yes to root on a read-only mount);
5. a ``--scheduler`` address accepts a TCP connection within a short timeout.

Config values (names, choices, numeric ranges) are checked earlier, by ``geomatch.config`` itself.
``claim_run`` then holds the outputs for the run (a second run to them fails at once) and deletes
temporary files a killed earlier run left behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from geomatch import registry
from geomatch.config import PipelineConfig
from geomatch.errors import InputError, SchedulerError
from geomatch.fileio import check_writable, claim_output, remove_stale_partials
from geomatch.pipeline.writer import writer_for

SCHEDULER_TIMEOUT_S = 2.0
_STREAM_SCHEMES = ("tcp", "tls", "ws", "wss")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".onnx")


@dataclass(frozen=True)
class RunPlan:
    """What a run will write: the writer's name, the table, the plot (or None) and every file, sidecars too."""

    writer: str
    table: Path
    plot: Path | None
    outputs: tuple[Path, ...]


def plot_path(table) -> Path:
    """Where the shift-vector plot of a run writing ``table`` goes."""
    return Path(table).with_suffix(".png")


def plan_outputs(output, writer: str, plot: bool) -> RunPlan:
    table = Path(output)
    files = [Path(p) for p in registry.load("writers", writer)().outputs(table)]
    png = plot_path(table) if plot else None
    return RunPlan(writer, table, png, tuple(files + ([png] if png else [])))


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    return False


def check_outputs(plan: RunPlan, inputs: dict[str, str], overwrite: bool) -> None:
    """No two outputs on one path, none on an input, none existing unless ``overwrite``."""
    def kind(i: int) -> str:
        if i == 0:
            return "tie-point table"
        return "shift plot (PNG)" if plan.plot is not None and i == len(plan.outputs) - 1 else "sidecar"

    for i, path in enumerate(plan.outputs):
        for j, other in enumerate(plan.outputs[:i]):
            if _same(path, other):
                raise InputError(
                    f"output {path}: the {kind(j)} and the {kind(i)} would both be written to this file; "
                    "choose another output name (or pass --no-plot)"
                )
        for role, src in inputs.items():
            if src and _same(path, Path(src)):
                raise InputError(f"output {path} is the {role} input; choose another output name")
    for path in plan.outputs:
        check_writable(path, overwrite)


def check_inputs(inputs: dict[str, str]) -> None:
    """Each raster opens and its pixels can be read: a one-line ``RasterError`` naming the file if not."""
    from geomatch.pipeline.raster import check_readable  # rasterio only: no torch, no dask

    for role, path in inputs.items():
        if path:
            check_readable(path, role)


def check_folder_writable(folder: Path) -> None:
    """Create and delete a probe file: the only test that holds for root, ACLs and read-only mounts."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".geomatch-probe.", dir=folder)
    except OSError as exc:
        raise InputError(f"output folder {folder} is not writable ({exc.strerror}); choose another output "
                         "folder or fix its permissions") from exc
    os.close(fd)
    os.unlink(probe)


def check_scheduler(address: str, timeout: float = SCHEDULER_TIMEOUT_S) -> None:
    """Connect to a dask.distributed scheduler before any work, instead of failing after the first stages."""
    url = urlsplit(address if "://" in address else f"tcp://{address}")
    if url.scheme not in _STREAM_SCHEMES:
        return  # inproc://, ucx://...: no plain socket to try; dask reports those itself
    try:
        host, port = url.hostname, url.port or 8786
    except ValueError as exc:
        raise SchedulerError(f"--scheduler {address}: not an address ({exc}); give e.g. tcp://HOST:8786") from exc
    if not host:
        raise SchedulerError(f"--scheduler {address}: no host; give e.g. tcp://HOST:8786")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__.replace("Error", " error").lower()
        raise SchedulerError(
            f"dask scheduler {address} cannot be reached ({why}); start it (`dask scheduler`) or fix --scheduler"
        ) from exc


def check_weights(spec: str) -> None:
    """A ``--weights`` value that names a file must name one (tags and auto/none are resolved with torch)."""
    path = Path(spec).expanduser()
    looks_like_path = os.sep in spec or path.suffix.lower() in _CHECKPOINT_SUFFIXES
    if spec.lower() not in ("auto", "none") and looks_like_path and not path.is_file():
        raise InputError(f"weights file {spec} not found; give an existing checkpoint, a shipped tag, auto or none")


def run_inputs(optical, sar, cfg: PipelineConfig) -> dict[str, str]:
    """The rasters a run reads, by role (the names the messages use)."""
    return {"optical": str(optical), "sar": str(sar), "optical mask": cfg.pair.optical_mask,
            "sar mask": cfg.pair.sar_mask}


def check_run(optical, sar, cfg: PipelineConfig, output, *, fmt: str | None = None, plot: bool | None = None,
              overwrite: bool = False, scheduler: str | None = None) -> RunPlan:
    """Every check a ``geomatch run`` can make before work starts; returns what it will write."""
    inputs = run_inputs(optical, sar, cfg)
    writer = writer_for(output, fmt)
    plan = plan_outputs(output, writer, cfg.write.plot if plot is None else plot)
    weights = cfg.match.weights if Path(cfg.match.weights).is_file() else ""  # not a tag, auto or none
    check_outputs(plan, {**inputs, "weights": weights}, overwrite)
    check_inputs(inputs)
    check_weights(cfg.match.weights)
    for folder in dict.fromkeys(p.parent for p in plan.outputs):
        check_folder_writable(folder)
    if scheduler:
        check_scheduler(scheduler)
    return plan


@contextlib.contextmanager
def claim_run(plan: RunPlan) -> Iterator[RunPlan]:
    """Hold every output of ``plan`` for the run, after clearing what a killed earlier run left there."""
    with contextlib.ExitStack() as stack:
        for path in plan.outputs:
            stack.enter_context(claim_output(path))
        # Only now: a partial file of a live run to the same output is protected by that run's claim.
        for path in plan.outputs:
            remove_stale_partials(path)
        yield plan
