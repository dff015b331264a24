"""The scoring path the tie-point pipeline calls: a matcher's inference form behind one numpy call.

``build_scorer(name, weights, device, batch_size, runtime)`` returns a :class:`Scorer`;
``scorer(optical, sar)`` takes (N, P, P) or (N, C, P, P) float32 arrays in [0, 1] and returns (N,) scores.
The runtime behind it (eager, channels-last, onnxruntime, autocast) is chosen in ``geomatch.models.engines``.

Built scorers are cached per process by (name, weights, device, runtime, width): dask workers call
``build_scorer`` once per task and get the already-loaded model.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from geomatch.errors import InputError
from geomatch.fileio import sha256_file
from geomatch.models.device import parse_device
from geomatch.models.engines import CPU_RUNTIMES, CUDA_RUNTIMES, Engine, choose_engine, engine_library
from geomatch.models.factory import build_matcher
from geomatch.models.precision import check_request as check_precision
from geomatch.models.precision import choose_reduced
from geomatch.models.weights import resolve_weights, weights_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Loaded:
    engine: Engine
    name: str
    runtime: str
    device: str
    patch_size: int
    in_channels: tuple[int, int]
    width: float | None
    weights_tag: str
    weights_sha256: str | None
    spec: tuple  # build_scorer's own arguments, to rebuild on another process
    parity: float | None  # max |score - eager score| on the build-time check batch; None for eager itself
    gsd_m: float | None = None  # ground sampling distance the weights were trained at (None: not recorded)
    gsd_range_m: tuple[float, float] | None = None  # the range their scale augmentation covered
    precision: str = "fp32"  # the arithmetic the engine runs (geomatch.models.precision)
    thresholds: dict = field(default_factory=dict)  # the weights' own filter floor/ceiling (weights.RECORD_KEYS)


def _rebuild(spec: tuple, batch_size: int) -> Scorer:
    from geomatch import process_limits

    process_limits.apply()  # on a dask worker: its thread layout before the engine reads it (first task only)
    name, weights, device, runtime, width, params, precision = spec
    return build_scorer(name, weights, device, batch_size, runtime, width, params, precision)


class Scorer:
    """Scores (optical, SAR) patch pairs in batches; see :func:`build_scorer`."""

    def __init__(self, loaded: _Loaded, batch_size: int):
        self._loaded = loaded
        self.batch_size = int(batch_size)

    name = property(lambda self: self._loaded.name)
    runtime = property(lambda self: self._loaded.runtime)
    device = property(lambda self: self._loaded.device)
    patch_size = property(lambda self: self._loaded.patch_size)
    in_channels = property(lambda self: self._loaded.in_channels)
    width = property(lambda self: self._loaded.width)
    weights_tag = property(lambda self: self._loaded.weights_tag)
    weights_sha256 = property(lambda self: self._loaded.weights_sha256)
    parity = property(lambda self: self._loaded.parity)
    precision = property(lambda self: self._loaded.precision)  # the one used: a reduced one may fall back to fp32
    gsd_m = property(lambda self: self._loaded.gsd_m)  # None for classical matchers (and unrecorded weights)
    gsd_range_m = property(lambda self: self._loaded.gsd_range_m)
    thresholds = property(lambda self: dict(self._loaded.thresholds))  # {} for classical matchers

    def __repr__(self) -> str:
        return (f"Scorer({self.name!r}, weights={self.weights_tag!r}, device={self.device!r}, "
                f"runtime={self.runtime!r}, batch_size={self.batch_size})")  # fmt: skip

    def describe(self) -> dict:
        """What a run records about its scorer (the GeoPackage ``runs`` row): plain JSON-ready values.

        ``{"matcher", "weights", "weights_sha256", "runtime", "engine", "device"}``: ``weights`` is the
        resolved tag (a shipped tag, a checkpoint's file name, or ``none``), ``weights_sha256`` the weights
        file's sha256 (None without weights), ``runtime`` the one chosen (eager, channels-last, onnxruntime,
        autocast), ``engine`` the library executing it (onnxruntime or torch), ``device`` e.g. ``cpu``.
        """
        return {"matcher": self.name, "weights": self.weights_tag, "weights_sha256": self.weights_sha256,
                "runtime": self.runtime, "engine": engine_library(self.runtime), "device": self.device,
                "precision": self.precision}

    def __reduce__(self):
        # Sent to a dask worker, a scorer is rebuilt there (once per process, through the cache) instead of
        # pickling a loaded model or an ONNX Runtime session.
        return (_rebuild, (self._loaded.spec, self.batch_size))

    def _as_batch(self, arr: np.ndarray, what: str, channels: int) -> np.ndarray:
        arr = np.asarray(arr, dtype=np.float32)
        p = self.patch_size
        if arr.ndim == 3:
            arr = arr[:, None]
        if arr.ndim != 4 or arr.shape[1:] != (channels, p, p):
            raise ValueError(f"{self.name}: {what} patches must be (N,{p},{p}) or (N,{channels},{p},{p}), "
                             f"got {np.shape(arr)}")  # fmt: skip
        return np.ascontiguousarray(arr)

    def __call__(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        co, cs = self.in_channels
        optical = self._as_batch(optical, "optical", co)
        sar = self._as_batch(sar, "SAR", cs)
        if len(optical) != len(sar):
            raise ValueError(f"{self.name}: {len(optical)} optical patches but {len(sar)} SAR patches")
        out = np.empty(len(optical), dtype=np.float32)
        for start in range(0, len(optical), self.batch_size):
            stop = start + self.batch_size
            out[start:stop] = self._loaded.engine(optical[start:stop], sar[start:stop])
        return out


_CACHE: dict[tuple, _Loaded] = {}
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget loaded models (tests; or to free memory)."""
    with _LOCK:
        _CACHE.clear()


def build_scorer(name: str, weights: str | os.PathLike | None = "auto", device: str = "auto", batch_size: int = 256,
                 runtime: str = "auto", width: float | None = None, params: dict | None = None,
                 precision: str = "fp32") -> Scorer:
    """A :class:`Scorer` for matcher ``name``.

    ``weights``: ``auto`` (shipped weights; none needed for parameter-free matchers), ``none`` (fresh
    initialisation, for tests and timing), a shipped tag, or a checkpoint path. ``device``: auto, cpu,
    cuda[:N]. ``runtime``: auto, eager, channels-last, onnxruntime (CPU) or autocast (CUDA). ``params``: the
    matcher's constructor options (a pipeline's ``match.params``). ``precision``: fp32, bf16 or int8
    (``match.precision``); a reduced one falls back to fp32, with a warning, when its build-time score check
    fails (``geomatch.models.precision``).
    """
    if int(batch_size) < 1:
        raise InputError(f"batch_size {batch_size} must be at least 1")
    dev = parse_device(device)
    valid = CUDA_RUNTIMES if dev.type == "cuda" else CPU_RUNTIMES
    if runtime != "auto" and runtime not in valid:
        raise InputError(f"runtime '{runtime}' is not available on {dev.type}; use auto or one of {', '.join(valid)}")
    check_precision(precision, runtime, dev)
    resolved = resolve_weights(name, weights)
    weights_key = "none"
    if resolved is not None:
        st = resolved.path.stat() if resolved.path.exists() else None
        # A checkpoint rewritten in place (a new training run) must not be served from the cache.
        weights_key = (str(resolved.path), st.st_mtime_ns if st else 0, st.st_size if st else 0)
    params = dict(params or {})
    key = (name, weights_key, str(dev), runtime, None if width is None else float(width),
           tuple(sorted((k, repr(v)) for k, v in params.items())), precision)
    with _LOCK:
        loaded = _CACHE.get(key)
        if loaded is None:
            spec = (name, None if weights is None else str(weights), str(device), runtime, width, params, precision)
            loaded = _load(name, resolved, dev, runtime, width, params, spec, precision)
            _CACHE[key] = loaded
    return Scorer(loaded, batch_size)


def _load(name: str, resolved, dev: torch.device, runtime: str, width: float | None, params: dict,
          spec: tuple, precision: str = "fp32") -> _Loaded:
    if resolved is None:
        model = build_matcher(name, width=width, params=params)
        sha = None
        tag = "none"
        if any(True for _ in model.parameters()):
            log.warning("%s: no weights (--weights none): scores come from untrained parameters", name)
    else:
        model = build_matcher(name, width=width, weights=resolved.path, expected_sha256=resolved.sha256,
                              params=params)
        sha = resolved.sha256 or sha256_file(resolved.path)
        tag = resolved.tag
    model = model if getattr(model, "pruned", False) else model.prune()
    model.requires_grad_(False)
    engine, chosen, parity = choose_engine(model, dev, runtime, sha, name)
    engine, chosen, parity, precision = choose_reduced(model, dev, runtime, precision, sha, name,
                                                       (engine, chosen, parity))
    parameter_free = not any(True for _ in model.parameters())
    log.info("%s scorer: weights %s, %s %s on %s", name, tag, chosen, precision, dev)
    cfg = model.config
    gsd_m, gsd_range_m, thresholds = weights_record(resolved)
    return _Loaded(engine, name, chosen, str(dev), int(cfg.patch_size), tuple(cfg.in_channels),
                   None if parameter_free else float(cfg.width), tag, sha, spec, parity,
                   gsd_m, gsd_range_m, precision=precision, thresholds=thresholds)  # fmt: skip


__all__ = ["Scorer", "build_scorer", "clear_cache"]
