"""Shared pieces of the fault-matrix tests: a fault case, the files it starts from, and the checks.

A case runs a ``geomatch`` command line in a folder holding a tiny real GeoTIFF pair, then asserts the
exit code, the one-line message (no traceback unless ``-v``) and, by sha256 before and after, that
every file that was there is untouched and nothing was added (no output, temporary or lock file).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from tests.factories import make_pair, write_raster

NCC = ["--matcher", "ncc", "--set", "match.params={absolute=true}"]


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]  # "{d}" stands for the case's folder
    code: int
    says: tuple[str, ...] = ()  # case-insensitive pieces of the one message line
    setup: Callable[[Path], None] | None = None
    usage: bool = False  # a click usage error: usage lines come before the "Error:" line
    creates: tuple[str, ...] = field(default=())  # files a successful case must write


def base_pair(folder: Path):
    return make_pair(folder, shift=(2.3, -1.4), size=(160, 180), seed=3)  # enough points for a "registered" verdict


def copy_pair(src: Path, dst: Path) -> None:
    for name in ("optical.tif", "sar.tif"):
        shutil.copy(src / name, dst / name)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def expand(args: list[str], folder: Path) -> list[str]:
    return [a.replace("{d}", str(folder)) for a in args]


def run_args(out: str = "{d}/tp.gpkg", *extra: str) -> list[str]:
    return ["run", "--optical", "{d}/optical.tif", "--sar", "{d}/sar.tif", "-o", out, *NCC, *extra]


def assert_one_line_error(stderr: str, says: tuple[str, ...], alone: bool = True) -> None:
    """One ``Error:`` line holding every piece of ``says``, no traceback; ``alone``: nothing else on stderr
    (false for click's usage errors and for faults found after the run has logged its progress)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    if alone:
        assert lines == errors, f"more than the one error line:\n{stderr}"
    for piece in says:
        assert piece.lower() in errors[0].lower(), f"{piece!r} not in {errors[0]!r}"


# ---- setups: each turns the copied pair into one fault ----------------------------------------------------


def write_file(name: str, data: bytes = b"precious") -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        (d / name).write_bytes(data)

    return setup


def mkdir(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).mkdir()


def truncate(name: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])

    return setup


def rewrite(name: str, *, crs=..., transform=None, data=None, nodata=None, gcps=None, dtype=None):
    """Rewrite raster ``name`` in place with some of its facts changed (``crs=None``: no CRS)."""

    def setup(d: Path) -> None:
        path = d / name
        with rasterio.open(path) as src:
            arr = src.read() if data is None else data(src.read())
            t, c = src.transform, src.crs
        path.unlink()
        t = transform or t
        c = c if crs is ... else crs
        if gcps is not None:
            write_raster(path, arr, None, None, nodata, dtype)
            with rasterio.open(path, "r+") as dst:
                dst.gcps = (gcps(t), c)
            return
        write_raster(path, arr, t, c, nodata, dtype)

    return setup


def mask_like(name: str, of: str, shift_px: tuple[float, float] = (0.0, 0.0), value: int = 1):
    """A uint8 mask on the grid of raster ``of``, moved by ``shift_px`` of its pixels."""

    def setup(d: Path) -> None:
        with rasterio.open(d / of) as src:
            t, c, h, w = src.transform, src.crs, src.height, src.width
        moved = t * rasterio.Affine.translation(*shift_px)
        write_raster(d / name, np.full((h, w), value, np.uint8), moved, c)

    return setup


def complex_sar(d: Path) -> None:
    """The SAR as an SLC: complex64 with the intensity's square root as amplitude and a random phase."""
    with rasterio.open(d / "sar.tif") as src:
        amp = np.sqrt(src.read(1).astype(np.float64))
        t, c = src.transform, src.crs
    phase = np.random.default_rng(0).uniform(-np.pi, np.pi, amp.shape)
    (d / "sar.tif").unlink()
    write_raster(d / "sar.tif", (amp * np.exp(1j * phase)).astype(np.complex64), t, c)


def gcps_only(t):
    from rasterio.control import GroundControlPoint

    return [GroundControlPoint(row=r, col=c, x=(t * (c, r))[0], y=(t * (c, r))[1])
            for r, c in ((0, 0), (0, 100), (80, 0), (80, 100))]


def move_far(name: str) -> Callable[[Path], None]:
    """Georeference ``name`` a thousand kilometres east of where it was."""

    def setup(d: Path) -> None:
        with rasterio.open(d / name, "r+") as dst:
            t = dst.transform
            dst.transform = rasterio.Affine(t.a, t.b, t.c + 1e6, t.d, t.e, t.f)

    return setup
