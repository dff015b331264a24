"""Checkpoint files, fp16 storage, shipped-weights resolution (the per-matcher round trip is in the contract)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from geomatch.errors import CheckpointError, ConfigError
from geomatch.models import checkpoint as ck
from geomatch.models.base import Matcher, MatcherConfig
from geomatch.models.checkpoint import (
    build_matcher,
    load_checkpoint,
    resolve_weights,
    save_checkpoint,
    sha256_file,
    shipped_tags,
)

WIDTH = 0.125


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches; see test_matcher_contract.one_thread
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scfdm():
    torch.manual_seed(0)
    return build_matcher("scfdm", width=WIDTH).eval()


def _scores(model):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 1, 64, 64, generator=g), torch.rand(3, 1, 64, 64, generator=g)
    with torch.no_grad():
        return model.eval()(x, y)["score"]


def test_sha_is_of_the_file_and_write_leaves_no_temp(scfdm, tmp_path):
    path = tmp_path / "sub" / "m.pt"
    sha = save_checkpoint(scfdm, path, metadata={"description": "unit"})
    assert sha == sha256_file(path)
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]
    _, meta = load_checkpoint(path)
    assert meta["description"] == "unit" and meta["dtype"] == "float32"
    assert meta["patch_size"] == 64 and meta["in_channels"] == [1, 1] and meta["normalisation"] == "unit"


def test_failed_write_keeps_the_old_file(scfdm, tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    path.write_bytes(b"previous good file")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(scfdm, path, metadata={})
    assert path.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_half_storage_keeps_bn_statistics_fp32_and_scores_close(scfdm, tmp_path):
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_checkpoint(scfdm, full, metadata={})
    save_checkpoint(scfdm, half, metadata={}, half=True)
    state, meta = load_checkpoint(half)
    assert meta["dtype"] == "float16"
    params = dict(scfdm.named_parameters())
    assert all(state[k].dtype == torch.float16 for k in params)
    stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
    assert stats and all(state[k].dtype == torch.float32 for k in stats)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = build_matcher("scfdm", weights=half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(_scores(loaded), _scores(scfdm), rtol=0, atol=5e-3)


def test_metadata_cannot_contradict_the_model(scfdm, tmp_path):
    with pytest.raises(ValueError, match="architecture 'rrlnet'"):
        save_checkpoint(scfdm, tmp_path / "m.pt", metadata={"architecture": "rrlnet"})


def test_foreign_and_unsafe_files_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"conv.weight": torch.zeros(2)}, plain)  # a bare state dict, no geomatch header
    with pytest.raises(CheckpointError, match="not a geomatch checkpoint"):
        load_checkpoint(plain)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(CheckpointError, match="not a loadable geomatch checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_state_that_does_not_fit_is_a_checkpoint_error(scfdm, tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(scfdm, path, metadata={})
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["trunk.0.0.weight"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not fit scfdm at width 0.125"):
        build_matcher("scfdm", weights=path)


def test_unknown_matcher_option_is_a_config_error():
    with pytest.raises(ConfigError, match="does not take options"):
        build_matcher("scfdm", width=WIDTH, params={"window": 9})
    assert build_matcher("ncc", params={"window": 9}).window == 9


@pytest.fixture
def shipped(tmp_path, monkeypatch, scfdm):
    """A weights package folder with two tags for scfdm and one for another matcher."""
    monkeypatch.setattr(ck, "_weights_dir", lambda: tmp_path)
    sha = save_checkpoint(scfdm, tmp_path / "scfdm-a.pt", metadata={}, half=True)
    index = {
        "vis-nir": {"file": "scfdm-a.pt", "matcher": "scfdm", "width": WIDTH, "sha256": sha,
                    "description": "VIS-NIR", "pair_types": ["vis-nir"]},
        "scfdm-optical-sar": {"file": "scfdm-a.pt", "matcher": "scfdm", "width": WIDTH, "sha256": sha,
                              "description": "OS", "pair_types": ["optical-sar"]},
        "rrl-optical-sar": {"file": "rrl.pt", "matcher": "rrlnet", "width": 1.0, "sha256": "0" * 64,
                            "description": "", "pair_types": ["optical-sar"]},
    }  # fmt: skip
    (tmp_path / "index.json").write_text(json.dumps(index))
    return tmp_path


def test_resolve_auto_prefers_optical_sar_and_checks_sha(shipped):
    assert shipped_tags("scfdm") == ["scfdm-optical-sar", "vis-nir"]
    ref = resolve_weights("scfdm", "auto")
    assert ref.tag == "scfdm-optical-sar" and ref.path == shipped / "scfdm-a.pt" and len(ref.sha256) == 64
    model = build_matcher("scfdm", weights=ref.path, expected_sha256=ref.sha256)
    assert model.width == WIDTH
    assert resolve_weights("scfdm", "vis-nir").tag == "vis-nir"
    with pytest.raises(CheckpointError, match="'rrl-optical-sar' is for matcher 'rrlnet', not 'scfdm'"):
        resolve_weights("scfdm", "rrl-optical-sar")


def test_resolve_none_path_and_bad_spec(scfdm, tmp_path):
    assert resolve_weights("scfdm", "none") is None and resolve_weights("scfdm", None) is None
    path = tmp_path / "mine.pt"
    save_checkpoint(scfdm, path, metadata={})
    ref = resolve_weights("scfdm", str(path))
    assert ref.tag == "mine.pt" and ref.path == path and ref.sha256 is None
    with pytest.raises(CheckpointError, match="neither a shipped tag .* nor an existing file"):
        resolve_weights("scfdm", str(tmp_path / "nope.pt"))


def test_network_without_shipped_weights_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(ck, "_weights_dir", lambda: tmp_path)  # no index.json at all: nothing shipped
    expected = "matcher scfdm has no weights: give --weights PATH or use the ncc matcher"
    with pytest.raises(CheckpointError, match=expected):
        resolve_weights("scfdm", "auto")


def test_parameter_free_matcher_needs_no_weights(tmp_path):
    assert resolve_weights("ncc", "auto") is None
    assert not ck.needs_weights("ncc") and ck.needs_weights("scfdm")
    with pytest.raises(CheckpointError, match="parameter-free"):
        resolve_weights("ncc", str(tmp_path))


def test_shipped_index_is_valid():
    index = ck.shipped_weights()  # the real, installed index (may be empty until weights are trained)
    assert isinstance(index, dict)
    for tag, entry in index.items():
        assert {"file", "matcher", "width", "sha256", "description", "pair_types"} <= set(entry), tag
        assert sha256_file(ck._weights_dir() / entry["file"]) == entry["sha256"], tag


class PlainTensorMatcher(Matcher):
    """Keeps a tensor outside its state dict, which shape-only construction cannot fill in."""

    name = "plain"
    paper = "test"

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.lin = torch.nn.Linear(2, 1)
        self.offset = torch.full((1,), 0.25)

    def forward(self, optical, sar):
        x = torch.stack([optical.mean((1, 2, 3)), sar.mean((1, 2, 3))], 1)
        return {"score": torch.sigmoid(self.lin(x)[:, 0] + self.offset)}


def test_matcher_with_plain_tensors_is_built_the_ordinary_way(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "_matcher_class", lambda name: PlainTensorMatcher)
    model = PlainTensorMatcher(MatcherConfig(width=WIDTH))
    save_checkpoint(model, tmp_path / "p.pt", metadata={})
    loaded = build_matcher("plain", weights=tmp_path / "p.pt")
    assert not loaded.offset.is_meta and float(loaded.offset) == 0.25
    torch.testing.assert_close(_scores(loaded), _scores(model), rtol=0, atol=0)
