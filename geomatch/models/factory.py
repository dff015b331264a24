"""Building a matcher: fresh from the registry, from a checkpoint for inference, or for fine-tuning.

Every path that turns a registry name (and perhaps a weights file) into a model goes through here, so the
checks that a checkpoint fits what was asked for (architecture, width, patch size) are made once.
"""

from __future__ import annotations

import logging
import math
import os
from functools import cache
from pathlib import Path

import torch

from geomatch.errors import CheckpointError, ConfigError
from geomatch.models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


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


def _check_fit(path: Path, name: str, meta: dict, width: float | None, patch_size: int | None) -> None:
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
    _check_fit(path, name, meta, width, patch_size)
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
