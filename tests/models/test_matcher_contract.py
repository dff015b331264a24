"""The matcher contract (geomatch.models.base), checked for every registered matcher.

Parametrized from the registry, so a newly registered matcher is held to the same contract with no edit here.
Networks are built at width 0.125 to keep the file fast; NCC has no width and ignores it.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from geomatch import registry
from geomatch.errors import CheckpointError
from geomatch.models.checkpoint import load_checkpoint, save_checkpoint
from geomatch.models.export import export_onnx, export_torchscript
from geomatch.models.factory import build_matcher

NAMES = registry.names("matchers")
WIDTH = 0.125
PARITY = 1e-4


@functools.cache
def _built(name: str):
    torch.manual_seed(0)
    model = build_matcher(name, width=WIDTH)
    # One training-mode pass moves BatchNorm running statistics off their 0/1 start, so eval, pruned, exported
    # and reloaded forms are compared on statistics that matter.
    o, s = _pair(model, 4, seed=1)
    model.train()
    with torch.no_grad():
        model(o, s)
    return model


def fresh(name: str):
    return copy.deepcopy(_built(name))


def _pair(model, batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    p = model.config.patch_size
    co, cs = model.config.in_channels
    return torch.rand(batch, co, p, p, generator=gen), torch.rand(batch, cs, p, p, generator=gen)


def _eval_scores(model, batch: int = 5, seed: int = 3) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(*_pair(model, batch, seed))["score"]


def _head_loss(kind: str, out: torch.Tensor, optical: torch.Tensor, sar: torch.Tensor, target: torch.Tensor):
    b = len(target)
    if kind == "bce":
        assert out.shape == (b,)
        return F.binary_cross_entropy(out.clamp(1e-7, 1 - 1e-7), target)
    if kind == "ce2":
        assert out.shape == (b, 2)
        return F.nll_loss(torch.log(out.clamp_min(1e-7)), target.long())
    if kind in ("recon_optical", "recon_sar"):
        ref = optical if kind == "recon_optical" else sar
        assert out.shape == (b, 1, *ref.shape[-2:])
        return F.mse_loss(out, ref[:, :1])
    raise AssertionError(f"unknown head kind {kind!r}")


def test_registry_lists_the_shipped_matchers():
    assert {"scfdm", "afdnet", "mfdnet", "efrnet", "filnet", "rrlnet", "ncc"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_class_declares_contract(name):
    cls = registry.load("matchers", name)
    assert cls.name == name
    assert cls.paper and cls.optimizer in ("nadam", "adam")
    assert "main" in cls.HEADS
    assert set(cls.HEADS.values()) <= {"bce", "ce2", "recon_optical", "recon_sar"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 7])
def test_forward_shapes_and_range(name, batch):
    model = fresh(name).eval()
    with torch.no_grad():
        out = model(*_pair(model, batch))
    score = out["score"]
    assert score.shape == (batch,) and score.dtype == torch.float32
    assert torch.isfinite(score).all() and (score >= 0).all() and (score <= 1).all()
    assert "heads" not in out


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name):
    model = fresh(name).prune()
    with torch.no_grad():
        score = model(*_pair(model, 0))["score"]
    assert score.shape == (0,)


@pytest.mark.parametrize("name", NAMES)
def test_training_outputs_all_heads_and_every_parameter_learns(name):
    model = fresh(name).train()
    optical, sar = _pair(model, 4, seed=5)
    optical.requires_grad_(True)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    out = model(optical, sar)
    assert set(out["heads"]) == set(model.HEADS)
    assert out["score"].shape == (4,)
    loss = sum(_head_loss(kind, out["heads"][h], optical, sar, target) for h, kind in model.HEADS.items())
    loss.backward()
    params = dict(model.named_parameters())
    if not params:  # parameter-free (NCC): the loss must still reach the inputs
        assert optical.grad is not None and optical.grad.abs().sum() > 0
        return
    dead = [n for n, p in params.items() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"{name}: parameters without gradient from the head losses: {dead[:8]}"


@pytest.mark.parametrize("name", NAMES)
def test_pruned_score_equals_eval_score(name):
    model = fresh(name)
    pruned = model.prune()
    assert pruned.pruned and not pruned.training
    for attr in model.TRAINING_ONLY:
        assert not hasattr(pruned, attr)
    assert sum(p.numel() for p in pruned.parameters()) <= sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(_eval_scores(pruned), _eval_scores(model), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", ["training", "pruned"])
def test_checkpoint_round_trip(name, form, tmp_path):
    model = fresh(name)
    if form == "pruned":
        model = model.prune()
    path = tmp_path / f"{name}.pt"
    sha = save_checkpoint(model, path, metadata={"training": {"dataset": "unit-test"}, "metrics": {"fpr95": 1.5}})
    state, meta = load_checkpoint(path, expected_sha256=sha)
    assert meta["architecture"] == name and meta["width"] == WIDTH and meta["pruned"] == (form == "pruned")
    assert meta["training"] == {"dataset": "unit-test"} and meta["metrics"] == {"fpr95": 1.5}
    assert set(meta["versions"]) == {"geomatch", "torch", "numpy"}
    assert set(state) == set(model.state_dict())
    loaded = build_matcher(name, width=WIDTH, weights=path)
    assert loaded.pruned == (form == "pruned") and not loaded.training
    assert all(p.requires_grad and p.dtype == torch.float32 for p in loaded.parameters())  # ready to fine-tune
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    torch.testing.assert_close(_eval_scores(loaded), _eval_scores(model), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_for_wrong_architecture_width_or_hash_fails(name, tmp_path):
    model = fresh(name)
    path = tmp_path / f"{name}.pt"
    sha = save_checkpoint(model, path, metadata={})
    other = next(n for n in NAMES if n != name)
    with pytest.raises(CheckpointError, match=f"'{name}', not '{other}'"):
        build_matcher(other, weights=path)
    with pytest.raises(CheckpointError, match=r"width 0\.125, not 0\.25"):
        build_matcher(name, width=0.25, weights=path)
    wrong = "0" * 64
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, expected_sha256=wrong)
    assert str(path) in str(err.value) and sha in str(err.value) and wrong in str(err.value)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", NAMES)
def test_torchscript_and_onnx_match_eager(name, tmp_path):
    model = fresh(name).prune()
    optical, sar = _pair(model, 5, seed=9)  # exports trace at batch 2: 5 checks the dynamic batch axis
    expected = _eval_scores(model, 5, seed=9).numpy()

    ts = torch.jit.load(str(export_torchscript(model, tmp_path / "m.ts")))
    with torch.no_grad(), torch.jit.optimized_execution(False):  # skips the JIT's profiling runs: same result
        got_ts = ts(optical, sar).numpy()
    np.testing.assert_allclose(got_ts, expected, rtol=0, atol=PARITY)

    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["optical", "sar"]
    got_onnx = session.run(None, {"optical": optical.numpy(), "sar": sar.numpy()})[0]
    assert got_onnx.shape == (5,)
    np.testing.assert_allclose(got_onnx, expected, rtol=0, atol=PARITY)
