"""The checkpoint file format: matcher weights with metadata, and the training state ``--resume`` reads.

A checkpoint is one ``torch.save`` file holding only tensors and plain data, so it loads with
``torch.load(weights_only=True)``::

    {"format": "geomatch-checkpoint", "format_version": 2, "metadata": {...}, "state_dict": {...},
     "checksum": {"sha256": ...}}

``metadata`` always has ``architecture`` (registry name), ``width``, ``patch_size``, ``in_channels``,
``normalisation``, ``pruned``, ``dtype``, ``training``, ``metrics`` and ``versions``.

``checksum`` is a sha256 over the file's *content* (every other key, tensors as raw bytes), checked on
every load: torch's zip container keeps no checksum of its own, so a flipped byte in a tensor used to load
silently. A whole-file sha256 cannot be stored inside the file it covers, and a content digest also
survives re-serialisation unchanged. Version-1 files (no checksum) still load: the shipped ones are
checked against the whole-file sha256 in their index instead, a user's with a warning.

The training state (``resume.pt``) is the same kind of file with its own header:
``{"format": "geomatch-training-state", "format_version": 1, "state": {...}, "checksum": {...}}``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from geomatch.errors import CheckpointError
from geomatch.fileio import sha256_bytes, write_atomic

log = logging.getLogger(__name__)

FORMAT = "geomatch-checkpoint"
FORMAT_VERSION = 2
STATE_FORMAT = "geomatch-training-state"
STATE_FORMAT_VERSION = 1
REQUIRED_METADATA = ("architecture", "width", "patch_size", "in_channels", "normalisation", "pruned")
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _versions() -> dict:
    import numpy

    from geomatch import __version__

    return {"geomatch": __version__, "torch": torch.__version__, "numpy": numpy.__version__}


def _plain(obj):
    """Metadata as JSON-compatible data, which weights_only loading accepts and the CLI can print."""
    return json.loads(json.dumps(obj, default=str))


# ---- content checksum ----------------------------------------------------------------------------------------


def _feed(h, obj) -> None:
    # Each value is framed by a type tag and its length, so no two different structures hash alike.
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        flat = t.reshape(-1)
        if flat.numel() and flat.stride(0) != 1:  # e.g. a size-1 axis with a stride > 1: "contiguous" to torch
            flat = flat.clone(memory_format=torch.contiguous_format)
        h.update(flat.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, list | tuple):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for value in obj:
            _feed(h, value)
    else:
        text = repr(obj)
        h.update(f"S{type(obj).__name__}{len(text)}:{text}".encode())


def content_sha256(payload: dict) -> str:
    """sha256 over every key of ``payload`` but ``checksum``: tensors by dtype, shape and bytes."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "checksum"})
    return h.hexdigest()


def _verify(payload: dict, path: Path) -> None:
    stored = (payload.get("checksum") or {}).get("sha256")
    if stored is None:
        raise CheckpointError(f"{path} has no checksum although its format requires one; the file is damaged: "
                              "replace it")  # fmt: skip
    try:
        actual = content_sha256(payload)
    except Exception as exc:  # content no geomatch file has (a damaged tensor header, say)
        raise CheckpointError(f"{path} is damaged ({type(exc).__name__} reading its content); replace it") from exc
    if actual != stored:
        raise CheckpointError(f"{path} fails its checksum: the file was damaged after geomatch wrote it; restore "
                              "it from a copy or train again")  # fmt: skip


def _save_sealed(payload: dict, path: str | os.PathLike) -> str:
    payload = {**payload, "checksum": {"sha256": content_sha256(payload)}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    write_atomic(path, data)
    return sha256_bytes(data)


def _read(path: Path, what: str, fix: str) -> tuple[bytes, object]:
    """The file's bytes and its weights-only unpickled content; any failure is one CheckpointError line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc}; {fix}") from exc
    try:
        # A foreign file can make torch warn (an unusual pickle protocol): our one line says it all.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        for w in caught:
            log.debug("loading %s: %s: %s", path, w.category.__name__, w.message)
        return data, payload
    except pickle.UnpicklingError as exc:
        # torch's own message advises weights_only=False, i.e. running the file's code: never pass that on,
        # not even in the -v traceback (hence "from None").
        found = _UNSAFE_GLOBAL.search(str(exc))
        detail = f"it refers to {found.group(1)}" if found else "it is not a torch file of tensors and plain data"
        raise CheckpointError(f"{path} is not a loadable {what} ({detail}; such files are never loaded); "
                              f"{fix}") from None  # fmt: skip
    except Exception as exc:
        raise CheckpointError(f"{path} is not a loadable {what} ({type(exc).__name__}); {fix}") from exc


# ---- matcher checkpoints ---------------------------------------------------------------------------------------


def checkpoint_metadata(model, metadata: dict | None = None) -> dict:
    """The model's own facts merged with caller-supplied ones (training, metrics, description...)."""
    metadata = dict(metadata or {})
    given = metadata.get("architecture")
    if given is not None and given != model.name:
        raise ValueError(f"metadata says architecture '{given}' but the model is '{model.name}'")
    cfg = model.config
    meta = {
        "training": {},
        "metrics": {},
        **metadata,
        "architecture": model.name,
        "width": float(cfg.width),
        "patch_size": int(cfg.patch_size),
        "in_channels": [int(c) for c in cfg.in_channels],
        "normalisation": cfg.normalisation,
        "pruned": bool(getattr(model, "pruned", False)),
        "versions": _versions(),
    }
    return meta


def save_checkpoint(model, path: str | os.PathLike, *, metadata: dict, half: bool = False) -> str:
    """Save ``model``'s weights with ``metadata`` and their checksum; return the file's sha256.

    ``half=True`` stores the learned parameters in float16 (for shipped weights: half the size); buffers
    such as BatchNorm running statistics stay float32, since their variance loses most in half precision.
    """
    param_names = {name for name, _ in model.named_parameters()}
    state = {}
    for key, t in model.state_dict().items():
        t = t.detach().cpu()
        if half and key in param_names and t.is_floating_point():
            t = t.half()
        state[key] = t.clone()
    meta = checkpoint_metadata(model, metadata)
    meta["dtype"] = "float16" if half else "float32"
    return _save_sealed({"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": _plain(meta),
                         "state_dict": state}, path)  # fmt: skip


def load_checkpoint(path: str | os.PathLike, *, expected_sha256: str | None = None) -> tuple[dict, dict]:
    """Return ``(state_dict, metadata)``; a checksum mismatch or a foreign file is a ``CheckpointError``.

    ``expected_sha256`` (the shipped index's) is checked against the whole file; the checksum stored in the
    file is checked in any case.
    """
    path = Path(path)
    fix = "give a file written by geomatch train or save_checkpoint (check --weights)"
    data, payload = _read(path, "geomatch checkpoint", fix)
    if expected_sha256 is not None:
        actual = sha256_bytes(data)
        if actual != expected_sha256.lower():
            raise CheckpointError(
                f"weights file {path} has sha256 {actual} but {expected_sha256} was expected; "
                "the file is corrupt or not the one named: replace it"
            )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a geomatch checkpoint (no '{FORMAT}' header); give a geomatch .pt file")
    version = payload.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version}, newer than this geomatch reads ({FORMAT_VERSION}); "
            "upgrade geomatch"
        )
    # Only a file that says it is version 1 may lack the checksum: a damaged byte cannot both drop the
    # checksum and turn the version into 1.
    if "checksum" in payload or version != 1:
        _verify(payload, path)
    elif expected_sha256 is None:
        log.warning("%s has no checksum (written by an older geomatch): loaded unverified", path)
    meta = payload.get("metadata") or {}
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise CheckpointError(f"{path} lacks metadata {', '.join(missing)}; re-save it with save_checkpoint")
    return payload["state_dict"], meta


# ---- training state ------------------------------------------------------------------------------------------


def save_training_state(state: dict, path: str | os.PathLike) -> None:
    """Write a training loop's state (weights, optimiser, random-number states, history) with its checksum."""
    _save_sealed({"format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION, "state": state}, path)


def load_training_state(path: str | os.PathLike) -> dict:
    """The state :func:`save_training_state` wrote; a damaged, foreign or unsafe file is a ``CheckpointError``."""
    path = Path(path)
    fix = "delete it (or the run folder) and train without --resume"
    _, payload = _read(path, "training state", fix)
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a geomatch training state (no '{STATE_FORMAT}' header); {fix}")
    version = payload.get("format_version")
    if isinstance(version, int) and version > STATE_FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer geomatch (training state format {version}); "
                              "upgrade geomatch")  # fmt: skip
    _verify(payload, path)
    return payload["state"]
