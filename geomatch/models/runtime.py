"""The scoring path the tie-point pipeline calls: a matcher's inference form behind one numpy call.

``build_scorer(name, weights, device, batch_size, runtime)`` returns a :class:`Scorer`;
``scorer(optical, sar)`` takes (N, P, P) or (N, C, P, P) float32 arrays in [0, 1] and returns (N,) scores.

CPU runtimes: ``eager`` (PyTorch), ``channels-last`` (PyTorch, NHWC memory layout) and ``onnxruntime``.
``runtime="auto"`` takes them in the order measured fastest on the project's 2-core CPU (see
benchmarks/matchers.md: ONNX Runtime ahead of channels-last ahead of eager for the networks), and keeps a
runtime only if it reproduces eager scores within ``PARITY_TOL`` on a small random batch, checked once when
built; otherwise it logs why and tries the next. On CUDA, ``auto`` is eager under float16 autocast, kept if
it stays within ``AUTOCAST_TOL`` of float32 (half precision cannot meet 1e-4).

Built scorers are cached per process by (name, weights, device, runtime, width): dask workers call
``build_scorer`` once per task and get the already-loaded model.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geomatch.errors import InputError
from geomatch.models.checkpoint import build_matcher, resolve_weights, sha256_file, write_atomic

log = logging.getLogger(__name__)

CPU_RUNTIMES = ("eager", "channels-last", "onnxruntime")
CUDA_RUNTIMES = ("eager", "channels-last", "autocast")
AUTO_ORDER_CPU = ("onnxruntime", "channels-last", "eager")
AUTO_ORDER_CUDA = ("autocast", "eager")
PARITY_TOL = 1e-4
AUTOCAST_TOL = 1e-2
PARITY_BATCH = 4

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

Engine = Callable[[np.ndarray, np.ndarray], np.ndarray]


def parse_device(device: str | torch.device | None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``; ``cuda`` or ``cuda:N``. Anything else is an InputError."""
    text = "auto" if device is None else str(device).strip().lower()
    if not _DEVICE_RE.match(text):
        raise InputError(f"--device '{device}' is not valid; use auto, cpu or cuda[:N]")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {text}: CUDA is not available on this machine; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here; use cuda:0 or auto"
            )
    return dev


# ---- engines: (optical, sar) float32 NCHW numpy -> (B,) float32 numpy --------------------------------------


def _torch_engine(model, device: torch.device, channels_last: bool = False, autocast: bool = False) -> Engine:
    model = model.to(device)
    if channels_last:
        # A copy: the eager engine built from the same model stays the untouched reference.
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def run(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            o = torch.from_numpy(optical).to(device, non_blocking=True).contiguous(memory_format=fmt)
            s = torch.from_numpy(sar).to(device, non_blocking=True).contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=torch.float16, enabled=autocast):
                score = model(o, s)["score"]
            return score.float().cpu().numpy()

    return run


def _onnx_cache_dir() -> Path | None:
    root = os.environ.get("GEOMATCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "geomatch")
    path = Path(root) / "onnx"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _onnx_engine(model, weights_sha256: str | None) -> Engine:
    import onnxruntime as ort

    from geomatch import __version__
    from geomatch.models.export import DEFAULT_OPSET, onnx_bytes

    # Only weights with a checksum can be cached: fresh initialisations differ from process to process.
    cache = _onnx_cache_dir() if weights_sha256 else None
    cached = None
    if cache is not None:
        key = f"{model.name}-{weights_sha256[:16]}-g{__version__}-t{torch.__version__}-o{DEFAULT_OPSET}-optimised"
        cached = cache / (re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()  # follow the process's thread budget, as torch does
    opts.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    session = None
    if cached is not None and cached.is_file():
        try:
            session = ort.InferenceSession(str(cached), opts, providers=providers)
        except Exception as exc:  # a truncated or foreign cache file: rebuild it
            log.debug("ignoring unusable cached ONNX file %s: %s", cached, exc)
    if session is None:
        data = onnx_bytes(model)
        if cached is not None:
            try:
                write_atomic(cached, data)
            except OSError as exc:
                log.debug("cannot cache ONNX export at %s: %s", cached, exc)
        session = ort.InferenceSession(data, opts, providers=providers)

    def run(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        return session.run(None, {"optical": optical, "sar": sar})[0].astype(np.float32, copy=False)

    return run


def _make_engine(runtime: str, model, device: torch.device, weights_sha256: str | None) -> Engine:
    if runtime == "onnxruntime":
        return _onnx_engine(model, weights_sha256)
    return _torch_engine(model, device, channels_last=runtime == "channels-last", autocast=runtime == "autocast")


def _parity_inputs(model) -> tuple[np.ndarray, np.ndarray]:
    cfg = model.config
    rng = np.random.default_rng(0)
    p = cfg.patch_size
    co, cs = cfg.in_channels
    return (rng.random((PARITY_BATCH, co, p, p), dtype=np.float32),
            rng.random((PARITY_BATCH, cs, p, p), dtype=np.float32))  # fmt: skip


# ---- the scorer ----------------------------------------------------------------------------------------------


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


def _rebuild(spec: tuple, batch_size: int) -> Scorer:
    name, weights, device, runtime, width, params = spec
    return build_scorer(name, weights, device, batch_size, runtime, width, params)


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

    def __repr__(self) -> str:
        return (f"Scorer({self.name!r}, weights={self.weights_tag!r}, device={self.device!r}, "
                f"runtime={self.runtime!r}, batch_size={self.batch_size})")  # fmt: skip

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


def _choose(model, device: torch.device, runtime: str, weights_sha256: str | None,
            name: str) -> tuple[Engine, str, float | None]:
    """Build the requested runtime, or under ``auto`` the first of the preference order that matches eager."""
    eager = _torch_engine(model, device)
    if runtime == "eager":
        return eager, "eager", None
    explicit = runtime != "auto"
    order = [runtime] if explicit else list(AUTO_ORDER_CUDA if device.type == "cuda" else AUTO_ORDER_CPU)
    optical, sar = _parity_inputs(model)
    reference = eager(optical, sar)
    for candidate in order:
        if candidate == "eager":
            return eager, "eager", None
        tol = AUTOCAST_TOL if candidate == "autocast" else PARITY_TOL
        try:
            engine = _make_engine(candidate, model, device, weights_sha256)
            diff = float(np.max(np.abs(engine(optical, sar) - reference)))
        except Exception as exc:
            if explicit:
                raise
            log.info("%s: runtime %s unavailable (%s: %s); trying the next", name, candidate, type(exc).__name__, exc)
            continue
        if diff <= tol:
            log.debug("%s: runtime %s matches eager (max |diff| %.2g)", name, candidate, diff)
            return engine, candidate, diff
        if explicit:
            log.warning("%s: runtime %s differs from eager by %.2g (> %g)", name, candidate, diff, tol)
            return engine, candidate, diff
        log.info("%s: runtime %s differs from eager by %.2g (> %g); falling back", name, candidate, diff, tol)
    return eager, "eager", None


def engine_for(model, device: torch.device, runtime: str = "auto") -> tuple[Engine, str]:
    """An engine for an in-memory matcher (evaluation of a checkpoint): its inference form through the same
    runtime choice and eager-parity check as :func:`build_scorer`. Returns (engine, runtime name)."""
    inference = model if getattr(model, "pruned", True) else model.prune()
    engine, chosen, _ = _choose(inference.eval(), device, runtime, None, getattr(model, "name", "matcher"))
    return engine, chosen


def build_scorer(name: str, weights: str | os.PathLike | None = "auto", device: str = "auto", batch_size: int = 256,
                 runtime: str = "auto", width: float | None = None, params: dict | None = None) -> Scorer:
    """A :class:`Scorer` for matcher ``name``.

    ``weights``: ``auto`` (shipped weights; none needed for parameter-free matchers), ``none`` (fresh
    initialisation, for tests and timing), a shipped tag, or a checkpoint path. ``device``: auto, cpu,
    cuda[:N]. ``runtime``: auto, eager, channels-last, onnxruntime (CPU) or autocast (CUDA). ``params``: the
    matcher's constructor options (a pipeline's ``match.params``).
    """
    if int(batch_size) < 1:
        raise InputError(f"batch_size {batch_size} must be at least 1")
    dev = parse_device(device)
    valid = CUDA_RUNTIMES if dev.type == "cuda" else CPU_RUNTIMES
    if runtime != "auto" and runtime not in valid:
        raise InputError(f"runtime '{runtime}' is not available on {dev.type}; use auto or one of {', '.join(valid)}")
    resolved = resolve_weights(name, weights)
    weights_key = "none"
    if resolved is not None:
        st = resolved.path.stat() if resolved.path.exists() else None
        # A checkpoint rewritten in place (a new training run) must not be served from the cache.
        weights_key = (str(resolved.path), st.st_mtime_ns if st else 0, st.st_size if st else 0)
    params = dict(params or {})
    key = (name, weights_key, str(dev), runtime, None if width is None else float(width),
           tuple(sorted((k, repr(v)) for k, v in params.items())))
    with _LOCK:
        loaded = _CACHE.get(key)
        if loaded is None:
            spec = (name, None if weights is None else str(weights), str(device), runtime, width, params)
            loaded = _load(name, resolved, dev, runtime, width, params, spec)
            _CACHE[key] = loaded
    return Scorer(loaded, batch_size)


def _load(name: str, resolved, dev: torch.device, runtime: str, width: float | None, params: dict,
          spec: tuple) -> _Loaded:
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
    engine, chosen, parity = _choose(model, dev, runtime, sha, name)
    parameter_free = not any(True for _ in model.parameters())
    log.info("%s scorer: weights %s, %s on %s", name, tag, chosen, dev)
    cfg = model.config
    return _Loaded(engine, name, chosen, str(dev), int(cfg.patch_size), tuple(cfg.in_channels),
                   None if parameter_free else float(cfg.width), tag, sha, spec, parity)  # fmt: skip


__all__ = ["Scorer", "build_scorer", "clear_cache", "parse_device"]
