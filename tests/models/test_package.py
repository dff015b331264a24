"""Packaging a training checkpoint as shipped weights."""

import json

import torch

from geomatch.fileio import sha256_file
from geomatch.models.checkpoint import save_checkpoint
from geomatch.models.factory import build_matcher
from geomatch.models.package import package_weights


def test_package_prunes_registers_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = build_matcher("rrlnet", width=0.125)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(model, ckpt, metadata={"training": {"dataset": "unit-test"}})
    out = tmp_path / "weights"
    entry = package_weights(ckpt, "demo", out, description="d", pair_types=["optical-sar"], card="# card\n",
                            extra={"test_scenes": ["s1"]})
    index = json.loads((out / "index.json").read_text())
    assert index["demo"] == entry and entry["test_scenes"] == ["s1"]
    assert sha256_file(out / entry["file"]) == entry["sha256"]
    assert entry["max_score_change"] <= 2e-3 and entry["dtype"] in ("float16", "float32")
    shipped = build_matcher("rrlnet", weights=out / entry["file"], expected_sha256=entry["sha256"])
    assert shipped.pruned and not hasattr(shipped, "decoder_optical")
    assert (out / entry["file"]).stat().st_mode & 0o044  # readable by others, like any shipped file
    x, y = torch.rand(4, 1, 64, 64), torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        ref = model.eval()(x, y)["score"]
        got = shipped(x, y)["score"].float()
    assert torch.allclose(ref, got, atol=2e-3)
