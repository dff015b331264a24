"""The ONNX Runtime engine splits a large batch into calls of ``ONNX_CALL_PAIRS`` and keeps every score."""

import numpy as np
import pytest
import torch

from geomatch.models import engines
from geomatch.models.factory import build_matcher

pytest.importorskip("onnxruntime", reason="onnxruntime not installed")


def test_split_calls_match_eager_in_order(monkeypatch):
    monkeypatch.setattr(engines, "ONNX_CALL_PAIRS", 8)
    model = build_matcher("rrlnet", width=0.25).prune().eval().requires_grad_(False)
    rng = np.random.default_rng(1)
    n = 8 * 3 + 5  # a ragged last call
    optical = rng.random((n, 1, 64, 64), dtype=np.float32)
    sar = rng.random((n, 1, 64, 64), dtype=np.float32)
    onnx = engines.make_engine("onnxruntime", model, torch.device("cpu"), None)(optical, sar)
    eager = engines.make_engine("eager", model, torch.device("cpu"), None)(optical, sar)
    assert onnx.shape == (n,)
    assert np.max(np.abs(onnx - eager)) <= engines.PARITY_TOL
