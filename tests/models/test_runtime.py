"""The pipeline's scoring path: runtimes, parity, batching, caching, devices."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

from geomatch.errors import CheckpointError, InputError
from geomatch.models import engines, runtime
from geomatch.models.checkpoint import save_checkpoint
from geomatch.models.device import check_device_name, parse_device
from geomatch.models.factory import build_matcher
from geomatch.models.runtime import build_scorer

WIDTH = 0.125


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOMATCH_CACHE_DIR", str(tmp_path / "cache"))
    runtime.clear_cache()
    yield
    runtime.clear_cache()


def _patches(n, seed=0, p=64):
    rng = np.random.default_rng(seed)
    return rng.random((n, p, p), dtype=np.float32), rng.random((n, p, p), dtype=np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An scfdm checkpoint (BN statistics moved off 0/1) and its eager scores on a fixed batch."""
    torch.manual_seed(0)
    model = build_matcher("scfdm", width=WIDTH)
    o, s = (torch.from_numpy(a)[:, None] for a in _patches(8, seed=1))
    with torch.no_grad():
        model.train()(o, s)
    path = tmp_path_factory.mktemp("w") / "scfdm-test.pt"
    sha = save_checkpoint(model, path, metadata={})
    o, s = _patches(9, seed=2)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(o)[:, None], torch.from_numpy(s)[:, None])["score"].numpy()
    return path, sha, (o, s), expected


@pytest.mark.parametrize("kind", ["eager", "channels-last", "onnxruntime", "auto"])
def test_every_cpu_runtime_reproduces_eager(trained, kind):
    path, sha, (o, s), expected = trained
    scorer = build_scorer("scfdm", weights=str(path), device="cpu", runtime=kind, batch_size=4)
    got = scorer(o, s)
    assert got.dtype == np.float32 and got.shape == (9,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert scorer.name == "scfdm" and scorer.patch_size == 64 and scorer.width == WIDTH
    assert scorer.weights_tag == "scfdm-test.pt" and scorer.weights_sha256 == sha
    assert scorer.runtime in engines.CPU_RUNTIMES
    if kind != "auto":
        assert scorer.runtime == kind
    assert scorer.parity is None if scorer.runtime == "eager" else 0 <= scorer.parity <= engines.PARITY_TOL


def test_auto_takes_onnxruntime_when_it_matches(trained):
    scorer = build_scorer("scfdm", weights=str(trained[0]), device="cpu")
    assert scorer.runtime == engines.AUTO_ORDER_CPU[0] == "onnxruntime"


def test_auto_falls_back_with_a_log_line_when_a_runtime_differs(trained, monkeypatch, caplog):
    real = engines.make_engine

    def skewed(kind, *args):
        engine = real(kind, *args)
        return (lambda o, s: engine(o, s) + 1e-3) if kind == "onnxruntime" else engine

    monkeypatch.setattr(engines, "make_engine", skewed)
    with caplog.at_level(logging.INFO, logger="geomatch.models.engines"):
        scorer = build_scorer("scfdm", weights=str(trained[0]), device="cpu")
    assert scorer.runtime == "channels-last"
    assert any("onnxruntime differs from eager" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(scorer(*trained[2]), trained[3], rtol=0, atol=1e-4)


def test_onnx_export_is_cached_for_checksummed_weights(trained, tmp_path):
    build_scorer("scfdm", weights=str(trained[0]), device="cpu", runtime="onnxruntime")
    cached = list((tmp_path / "cache" / "onnx").glob("scfdm-*.onnx"))
    assert len(cached) == 1 and trained[1][:16] in cached[0].name
    cached[0].write_bytes(b"truncated")  # a damaged cache file is rebuilt, not trusted
    runtime.clear_cache()
    scorer = build_scorer("scfdm", weights=str(trained[0]), device="cpu", runtime="onnxruntime")
    np.testing.assert_allclose(scorer(*trained[2]), trained[3], rtol=0, atol=1e-4)
    assert cached[0].stat().st_size > 1000


def test_batches_empty_input_and_channel_axis(trained):
    scorer = build_scorer("scfdm", weights=str(trained[0]), device="cpu", runtime="eager", batch_size=2)
    o, s = trained[2]
    np.testing.assert_allclose(scorer(o[:, None], s[:, None]), trained[3], rtol=0, atol=1e-6)
    empty = scorer(np.zeros((0, 64, 64), np.float32), np.zeros((0, 64, 64), np.float32))
    assert empty.shape == (0,) and empty.dtype == np.float32
    with pytest.raises(ValueError, match=r"must be \(N,64,64\)"):
        scorer(o[:, :32, :32], s[:, :32, :32])
    with pytest.raises(ValueError, match="9 optical patches but 8 SAR"):
        scorer(o, s[:8])


def test_model_is_loaded_once_per_process(trained, monkeypatch):
    a = build_scorer("scfdm", weights=str(trained[0]), device="cpu", batch_size=8)
    calls = []
    monkeypatch.setattr(runtime, "build_matcher", lambda *a, **k: calls.append(1))
    b = build_scorer("scfdm", weights=str(trained[0]), device="cpu", batch_size=32)
    assert not calls and a._loaded is b._loaded and b.batch_size == 32


def test_rewritten_checkpoint_is_reloaded(tmp_path):
    path = tmp_path / "m.pt"
    torch.manual_seed(1)
    save_checkpoint(build_matcher("scfdm", width=WIDTH), path, metadata={})
    a = build_scorer("scfdm", weights=str(path), device="cpu", runtime="eager")
    torch.manual_seed(2)
    save_checkpoint(build_matcher("scfdm", width=WIDTH), path, metadata={})  # a new training run, same path
    b = build_scorer("scfdm", weights=str(path), device="cpu", runtime="eager")
    assert b._loaded is not a._loaded and b.weights_sha256 != a.weights_sha256
    o, s = _patches(4)
    assert not np.allclose(a(o, s), b(o, s))


def test_scorer_pickles_as_its_recipe(trained):
    a = build_scorer("scfdm", weights=str(trained[0]), device="cpu", runtime="eager", batch_size=3)
    b = pickle.loads(pickle.dumps(a))
    assert b._loaded is a._loaded and b.batch_size == 3  # same process: the cached model, not a copy
    runtime.clear_cache()
    c = pickle.loads(pickle.dumps(a))  # a fresh process (a dask worker) rebuilds it
    assert c._loaded is not a._loaded and c.runtime == "eager"
    np.testing.assert_allclose(c(*trained[2]), trained[3], rtol=0, atol=1e-6)


def test_describe_says_what_a_run_records(trained):
    path, sha = trained[0], trained[1]
    eager = build_scorer("scfdm", weights=str(path), device="cpu", runtime="eager").describe()
    assert eager == {"matcher": "scfdm", "weights": "scfdm-test.pt", "weights_sha256": sha, "runtime": "eager",
                     "engine": "torch", "device": "cpu", "precision": "fp32"}  # fmt: skip
    fast = build_scorer("scfdm", weights=str(path), device="cpu", runtime="onnxruntime").describe()
    assert fast["runtime"] == fast["engine"] == "onnxruntime"
    ncc = build_scorer("ncc", device="cpu", runtime="eager").describe()
    assert ncc["weights"] == "none" and ncc["weights_sha256"] is None and ncc["matcher"] == "ncc"


def test_parameter_free_ncc_needs_no_weights():
    scorer = build_scorer("ncc", device="cpu")
    assert scorer.width is None and scorer.weights_tag == "none"
    o, _ = _patches(3)
    assert np.allclose(scorer(o, o), 1.0, atol=1e-5)  # a patch matches itself perfectly
    assert np.allclose(scorer(o, 1.0 - o), 0.0, atol=1e-5)  # and anti-correlates with its negative


def test_network_without_weights_fails_with_the_fix(monkeypatch, tmp_path):
    from geomatch.models import weights

    monkeypatch.setattr(weights, "weights_folders", lambda: {"empty": tmp_path})
    with pytest.raises(CheckpointError, match="give --weights PATH or use the ncc matcher"):
        build_scorer("scfdm", weights="auto", device="cpu")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu0", ""])
def test_invalid_device_is_an_input_error(device):
    with pytest.raises(InputError, match="use auto, cpu or cuda"):
        build_scorer("ncc", device=device)


def test_device_auto_and_unavailable_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert parse_device("auto").type == expected and check_device_name(" CUDA:1 ") == "cuda:1"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            build_scorer("ncc", device="cuda:0")


def test_bad_runtime_and_batch_size():
    with pytest.raises(InputError, match="runtime 'tensorrt' is not available on cpu"):
        build_scorer("ncc", device="cpu", runtime="tensorrt")
    with pytest.raises(InputError, match="batch_size 0"):
        build_scorer("ncc", device="cpu", batch_size=0)


def test_onnx_runtime_fuses_every_same_padding_pad_into_its_conv(tmp_path):
    import onnx
    import onnxruntime as ort

    from geomatch.models.export import onnx_bytes

    data = onnx_bytes(build_matcher("rrlnet", width=WIDTH).prune())
    assert any(n.op_type == "Pad" for n in onnx.load_from_string(data).graph.node)  # strided 'same' convs
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # portable, no NCHWc layout
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    assert not [n.name for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node if n.op_type == "Pad"]
