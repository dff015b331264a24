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

from geomatch.errors import InputError, OutputBusyError, OutputExistsError

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


def lock_path(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def claim_output(path) -> Iterator[Path]:
    """Hold an exclusive claim on ``path`` while a run works towards it.

    A second run to the same output then fails at once instead of working to the end and losing the
    race at the rename. The claim is an ``flock`` on ``.<name>.lock``: the kernel drops it when the
    process dies, even by SIGKILL, so a crashed run never blocks the next one.
    """
    import fcntl

    path = Path(path)
    lock = lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(
                f"output {path} is being written by another geomatch run right now ({lock} is held); "
                "wait for it to finish or choose another output"
            ) from None
        # The previous holder unlinks the lock file when done; if that happened between our open and
        # our flock we hold a lock on a deleted file, which claims nothing: open the new one.
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)
