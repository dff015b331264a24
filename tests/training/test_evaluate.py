import json

import numpy as np
import pytest
import torch
from patch_factories import write_published
from tiny import TinyMatcher

from geomatch.errors import InputError
from geomatch.models.base import MatcherConfig
from geomatch.models.checkpoint import save_checkpoint
from geomatch.training.datasets import VIS_NIR_TESTS, load_dataset
from geomatch.training.evaluate import evaluate, format_table, score_pairs


def test_vis_nir_report_has_every_subset_and_the_unweighted_mean(tmp_path):
    root = write_published(tmp_path / "vn", "vis-nir", n_train=8, n_test=24, tests=VIS_NIR_TESTS)
    report = evaluate("ncc", dataset="vis-nir", data_dir=root, device="cpu", roc_png=tmp_path / "roc.png")
    assert list(report["subsets"]) == list(VIS_NIR_TESTS) and report["missing_subsets"] == []
    fprs = [r["fpr95"] for r in report["subsets"].values()]
    assert report["mean_fpr95"] == pytest.approx(np.mean(fprs))
    assert report["mean_fpr95_pct"] == pytest.approx(100 * np.mean(fprs))
    # NCC separates the synthetic pairs (a match is a contrast-reduced noisy copy).
    assert report["mean_fpr95"] < 0.2
    for r in report["subsets"].values():
        assert {"fpr95", "fpr95_pct", "accuracy", "auc", "pairs", "positives", "negatives"} <= set(r)
        assert r["pairs"] == 24
    assert (tmp_path / "roc.png").stat().st_size > 1000
    json.dumps(report)  # JSON-ready
    assert "mean" in format_table(report)


def test_partial_vis_nir_lists_missing_subsets_and_subset_filter(tmp_path):
    root = write_published(tmp_path / "vn", "vis-nir", n_train=8, n_test=16, tests=("field", "forest"))
    report = evaluate("ncc", dataset="vis-nir", data_dir=root, device="cpu")
    assert set(report["missing_subsets"]) == set(VIS_NIR_TESTS) - {"field", "forest"}
    assert "absent" in format_table(report)
    only = evaluate("ncc", dataset="vis-nir", data_dir=root, device="cpu", subsets=["forest"])
    assert list(only["subsets"]) == ["forest"]
    with pytest.raises(InputError, match="--subset water"):
        evaluate("ncc", dataset="vis-nir", data_dir=root, device="cpu", subsets=["water"])


def test_checkpoint_architecture_is_read_from_the_file(tmp_path, monkeypatch):
    root = write_published(tmp_path / "os", "os", n_train=8, n_test=16)
    model = TinyMatcher(MatcherConfig(patch_size=32))
    scores = score_pairs(model, load_dataset("os", root).tests["os_test"], batch_size=5)
    assert scores.shape == (16,) and np.all((scores >= 0) & (scores <= 1))
    from geomatch import registry

    real_load = registry.load
    monkeypatch.setattr(registry, "load", lambda kind, name: TinyMatcher if name == "tiny" else real_load(kind, name))
    save_checkpoint(model, tmp_path / "tiny.pt", metadata={})
    report = evaluate(None, weights=tmp_path / "tiny.pt", dataset="os", data_dir=root, device="cpu", batch_size=7)
    assert report["model"] == "tiny" and list(report["subsets"]) == ["os_test"]
    assert report["subsets"]["os_test"]["pairs"] == 16 and report["weights_sha256"]


def test_wrong_patch_size_and_missing_weights(tmp_path):
    root = write_published(tmp_path / "os", "os", n_train=8, n_test=16, size=16)
    with pytest.raises(InputError, match="16-pixel patches"):
        evaluate(TinyMatcher(MatcherConfig(patch_size=32)), dataset="os", data_dir=root, device="cpu")
    with pytest.raises(InputError, match="--weights"):
        evaluate("rrlnet", dataset="os", data_dir=root, device="cpu")


def test_auto_runtime_scores_equal_eager(tmp_path):
    from tiny import narrow_rrlnet

    root = write_published(tmp_path / "os", "os", n_train=8, n_test=24)
    patches = load_dataset("os", root).tests["os_test"]
    model = narrow_rrlnet().train()  # the training form, as a checkpoint under evaluation often is
    from geomatch.models.engines import engine_for

    engine, runtime = engine_for(model, torch.device("cpu"))
    assert runtime == "onnxruntime"  # not a silent fall back to eager
    eager = score_pairs(model, patches, batch_size=10)
    fast = score_pairs(model, patches, batch_size=10, engine=engine)
    assert model.training and not model.pruned  # the caller's model is left as it was
    np.testing.assert_allclose(fast, eager, atol=1e-4)
