"""The one place that writes result files and hashes them.

Every output geomatch writes (tie-point tables, plots, checkpoints, patch sets, exports) goes through
``atomic_output`` or ``write_atomic``: the data goes to a temporary file beside the destination, which is
renamed over it only when complete, so an interrupted run never leaves half a file where a good one was.
Temporary files are named ``.<name>.<token>.partial<suffix>`` so a user (and the next run, see
``remove_stale_partials``) can recognise them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from geomatch.errors import InputError, OutputExistsError

PARTIAL_MARK = ".partial"
_SQLITE_SIDECARS = ("-journal", "-wal", "-shm")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(path, overwrite: bool) -> Path:
    """Fail early (before any work) when ``path`` exists without ``overwrite`` or its folder is missing."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"output {path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} already exists; pass --overwrite to replace it or choose another name")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist; create it or choose another output path")
    return path


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL_MARK}{path.suffix}")


def _share_mode(path: Path) -> None:
    # mkstemp-style private files (0600) would surprise users: results are shared like any other file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_output(path, overwrite: bool = False, check: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on failure delete it.

    ``check=False`` skips the exists/overwrite test for internal files (checkpoints a run owns).
    """
    path = check_writable(path, overwrite) if check else Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced no file for {path}")
        if tmp.is_file():
            _share_mode(tmp)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in _SQLITE_SIDECARS)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (creating its folder), replacing what was there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, check=False) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def remove_stale_partials(path) -> list[Path]:
    """Delete temporary files a killed earlier write to ``path`` left behind; return what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for p in path.parent.glob(f".{path.name}.*{PARTIAL_MARK}{path.suffix}*"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
