"""The checkpoint file format: atomic writes, fp16 storage, the stored checksum, the training state file."""

from __future__ import annotations

import io
import logging
import pickle

import pytest
import torch

from geomatch import fileio
from geomatch.errors import CheckpointError
from geomatch.fileio import sha256_file
from geomatch.models.base import Matcher, MatcherConfig
from geomatch.models.checkpoint import (
    load_checkpoint,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from geomatch.models.factory import build_matcher

WIDTH = 0.125


@pytest.fixture(scope="module")
def scfdm():
    torch.manual_seed(0)
    return build_matcher("scfdm", width=WIDTH).eval()


class Small(Matcher):
    """A matcher of a few parameters: its checkpoint is small enough to flip every byte of."""

    name = "small"
    paper = "test"

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.lin = torch.nn.Linear(2, 1)
        self.norm = torch.nn.BatchNorm1d(2)

    def forward(self, optical, sar):
        x = self.norm(torch.stack([optical.mean((1, 2, 3)), sar.mean((1, 2, 3))], 1))
        return {"score": torch.sigmoid(self.lin(x)[:, 0])}


def _scores(model):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 1, 64, 64, generator=g), torch.rand(3, 1, 64, 64, generator=g)
    with torch.no_grad():
        return model.eval()(x, y)["score"]


def _same(a, b) -> bool:
    """Equal plain data and tensors (dtype, shape and every value) all the way down."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


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

    monkeypatch.setattr(fileio.os, "fsync", broken_fsync)
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
    with pytest.raises(CheckpointError, match="not a loadable geomatch checkpoint") as err:
        load_checkpoint(evil)
    assert "weights_only" not in str(err.value) and err.value.__cause__ is None
    with pytest.raises(CheckpointError, match="cannot read geomatch checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


# ---- the stored checksum ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # a flipped protocol byte
def test_any_flipped_byte_is_refused_or_changes_nothing(tmp_path):
    """Flip bytes all over a checkpoint (every 7th: each load takes a few ms): the load fails with one clear
    error, or, where the byte is zip bookkeeping torch never reads, weights and metadata come back as saved."""
    torch.manual_seed(0)
    path = tmp_path / "small.pt"
    save_checkpoint(Small(MatcherConfig(width=WIDTH)), path, metadata={"description": "flip"})
    good = path.read_bytes()
    reference = load_checkpoint(path)
    checksum_failures = 0
    for i in range(0, len(good), 7):
        bad = bytearray(good)
        bad[i] ^= 0x10
        path.write_bytes(bytes(bad))
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            checksum_failures += "fails its checksum" in str(exc)
            continue
        assert _same(loaded, reference), f"byte {i} flipped loads different content silently"
    # The tensors' bytes and metadata text are stored unchecked by torch: only the checksum catches those.
    assert checksum_failures >= 20


def test_changed_metadata_or_weights_fail_the_checksum(scfdm, tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(scfdm, path, metadata={})
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["width"] = 0.25
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=f"{path} fails its checksum"):
        load_checkpoint(path)
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["width"] = WIDTH
    torch.save(payload, path)
    assert load_checkpoint(path)[1]["width"] == WIDTH  # restored: the checksum holds again
    payload["state_dict"]["trunk.0.0.weight"][0, 0, 0, 0] += 1e-3
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="fails its checksum"):
        build_matcher("scfdm", weights=path)


def test_version_1_file_without_checksum_loads_with_a_warning(scfdm, tmp_path, caplog):
    path = tmp_path / "old.pt"
    save_checkpoint(scfdm, path, metadata={})
    payload = torch.load(path, weights_only=True)
    del payload["checksum"]
    payload["format_version"] = 1
    torch.save(payload, path)
    with caplog.at_level(logging.WARNING, logger="geomatch.models.checkpoint"):
        state, _ = load_checkpoint(path)
    assert _same(state, payload["state_dict"])
    assert any("no checksum" in r.getMessage() for r in caplog.records)
    payload["format_version"] = 2  # a current file that lost its checksum is damaged, not old
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="has no checksum"):
        load_checkpoint(path)


# ---- the training state (resume.pt) ----------------------------------------------------------------------------


def _state(model):
    opt = torch.optim.Adam(model.parameters())
    model(torch.rand(4, 1, 64, 64), torch.rand(4, 1, 64, 64))["score"].sum().backward()
    opt.step()
    return {"epoch": 3, "model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": None,
            "rng": {"numpy": {"state": {"state": 2**100 + 7, "inc": 5}}, "torch": torch.get_rng_state()},
            "history": [{"epoch": 1, "val_fpr95": 0.5}], "best": {"epoch": 1, "val_fpr95": 0.5}}  # fmt: skip


def test_training_state_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    state = _state(Small(MatcherConfig()))
    save_training_state(state, tmp_path / "resume.pt")
    assert _same(load_training_state(tmp_path / "resume.pt"), state)


def test_damaged_foreign_or_unsafe_training_state_is_one_clear_error(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resume.pt"
    save_training_state(_state(Small(MatcherConfig())), path)
    payload = torch.load(path, weights_only=True)
    payload["state"]["optimizer"]["state"][0]["exp_avg"][0] += 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=f"{path} fails its checksum"):
        load_training_state(path)

    torch.save({"epoch": 1}, path)  # no header: not ours
    with pytest.raises(CheckpointError, match="not a geomatch training state"):
        load_training_state(path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"format": "geomatch-training-state", "state": Evil()}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError) as err:
        load_training_state(path)
    message = str(err.value)
    assert message.startswith(f"{path} is not a loadable training state") and "print" in message
    assert "weights_only" not in message and "\n" not in message and err.value.__suppress_context__
