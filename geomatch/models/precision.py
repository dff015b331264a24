"""Reduced-precision scoring (``match.precision``): bf16 through PyTorch, int8 through ONNX Runtime.

- ``fp32``: the engine ``geomatch.models.engines.choose_engine`` picks (the default).
- ``bf16``: PyTorch under ``torch.autocast("cpu", dtype=torch.bfloat16)``; oneDNN runs the convolutions on
  AVX512-BF16 / AMX where the CPU has them. ONNX Runtime's CPU provider has no bf16 convolution, so bf16 runs
  on the torch runtimes only (``auto``: channels-last, faster than eager under bf16 in benchmarks/precision.md).
- ``int8``: ONNX Runtime with the dense convolutions statically quantised (QDQ, per-channel signed weights,
  unsigned activations, min-max ranges from :data:`CALIBRATION_PAIRS` pairs cut from the built-in demo pair).
  MGLA's 1-D gate convolutions and the thin early convolutions (fewer than :data:`INT8_MIN_IN_CHANNELS` inputs)
  stay fp32: quantising them too tripled the score error of the shipped weights for no measured gain.

The rule: a reduced precision is used only if its scores stay within :data:`TOLERANCE` of fp32 eager scores
(max |difference|) on :data:`CHECK_PAIRS` real-looking pairs (:func:`sample_pairs`), checked once when the
scorer is built and cached with it. Otherwise, or where the machine cannot run it, the scorer logs a warning
and keeps the fp32 engine; ``Scorer.describe()["precision"]`` says which one ran.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import numpy as np
import torch

from geomatch.errors import InputError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
# Scores lie in [0, 1]. With the shipped weights the largest change on 448 real-looking pairs (64 GeFolki S2/S1,
# 384 demo) was 0.046 under bf16 and 0.065 under int8 (benchmarks/precision.md). The bound leaves that headroom
# and is half the 0.2 mean margin by which those weights separate matching pairs from 16 px shifted ones
# (tests/plugins/test_shipped_weights.py). A precision that moves any check pair further is refused.
TOLERANCE = {"bf16": 0.1, "int8": 0.1}
# The runtimes each precision can run on; ``runtime="auto"`` takes the first.
RUNTIMES = {"bf16": ("channels-last", "eager"), "int8": ("onnxruntime",)}
CHECK_PAIRS = 128  # ~0.3 s at w0.25 (both engines), once per process
CALIBRATION_PAIRS = 128
CALIBRATION_CALL = 16  # pairs per calibration batch
INT8_MIN_IN_CHANNELS = 32
_MAX_SHIFT = 7  # px: half the check pairs are misaligned by 3-7 px, so low scores are checked too


def check_request(precision: str, runtime: str, device: torch.device) -> None:
    """Refuse a precision name, or a runtime named explicitly that cannot run that precision (one line)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision '{precision}' is not known; use one of {', '.join(PRECISIONS)} "
                         "(match.precision)")  # fmt: skip
    if precision == "fp32" or runtime == "auto" or device.type != "cpu":
        return
    if runtime not in RUNTIMES[precision]:
        raise InputError(f"precision {precision} does not run on runtime '{runtime}'; use runtime auto or "
                         f"{' or '.join(RUNTIMES[precision])}")  # fmt: skip


def unavailable(precision: str, device: torch.device) -> str | None:
    """Why this machine cannot run ``precision`` (None when it can)."""
    if precision == "bf16":
        if device.type == "cuda":
            return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support"
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return "this CPU has no bf16 kernels (AVX512-BF16 or AMX); emulated bf16 would be slower than fp32"
        return None
    if precision == "int8":
        if device.type != "cpu":
            return "int8 runs on ONNX Runtime's CPU provider only"
        try:
            import onnxruntime.quantization  # noqa: F401
        except ImportError as exc:
            return f"onnxruntime.quantization cannot be imported ({exc})"
    return None


@functools.lru_cache(maxsize=1)
def _demo_images() -> tuple[np.ndarray, np.ndarray]:
    """The demo pair's optical photograph and simulated SAR (dB), each stretched to [0, 1] as the pipeline does."""
    from geomatch.demo import _optical, _simulate_sar
    from geomatch.pipeline.normalise import Stretch, to_db

    optical = _optical()
    sar = to_db(_simulate_sar(optical, np.random.default_rng(7)))
    return Stretch.fit(optical).apply(optical), Stretch.fit(sar).apply(sar)


def sample_pairs(n: int, seed: int, patch_size: int = 64,
                 in_channels: tuple[int, int] = (1, 1)) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (optical, SAR) patch pairs cut from the demo pair: even ones aligned, odd ones shifted by 3-7 px.

    The optical side is a real photograph (scikit-image's ``stereo_motorcycle``) and the SAR side its speckled,
    edge-bright simulation (``geomatch.demo``), so the pairs carry real texture and no data file is needed.
    Multi-band matchers get the band repeated.
    """
    optical, sar = _demo_images()
    rng = np.random.default_rng(seed)
    h, w = optical.shape
    p = patch_size
    rows = rng.integers(0, h - p - _MAX_SHIFT, n)
    cols = rng.integers(0, w - p - _MAX_SHIFT, n)
    shift = np.where(np.arange(n) % 2 == 1, rng.integers(3, _MAX_SHIFT + 1, n), 0)
    o = np.stack([optical[r:r + p, c:c + p] for r, c in zip(rows, cols, strict=True)])
    s = np.stack([sar[r + d:r + d + p, c + d:c + d + p] for r, c, d in zip(rows, cols, shift, strict=True)])
    co, cs = in_channels
    return (np.ascontiguousarray(np.repeat(o[:, None], co, axis=1)),
            np.ascontiguousarray(np.repeat(s[:, None], cs, axis=1)))  # fmt: skip


def calibration_batches(patch_size: int, in_channels: tuple[int, int]) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime calibration feeds: :data:`CALIBRATION_PAIRS` pairs, none of them a check pair (own seed)."""
    optical, sar = sample_pairs(CALIBRATION_PAIRS, seed=11, patch_size=patch_size, in_channels=in_channels)
    return [{"optical": optical[i:i + CALIBRATION_CALL], "sar": sar[i:i + CALIBRATION_CALL]}
            for i in range(0, CALIBRATION_PAIRS, CALIBRATION_CALL)]  # fmt: skip


class _QuantiserLog(logging.Filter):
    """The quantiser's advice ("consider pre-processing", on the root logger) goes to our DEBUG log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" in record.pathname and "quantization" in record.pathname:
            log.debug("onnxruntime.quantization: %s", record.getMessage())
            return False
        return True


@contextlib.contextmanager
def quiet_quantiser():
    root = logging.getLogger()
    quiet = _QuantiserLog()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def choose_reduced(model, device: torch.device, runtime: str, precision: str, weights_sha256: str | None,
                   name: str, fp32: tuple) -> tuple:
    """The ``precision`` engine if it meets its tolerance, else ``fp32`` (the fp32 choice) with a warning.

    ``fp32``: (engine, runtime, parity) from ``choose_engine``. Returns (engine, runtime, parity, precision
    used); for a reduced precision, parity is its max |score - fp32 eager score| on the check pairs.
    """
    from geomatch.models.engines import _torch_engine, make_engine

    keep = (*fp32, "fp32")
    if precision == "fp32":
        return keep
    if not any(True for _ in model.parameters()):
        log.debug("%s: parameter-free; precision %s does not apply, scoring in fp32", name, precision)
        return keep
    reason = unavailable(precision, device)
    if reason:
        log.warning("%s: precision %s unavailable (%s); scoring in fp32", name, precision, reason)
        return keep
    if device.type == "cuda":
        candidate = "eager"
    else:
        candidate = runtime if runtime != "auto" else RUNTIMES[precision][0]
    cfg = model.config
    optical, sar = sample_pairs(CHECK_PAIRS, seed=3, patch_size=int(cfg.patch_size), in_channels=tuple(cfg.in_channels))
    reference = _torch_engine(model, device)(optical, sar)
    try:
        engine = make_engine(candidate, model, device, weights_sha256, precision)
        diff = float(np.max(np.abs(engine(optical, sar) - reference)))
    except Exception as exc:  # noqa: BLE001 - e.g. a quantiser failure on an unusual graph: fp32 still works
        log.warning("%s: precision %s failed to build (%s: %s); scoring in fp32", name, precision,
                    type(exc).__name__, exc)  # fmt: skip
        return keep
    tol = TOLERANCE[precision]
    if not diff <= tol:
        log.warning("%s: precision %s moves scores by up to %.3g (> tolerance %g) on %d check pairs; scoring in "
                    "fp32", name, precision, diff, tol, CHECK_PAIRS)  # fmt: skip
        return keep
    log.debug("%s: precision %s within tolerance (max |diff| %.3g <= %g)", name, precision, diff, tol)
    return engine, candidate, diff, precision
