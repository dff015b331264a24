"""Matcher weights on disk: checkpoints with metadata, shipped weights, and building a matcher from them.

A checkpoint is one ``torch.save`` file holding only tensors and plain data, so it loads with
``torch.load(weights_only=True)``::

    {"format": "geomatch-checkpoint", "format_version": 1, "metadata": {...}, "state_dict": {...}}

``metadata`` always has ``architecture`` (registry name), ``width``, ``patch_size``, ``in_channels``,
``normalisation``, ``pruned``, ``dtype``, ``training``, ``metrics`` and ``versions``.

Shipped weights live in ``geomatch_plugins.weights`` (``plugins/weights/``) next to ``index.json``, which maps
a tag to ``{file, matcher, width, sha256, description, pair_types}``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import torch

from geomatch.errors import CheckpointError, ConfigError
from geomatch.fileio import sha256_bytes, sha256_file, write_atomic  # noqa: F401  (re-exported until callers move)

log = logging.getLogger(__name__)

FORMAT = "geomatch-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_PACKAGE = "geomatch_plugins.weights"
PREFERRED_PAIR_TYPE = "optical-sar"
REQUIRED_METADATA = ("architecture", "width", "patch_size", "in_channels", "normalisation", "pruned")


def _versions() -> dict:
    import numpy

    from geomatch import __version__

    return {"geomatch": __version__, "torch": torch.__version__, "numpy": numpy.__version__}


def _plain(obj):
    """Metadata as JSON-compatible data, which weights_only loading accepts and the CLI can print."""
    return json.loads(json.dumps(obj, default=str))


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
    """Save ``model``'s weights with ``metadata``; return the file's sha256.

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
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": _plain(meta), "state_dict": state}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    write_atomic(path, data)
    return sha256_bytes(data)


def load_checkpoint(path: str | os.PathLike, *, expected_sha256: str | None = None) -> tuple[dict, dict]:
    """Return ``(state_dict, metadata)``; a checksum mismatch or a foreign file is a ``CheckpointError``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read weights file {path}: {exc.strerror or exc}; check --weights") from exc
    actual = sha256_bytes(data)
    if expected_sha256 is not None and actual != expected_sha256.lower():
        raise CheckpointError(
            f"weights file {path} has sha256 {actual} but {expected_sha256} was expected; "
            "the file is corrupt or not the one named: replace it"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a loadable geomatch checkpoint ({type(exc).__name__}); give a file written by "
            "geomatch train or save_checkpoint"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a geomatch checkpoint (no '{FORMAT}' header); give a geomatch .pt file")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {payload['format_version']}, newer than this geomatch reads "
            f"({FORMAT_VERSION}); upgrade geomatch"
        )
    meta = payload.get("metadata") or {}
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise CheckpointError(f"{path} lacks metadata {', '.join(missing)}; re-save it with save_checkpoint")
    return payload["state_dict"], meta


def _matcher_class(name: str):
    from geomatch import registry

    return registry.load("matchers", name)


@cache
def needs_weights(name: str) -> bool:
    """Whether matcher ``name`` has learned parameters (parameter-free ones, like NCC, need no weights)."""
    from geomatch.models.base import MatcherConfig

    cls = _matcher_class(name)
    declared = getattr(cls, "needs_weights", None)
    if declared is not None:
        return bool(declared)
    # Built narrow only to look: a full-width MFD-Net would cost 151 M parameters for a yes/no answer.
    probe = cls(MatcherConfig(width=0.125))
    return any(True for _ in probe.parameters())


def _construct(cls, name: str, config, params: dict):
    # A bad option *value* is the matcher's own ConfigError and passes through; an unknown option is ours.
    try:
        return cls(config, **params)
    except TypeError as exc:
        if not params:
            raise
        raise ConfigError(f"matcher {name} does not take options {sorted(params)} ({exc}); fix match.params") from exc


def build_matcher(name: str, width: float | None = None, weights: str | os.PathLike | None = None, *,
                  patch_size: int | None = None, expected_sha256: str | None = None, params: dict | None = None):
    """Build matcher ``name``; with ``weights`` (a checkpoint path) load them, in eval mode.

    Without weights the training form is built at ``width`` (default 1.0) with fresh initialisation. With
    weights, width, patch size, channels and normalisation come from the checkpoint, and the model is built
    in the form it was saved in (training, or pruned for inference). A checkpoint for another architecture
    or width is a ``CheckpointError`` naming both. ``params`` are the matcher's own constructor options
    (a pipeline's ``match.params``, e.g. NCC's ``window``).
    """
    from geomatch.models.base import MatcherConfig

    cls = _matcher_class(name)
    params = dict(params or {})
    if weights is None:
        kwargs = {"width": 1.0 if width is None else float(width)}
        if patch_size is not None:
            kwargs["patch_size"] = int(patch_size)
        return _construct(cls, name, MatcherConfig(**kwargs), params)
    path = Path(weights)
    state, meta = load_checkpoint(path, expected_sha256=expected_sha256)
    if meta["architecture"] != name:
        raise CheckpointError(
            f"{path} holds weights for matcher '{meta['architecture']}', not '{name}'; "
            f"use --matcher {meta['architecture']} or other weights"
        )
    if width is not None and not math.isclose(float(meta["width"]), float(width)):
        raise CheckpointError(
            f"{path} holds {name} weights at width {meta['width']:g}, not {float(width):g}; "
            f"use width {meta['width']:g} or other weights"
        )
    if patch_size is not None and int(meta["patch_size"]) != int(patch_size):
        raise CheckpointError(
            f"{path} was trained on {meta['patch_size']}-pixel patches, not {patch_size}; use patch size "
            f"{meta['patch_size']}"
        )
    config = MatcherConfig(
        patch_size=int(meta["patch_size"]),
        in_channels=tuple(int(c) for c in meta["in_channels"]),
        normalisation=str(meta["normalisation"]),
        width=float(meta["width"]),
    )
    def fit(model, assign: bool):
        if meta["pruned"]:
            model = model.prune()
        try:
            model.load_state_dict(_as_model_dtypes(state, model), strict=True, assign=assign)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:3])[:300]
            raise CheckpointError(f"{path} does not fit {name} at width {config.width:g}: {detail}") from exc
        return model.eval()

    # Built shape-only first: initialising a full-width MFD-Net (151 M parameters) only to overwrite it took
    # ~18 s here. A matcher that keeps tensors outside its state dict is built the ordinary way.
    try:
        with torch.device("meta"):
            shell = _construct(cls, name, config, params)
    except Exception:
        shell = None
    if shell is not None:
        model = fit(shell, assign=True)
        if not _has_meta_tensors(model):
            return model
    return fit(_construct(cls, name, config, params), assign=False)


def build_for_finetuning(name: str, weights: str | os.PathLike, *, width: float | None = None,
                         patch_size: int | None = None):
    """The training form of ``name`` started from ``weights``, in train mode.

    A pruned (shipped) checkpoint holds only the main path: its training-only heads and decoders start from
    fresh initialisation, since MLPP deletes them after training. Architecture, width and patch size are
    checked as in :func:`build_matcher`.
    """
    loaded = build_matcher(name, width=width, weights=weights, patch_size=patch_size)
    if not loaded.pruned:
        return loaded.train()
    fresh = _construct(_matcher_class(name), name, loaded.config, {})
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    stray = [k for k in missing if k.split(".")[0] not in fresh.TRAINING_ONLY]
    if unexpected or stray:
        raise CheckpointError(f"{weights} does not fit the training form of {name}: {(unexpected + stray)[:3]}")
    log.info("fine-tuning from pruned weights %s: %d training-only tensors start fresh", weights, len(missing))
    return fresh.train()


def _as_model_dtypes(state: dict, model) -> dict:
    """Half-precision storage back to the model's own dtypes (``assign`` would otherwise keep float16)."""
    target = model.state_dict()
    out = {}
    for key, t in state.items():
        ref = target.get(key)
        if ref is not None and t.is_floating_point() and ref.is_floating_point() and t.dtype != ref.dtype:
            t = t.to(ref.dtype)
        out[key] = t
    return out


def _has_meta_tensors(model) -> bool:
    if any(t.is_meta for t in model.parameters()) or any(t.is_meta for t in model.buffers()):
        return True
    return any(isinstance(v, torch.Tensor) and v.is_meta for m in model.modules() for v in vars(m).values())


# ---- shipped weights ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedWeights:
    """Weights chosen for a matcher: ``tag`` goes into the tie points' ``weights`` column."""

    tag: str
    path: Path
    sha256: str | None = None  # known for shipped weights; a user file is not checked
    description: str = ""


def _weights_dir() -> Path:
    return Path(str(resources.files(WEIGHTS_PACKAGE)))


def shipped_weights() -> dict[str, dict]:
    """The shipped weights index, ``tag -> {file, matcher, width, sha256, description, pair_types}``."""
    index = _weights_dir() / "index.json"
    if not index.is_file():
        return {}
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"shipped weights index {index} is unreadable ({exc}); reinstall geomatch") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"shipped weights index {index} is not a JSON object; reinstall geomatch")
    return data


def shipped_tags(matcher_name: str) -> list[str]:
    """Tags shipped for ``matcher_name``, preferred first (an optical-SAR tag leads)."""
    index = shipped_weights()

    def rank(tag: str) -> tuple[int, str]:
        entry = index[tag]
        preferred = tag == PREFERRED_PAIR_TYPE or tag.endswith(PREFERRED_PAIR_TYPE)
        preferred = preferred or PREFERRED_PAIR_TYPE in (entry.get("pair_types") or [])
        return (0 if preferred else 1, tag)

    return sorted((t for t, e in index.items() if e.get("matcher") == matcher_name), key=rank)


def _from_index(tag: str, entry: dict) -> ResolvedWeights:
    return ResolvedWeights(tag, _weights_dir() / entry["file"], entry.get("sha256"), entry.get("description", ""))


def resolve_weights(matcher_name: str, spec: str | os.PathLike | None) -> ResolvedWeights | None:
    """Turn a ``--weights`` value into a file: ``auto`` (the shipped tag, optical-SAR preferred), ``none``
    (fresh initialisation; ``None``), a shipped tag, or a checkpoint path. Parameter-free matchers get None."""
    spec = "none" if spec is None else str(spec)
    if spec.lower() == "none":
        return None
    parameter_free = not needs_weights(matcher_name)
    if spec.lower() == "auto":
        if parameter_free:
            return None
        tags = shipped_tags(matcher_name)
        if not tags:
            raise CheckpointError(
                f"matcher {matcher_name} has no weights: give --weights PATH or use the ncc matcher"
            )
        return _from_index(tags[0], shipped_weights()[tags[0]])
    if parameter_free:
        raise CheckpointError(f"matcher {matcher_name} is parameter-free and takes no weights; drop --weights {spec}")
    index = shipped_weights()
    if spec in index:
        entry = index[spec]
        if entry.get("matcher") != matcher_name:
            raise CheckpointError(
                f"weights tag '{spec}' is for matcher '{entry.get('matcher')}', not '{matcher_name}'; "
                f"use --matcher {entry.get('matcher')} or another tag"
            )
        return _from_index(spec, entry)
    path = Path(spec).expanduser()
    if path.is_file():
        return ResolvedWeights(path.name, path.resolve())
    available = ", ".join(shipped_tags(matcher_name)) or "none shipped"
    raise CheckpointError(
        f"weights '{spec}' for matcher {matcher_name} is neither a shipped tag ({available}) nor an existing "
        "file; give --weights PATH, auto or none"
    )
