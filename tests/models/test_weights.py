"""Which file a --weights value means: shipped tags from weights packages (entry points), paths, auto, none."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint

import pytest
import torch

from geomatch.errors import CheckpointError
from geomatch.fileio import sha256_file
from geomatch.models import factory, weights
from geomatch.models.checkpoint import save_checkpoint
from geomatch.models.factory import build_matcher
from geomatch.models.weights import resolve_weights, shipped_tags, shipped_weights

WIDTH = 0.125


@pytest.fixture(scope="module")
def scfdm():
    torch.manual_seed(0)
    return build_matcher("scfdm", width=WIDTH).eval()


@pytest.fixture
def shipped(tmp_path, monkeypatch, scfdm):
    """A weights package folder with two tags for scfdm and one for another matcher."""
    monkeypatch.setattr(weights, "weights_folders", lambda: {"test": tmp_path})
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
    monkeypatch.setattr(weights, "weights_folders", lambda: {"empty": tmp_path})  # no index.json: nothing shipped
    expected = "matcher scfdm has no weights: give --weights PATH or use the ncc matcher"
    with pytest.raises(CheckpointError, match=expected):
        resolve_weights("scfdm", "auto")


def test_parameter_free_matcher_needs_no_weights(tmp_path):
    assert resolve_weights("ncc", "auto") is None
    assert not factory.needs_weights("ncc") and factory.needs_weights("scfdm")
    with pytest.raises(CheckpointError, match="parameter-free"):
        resolve_weights("ncc", str(tmp_path))


def test_weights_packages_come_from_the_entry_point_group(monkeypatch, tmp_path, caplog):
    """A second distribution's package is found beside ours; a broken one is skipped with a warning; a tag
    claimed twice keeps the first package's."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "index.json").write_text(json.dumps({"vis-nir": {"file": "other.pt", "matcher": "rrlnet"},
                                                     "extra": {"file": "extra.pt", "matcher": "scfdm"}}))
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    ours = EntryPoint("shipped", "geomatch_plugins.weights", weights.WEIGHTS_GROUP)
    theirs = EntryPoint("zz-third-party", tmp_path.name, weights.WEIGHTS_GROUP)
    broken = EntryPoint("broken", "no_such_weights_package", weights.WEIGHTS_GROUP)
    monkeypatch.setattr(weights, "entry_points", lambda group: [theirs, broken, ours] if group == weights.WEIGHTS_GROUP
                        else [])  # fmt: skip
    folders = weights.weights_folders()
    assert list(folders) == ["shipped", "zz-third-party"] and folders["zz-third-party"] == tmp_path
    assert any("'broken'" in r.getMessage() for r in caplog.records)
    index = shipped_weights()
    assert index["extra"]["file"] == "extra.pt"
    assert index["vis-nir"]["file"] == "rrlnet-vis-nir.pt"  # ours came first, by entry name
    assert resolve_weights("scfdm", "extra").path == tmp_path / "extra.pt"


def test_installed_weights_are_declared_by_the_plugin_not_named_by_core():
    from pathlib import Path

    import geomatch

    core = Path(geomatch.__file__).parent
    assert not [p for p in core.rglob("*.py") if "geomatch_plugins" in p.read_text()]
    assert "shipped" in weights.weights_folders()  # declared in setup.cfg under geomatch.weights


def test_shipped_index_is_valid():
    index = shipped_weights()  # the real, installed index
    assert index
    for tag, entry in index.items():
        assert {"file", "matcher", "width", "sha256", "description", "pair_types"} <= set(entry), tag
        assert sha256_file(resolve_weights(entry["matcher"], tag).path) == entry["sha256"], tag
