"""Export a matcher's inference form to TorchScript or ONNX.

Both exports take ``(optical, sar)`` batches shaped (B, C, P, P) and return the score tensor (B,), with the
batch axis dynamic. The pruned form is exported: training-only heads never reach a deployment file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from geomatch.fileio import write_atomic

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
INPUT_NAMES = ("optical", "sar")
OUTPUT_NAME = "score"
# Loggers of the graph optimiser and the IR library under it.
_OPTIMISER_LOGGERS = ("onnxscript", "onnx_ir")
_OPTIMISER_LOCK = threading.Lock()


class ScoreOnly(nn.Module):
    """The inference form with a tensor output, which tracing and ONNX need instead of the dict."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not getattr(model, "pruned", False):
            model = model.prune()
        self.model = model
        # The wrapper must be in eval mode too: exporters restore the wrapper's mode afterwards, recursively,
        # which would otherwise switch the (shared) matcher back to training-mode BatchNorm.
        self.eval()

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return self.model(optical, sar)["score"]


def example_inputs(model: nn.Module, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch in [0, 1] shaped for ``model``. Batch 2, not 1, so no size-1 axis is baked in."""
    cfg = model.config
    p = cfg.patch_size
    gen = torch.Generator().manual_seed(0)
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    co, cs = cfg.in_channels
    optical = torch.rand(batch, co, p, p, generator=gen).to(device)
    sar = torch.rand(batch, cs, p, p, generator=gen).to(device)
    return optical, sar


@contextlib.contextmanager
def _quiet_tracing():
    # The contract's shape check runs as Python on traced sizes; the tracer warns that it becomes a constant,
    # which is what we want (the exported file still takes any batch size).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def export_torchscript(model: nn.Module, path: str | os.PathLike) -> Path:
    """Trace the inference form and save it; load with ``torch.jit.load(path)``, call as ``f(optical, sar)``."""
    wrapped = ScoreOnly(model).cpu()
    buf = io.BytesIO()
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(wrapped, example_inputs(wrapped.model), check_trace=False)
        torch.jit.save(traced, buf)
    write_atomic(path, buf.getvalue())
    return Path(path)


def onnx_bytes(model: nn.Module, opset: int = DEFAULT_OPSET) -> bytes:
    """The inference form as an ONNX model (bytes), batch axis dynamic."""
    wrapped = ScoreOnly(model).cpu()
    args = example_inputs(wrapped.model)
    buf = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with _quiet_tracing(), torch.no_grad():
        # The TorchScript-based exporter: ~0.5 s where the dynamo exporter takes ~7 s for the same network,
        # and it writes one self-contained file (no external-data side files).
        torch.onnx.export(
            wrapped, args, buf, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            opset_version=opset, dynamic_axes=dynamic, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
    return _optimise_graph(buf.getvalue())


def _optimise_graph(data: bytes) -> bytes:
    """Clean the exported graph (onnxscript's optimiser) so that ONNX Runtime fuses each "same" Pad into its Conv.

    The TorchScript exporter writes each ``F.pad``'s pads as its own ConstantOfShape/Slice/Cast chain, and
    ONNX Runtime then keeps every Pad as a separate copy; after the optimiser's passes it fuses them all
    (tested), and RRL-Net at width 1.0 scored 150 instead of 119 pairs/s on this project's CPU
    (benchmarks/matchers.md). Scores are unchanged (the runtime checks them against eager at build time). An
    optimiser failure keeps the exported graph, which is correct, only slower.
    """
    try:
        import onnx
        import onnxscript.optimizer

        with _optimiser_output_at_debug():
            return onnxscript.optimizer.optimize(onnx.load_from_string(data)).SerializeToString()
    except Exception as exc:  # noqa: BLE001 - any optimiser failure falls back to the exported graph
        log.debug("ONNX graph optimisation skipped: %s", exc)
        return data


class _ToDebug(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log.debug("%s: %s", record.name, record.getMessage())


@contextlib.contextmanager
def _optimiser_output_at_debug():
    """Everything the optimiser says (its INFO log records, prints, warnings) goes to our DEBUG log.

    It logs a line per node it leaves alone, ~350 for RRL-Net, which the CLI's INFO handler would
    otherwise print on every run that exports; ``-v`` still shows them.
    """
    loggers = [logging.getLogger(name) for name in _OPTIMISER_LOGGERS]
    out, err = io.StringIO(), io.StringIO()
    # One export at a time swaps the loggers' handlers: two interleaved would restore each other's swap.
    with _OPTIMISER_LOCK:
        saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
        handler = _ToDebug()
        for lg in loggers:
            lg.handlers, lg.propagate = [handler], False
        try:
            with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                    contextlib.redirect_stderr(err):
                warnings.simplefilter("always")
                yield
        finally:
            for lg, (handlers, propagate) in zip(loggers, saved, strict=True):
                lg.handlers, lg.propagate = handlers, propagate
        for text in (out.getvalue(), err.getvalue()):
            if text.strip():
                log.debug("ONNX optimiser output:\n%s", text.rstrip())
        for w in caught:
            log.debug("ONNX optimiser warning: %s: %s", w.category.__name__, w.message)


def int8_onnx_bytes(model: nn.Module, opset: int = DEFAULT_OPSET) -> bytes:
    """:func:`onnx_bytes` with its dense convolutions statically quantised to int8 (QDQ), for ONNX Runtime.

    Which convolutions and why, and the calibration pairs: ``geomatch.models.precision``. Per-channel signed
    weights with unsigned activations, the pairing ONNX Runtime's x86 int8 kernels (VNNI / AMX) are built for.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from geomatch.models import precision

    data = onnx_bytes(model, opset)
    graph = onnx.load_from_string(data)
    weights = {t.name: list(t.dims) for t in graph.graph.initializer}
    # A weight is (out, in/groups, kh, kw); MGLA's gate convolutions are 1-D (3 dims) and stay fp32.
    thin = [n.name for n in graph.graph.node if n.op_type == "Conv" and (
        len(weights.get(n.input[1], ())) != 4 or weights[n.input[1]][1] < precision.INT8_MIN_IN_CHANNELS)]
    cfg = model.config

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(precision.calibration_batches(int(cfg.patch_size), tuple(cfg.in_channels)))

        def get_next(self):
            return next(self._feeds, None)

    # quantize_static reads and writes files (and keeps its calibration copy beside them): a private folder.
    with tempfile.TemporaryDirectory(prefix="geomatch-int8-") as tmp, precision.quiet_quantiser():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(data)
        quantize_static(str(src), str(dst), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=thin)  # fmt: skip
        return dst.read_bytes()


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Export the inference form to ONNX at ``path`` (inputs ``optical``, ``sar``; output ``score``)."""
    write_atomic(path, onnx_bytes(model, opset))
    return Path(path)
