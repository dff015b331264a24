"""Building a matcher from a checkpoint: fit checks, matcher options, the shape-only shortcut's fallback."""

from __future__ import annotations

import pytest
import torch

from geomatch.errors import CheckpointError, ConfigError
from geomatch.models import factory
from geomatch.models.base import Matcher, MatcherConfig
from geomatch.models.checkpoint import save_checkpoint
from geomatch.models.factory import build_for_finetuning, build_matcher

WIDTH = 0.125


def _scores(model):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 1, 64, 64, generator=g), torch.rand(3, 1, 64, 64, generator=g)
    with torch.no_grad():
        return model.eval()(x, y)["score"]


def test_state_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    full = build_matcher("scfdm", width=WIDTH)
    # A checkpoint that holds one tensor too few: written as geomatch would, so its checksum holds.
    del full.trunk[0][0].weight
    full.trunk[0][0].register_parameter("weight", None)
    save_checkpoint(full, path, metadata={})
    with pytest.raises(CheckpointError, match="does not fit scfdm at width 0.125"):
        build_matcher("scfdm", weights=path)


def test_wrong_patch_size_and_fine_tuning_from_pruned_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "pruned.pt"
    model = build_matcher("rrlnet", width=WIDTH)
    save_checkpoint(model.prune(), path, metadata={})
    with pytest.raises(CheckpointError, match="64-pixel patches, not 32"):
        build_matcher("rrlnet", weights=path, patch_size=32)
    tuned = build_for_finetuning("rrlnet", path)
    assert tuned.training and not tuned.pruned and hasattr(tuned, "decoder_optical")
    torch.testing.assert_close(_scores(tuned.prune()), _scores(model.prune()), rtol=0, atol=1e-6)


def test_unknown_matcher_option_is_a_config_error():
    with pytest.raises(ConfigError, match="does not take options"):
        build_matcher("scfdm", width=WIDTH, params={"window": 9})
    assert build_matcher("ncc", params={"window": 9}).window == 9


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
    monkeypatch.setattr(factory, "_matcher_class", lambda name: PlainTensorMatcher)
    model = PlainTensorMatcher(MatcherConfig(width=WIDTH))
    save_checkpoint(model, tmp_path / "p.pt", metadata={})
    loaded = build_matcher("plain", weights=tmp_path / "p.pt")
    assert not loaded.offset.is_meta and float(loaded.offset) == 0.25
    torch.testing.assert_close(_scores(loaded), _scores(model), rtol=0, atol=0)
