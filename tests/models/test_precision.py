"""match.precision: validation, reduced-precision scores within their stated tolerance, and the fp32 fallback."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

from geomatch import config
from geomatch.errors import ConfigError, InputError
from geomatch.models import precision, runtime
from geomatch.models.runtime import build_scorer

CPU = torch.device("cpu")


def _skip_unavailable(prec: str) -> None:
    reason = precision.unavailable(prec, CPU)
    if reason:
        pytest.skip(f"precision {prec} cannot run here: {reason}")


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """One ONNX cache folder for the module: the int8 graph is quantised once, not per test."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GEOMATCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    runtime.clear_cache()
    yield
    runtime.clear_cache()
    mp.undo()


@pytest.fixture(scope="module")
def fp32_scores():
    """The shipped w0.25 weights' fp32 eager scores on pairs that are not the build-time check pairs."""
    optical, sar = precision.sample_pairs(32, seed=123)
    return optical, sar, build_scorer("rrlnet", "optical-sar", "cpu", runtime="eager")(optical, sar)


def test_config_refuses_an_unknown_precision_in_one_line():
    assert config.load("default").match.precision == "fp32"
    assert config.load("default", {"match.precision": "bf16"}).match.precision == "bf16"
    with pytest.raises(ConfigError) as err:
        config.load("default", {"match.precision": "fp16"})
    msg = str(err.value)
    assert "\n" not in msg and "[match] precision = 'fp16'" in msg and "fp32, bf16, int8" in msg


def test_build_scorer_refuses_bad_precisions_and_runtimes_that_cannot_run_them():
    with pytest.raises(InputError, match="precision 'fp16' is not known; use one of fp32, bf16, int8"):
        build_scorer("rrlnet", "optical-sar", "cpu", precision="fp16")
    with pytest.raises(InputError, match="precision bf16 does not run on runtime 'onnxruntime'"):
        build_scorer("rrlnet", "optical-sar", "cpu", runtime="onnxruntime", precision="bf16")
    with pytest.raises(InputError, match="precision int8 does not run on runtime 'eager'; use runtime auto or "
                                         "onnxruntime"):
        build_scorer("rrlnet", "optical-sar", "cpu", runtime="eager", precision="int8")


@pytest.mark.parametrize("prec, engine", [("bf16", "torch"), ("int8", "onnxruntime")])
def test_reduced_precision_scores_within_the_stated_tolerance(prec, engine, fp32_scores):
    _skip_unavailable(prec)
    optical, sar, reference = fp32_scores
    scorer = build_scorer("rrlnet", "optical-sar", "cpu", batch_size=16, precision=prec)
    assert scorer.precision == prec and scorer.describe()["precision"] == prec
    assert scorer.describe()["engine"] == engine and scorer.runtime == precision.RUNTIMES[prec][0]
    diff = np.abs(scorer(optical, sar) - reference)
    # Really reduced (an fp32 engine would agree to ~1e-6), and within the bound the build-time check enforces.
    assert 1e-4 < diff.max() <= precision.TOLERANCE[prec]
    assert scorer.parity is not None and 0 < scorer.parity <= precision.TOLERANCE[prec]
    # A dask worker rebuilds the scorer from its spec: at the same precision.
    assert pickle.loads(pickle.dumps(scorer)).precision == prec


def test_fp32_is_the_default_and_describe_says_so():
    scorer = build_scorer("rrlnet", "optical-sar", "cpu")
    assert scorer.precision == "fp32" and scorer.describe()["precision"] == "fp32"


def test_a_precision_outside_its_tolerance_falls_back_to_fp32_with_a_warning(monkeypatch, caplog, fp32_scores):
    _skip_unavailable("bf16")
    optical, sar, reference = fp32_scores
    runtime.clear_cache()
    monkeypatch.setitem(precision.TOLERANCE, "bf16", 1e-6)
    with caplog.at_level(logging.WARNING, logger="geomatch.models.precision"):
        scorer = build_scorer("rrlnet", "optical-sar", "cpu", runtime="eager", precision="bf16")
    runtime.clear_cache()
    assert scorer.precision == "fp32" and scorer.describe()["precision"] == "fp32" and scorer.runtime == "eager"
    assert any("precision bf16 moves scores by up to" in r.getMessage() and "scoring in fp32" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    np.testing.assert_allclose(scorer(optical, sar), reference, rtol=0, atol=1e-6)


def test_a_precision_the_machine_cannot_run_falls_back_to_fp32_with_a_warning(monkeypatch, caplog):
    runtime.clear_cache()
    monkeypatch.setattr(precision, "unavailable", lambda prec, device: "no int8 kernels in this test")
    with caplog.at_level(logging.WARNING, logger="geomatch.models.precision"):
        scorer = build_scorer("rrlnet", "optical-sar", "cpu", precision="int8")
    runtime.clear_cache()
    assert scorer.precision == "fp32"
    assert any("precision int8 unavailable (no int8 kernels in this test)" in r.getMessage() for r in caplog.records)


def test_parameter_free_matchers_score_in_fp32():
    scorer = build_scorer("ncc", device="cpu", precision="bf16")
    assert scorer.precision == "fp32" and scorer.describe()["precision"] == "fp32"


def test_check_pairs_are_real_looking_and_mixed():
    optical, sar = precision.sample_pairs(8, seed=3)
    assert optical.shape == sar.shape == (8, 1, 64, 64) and optical.dtype == np.float32
    assert 0 <= optical.min() and optical.max() <= 1 and optical.std() > 0.05 and sar.std() > 0.05
    again = precision.sample_pairs(8, seed=3)
    np.testing.assert_array_equal(again[0], optical)


def test_the_pipeline_passes_match_precision_to_its_scorer(tmp_path, monkeypatch):
    from factories import make_pair

    from geomatch.pipeline import run

    pair = make_pair(tmp_path)
    seen = {}

    class Stop(Exception):
        pass

    def fake_build_scorer(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(run, "build_scorer", fake_build_scorer)
    with pytest.raises(Stop):
        run.run_pipeline(pair.optical, pair.sar, config.load("default", {"match.precision": "int8"}))
    assert seen["precision"] == "int8"
