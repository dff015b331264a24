"""Engines: a matcher's inference form as one function, ``(optical, sar) float32 NCHW numpy -> (B,) scores``.

CPU runtimes: ``eager`` (PyTorch), ``channels-last`` (PyTorch, NHWC memory layout) and ``onnxruntime``.
``runtime="auto"`` takes them in the order measured fastest on the project's 2-core CPU (see
benchmarks/matchers.md: ONNX Runtime ahead of channels-last ahead of eager for the networks), and keeps a
runtime only if it reproduces eager scores within ``PARITY_TOL`` on a small random batch, checked once when
built; otherwise it logs why and tries the next. On CUDA, ``auto`` is eager under float16 autocast, kept if
it stays within ``AUTOCAST_TOL`` of float32 (half precision cannot meet 1e-4). That is all fp32 (``autocast``
aside); the bf16 and int8 forms of these engines (:func:`make_engine`'s ``precision``) are chosen, and checked
against fp32 with their own tolerance, by ``geomatch.models.precision``.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from geomatch.fileio import write_atomic

log = logging.getLogger(__name__)

CPU_RUNTIMES = ("eager", "channels-last", "onnxruntime")
CUDA_RUNTIMES = ("eager", "channels-last", "autocast")
AUTO_ORDER_CPU = ("onnxruntime", "channels-last", "eager")
AUTO_ORDER_CUDA = ("autocast", "eager")
PARITY_TOL = 1e-4
AUTOCAST_TOL = 1e-2
PARITY_BATCH = 4
# Pairs per ONNX Runtime call. Small batches keep a narrow net's activations in cache: on the project's 2-core
# CPU RRL-Net w0.25 scored 1,140 pairs/s in calls of 32 against 855 in calls of 256 (the pipeline's batch), and
# w1.0 198 against 183; 16 was no faster than 32 (benchmarks/engine_profile.md). Parameter-free matchers (NCC,
# CFOG) do little work per pair, so per-call overhead dominates: they keep one call per batch.
ONNX_CALL_PAIRS = 32

Engine = Callable[[np.ndarray, np.ndarray], np.ndarray]


def engine_library(runtime: str) -> str:
    """The library that executes ``runtime``: ``onnxruntime`` or ``torch``."""
    return "onnxruntime" if runtime == "onnxruntime" else "torch"


def _torch_engine(model, device: torch.device, channels_last: bool = False,
                  autocast: torch.dtype | None = None) -> Engine:
    model = model.to(device)
    if channels_last:
        # A copy: the eager engine built from the same model stays the untouched reference.
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def run(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            o = torch.from_numpy(optical).to(device, non_blocking=True).contiguous(memory_format=fmt)
            s = torch.from_numpy(sar).to(device, non_blocking=True).contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=autocast or torch.float16, enabled=autocast is not None):
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


def _onnx_engine(model, weights_sha256: str | None, int8: bool = False) -> Engine:
    import onnxruntime as ort

    from geomatch import __version__
    from geomatch.models.export import DEFAULT_OPSET, int8_onnx_bytes, onnx_bytes

    # Only weights with a checksum can be cached: fresh initialisations differ from process to process.
    cache = _onnx_cache_dir() if weights_sha256 else None
    cached = None
    if cache is not None:
        # "-r2": MGLA's matmul form; a file exported from an earlier graph of the same version is not reused.
        key = f"{model.name}-{weights_sha256[:16]}-g{__version__}-t{torch.__version__}-o{DEFAULT_OPSET}-optimised-r2"
        if int8:  # the quantiser's output also depends on ONNX Runtime's version and the calibration recipe
            key += f"-int8-q1-ort{ort.__version__}"
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
        data = int8_onnx_bytes(model) if int8 else onnx_bytes(model)
        if cached is not None:
            try:
                write_atomic(cached, data)
            except OSError as exc:
                log.debug("cannot cache ONNX export at %s: %s", cached, exc)
        session = ort.InferenceSession(data, opts, providers=providers)

    call_pairs = ONNX_CALL_PAIRS if any(True for _ in model.parameters()) else None

    def run(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        if call_pairs is None or len(optical) <= call_pairs:
            return session.run(None, {"optical": optical, "sar": sar})[0].astype(np.float32, copy=False)
        out = np.empty(len(optical), dtype=np.float32)
        for start in range(0, len(optical), call_pairs):
            part = slice(start, start + call_pairs)
            out[part] = session.run(None, {"optical": optical[part], "sar": sar[part]})[0]
        return out

    return run


def make_engine(runtime: str, model, device: torch.device, weights_sha256: str | None,
                precision: str = "fp32") -> Engine:
    """The engine for one named runtime at one precision (``geomatch.models.precision``), unchecked:
    :func:`choose_engine` checks fp32 against eager, ``precision.choose_reduced`` the others against fp32."""
    if runtime == "onnxruntime":
        return _onnx_engine(model, weights_sha256, int8=precision == "int8")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16 if runtime == "autocast" else None
    return _torch_engine(model, device, channels_last=runtime == "channels-last", autocast=dtype)


def _parity_inputs(model) -> tuple[np.ndarray, np.ndarray]:
    cfg = model.config
    rng = np.random.default_rng(0)
    p = cfg.patch_size
    co, cs = cfg.in_channels
    return (rng.random((PARITY_BATCH, co, p, p), dtype=np.float32),
            rng.random((PARITY_BATCH, cs, p, p), dtype=np.float32))  # fmt: skip


def choose_engine(model, device: torch.device, runtime: str, weights_sha256: str | None,
                  name: str) -> tuple[Engine, str, float | None]:
    """Build the requested runtime, or under ``auto`` the first of the preference order that matches eager.

    Returns (engine, runtime name, max |score - eager score| on the check batch; None for eager itself).
    """
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
            engine = make_engine(candidate, model, device, weights_sha256)
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
    runtime choice and eager-parity check as ``build_scorer``. Returns (engine, runtime name)."""
    inference = model if getattr(model, "pruned", True) else model.prune()
    engine, chosen, _ = choose_engine(inference.eval(), device, runtime, None, getattr(model, "name", "matcher"))
    return engine, chosen
