import numpy as np
import pytest
import torch
from matching_synth import textured

from geomatch import registry
from geomatch.errors import ConfigError
from geomatch_plugins.matchers.ncc import NCC


def _batch(n=6, p=32, seed=0):
    img = torch.from_numpy(textured((96, 96), seed=seed))
    return torch.stack([img[i * 8:i * 8 + p, i * 9:i * 9 + p] for i in range(n)])[:, None]


def test_scores_follow_the_correlation():
    m = NCC().eval()
    a = _batch()
    np.testing.assert_allclose(m.score(a, a).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(m.score(a, 1.0 - a).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(m.score(a, 0.3 * a + 0.2).numpy(), 1.0, atol=1e-5)  # gain and offset blind
    unrelated = m.score(a, _batch(seed=9)).numpy()
    assert np.all(np.abs(unrelated - 0.5) < 0.3)
    assert m.score(a, a).numpy().min() > unrelated.max()


def test_flat_patches_and_empty_batches_are_safe():
    m = NCC().eval()
    flat = torch.full((2, 1, 16, 16), 0.4)
    s = m.score(flat, _batch(2, 16))
    assert torch.isfinite(s).all()
    np.testing.assert_allclose(s.numpy(), 0.5, atol=1e-6)
    empty = torch.zeros((0, 1, 64, 64))
    assert m(empty, empty)["score"].shape == (0,)


def test_window_and_gaussian_weighting_look_at_the_centre():
    a = _batch(4, 32)
    b = a.clone()
    b[..., :4, :] = torch.rand_like(b[..., :4, :])  # spoil the patch's outer rows only
    plain, centre = NCC().eval(), NCC(window=16).eval()
    weighted = NCC(sigma=4.0).eval()
    np.testing.assert_allclose(centre.score(a, b).numpy(), 1.0, atol=1e-5)
    assert (weighted.score(a, b) > plain.score(a, b)).all()
    with pytest.raises(ConfigError):
        NCC(window=1)
    with pytest.raises(ConfigError):
        NCC(sigma=-1.0)


def test_matcher_contract_heads_prune_and_registry():
    assert registry.load("matchers", "ncc") is NCC
    m = NCC()
    assert NCC.HEADS == {"main": "bce"} and m.name == "ncc"
    assert sum(p.numel() for p in m.parameters()) == 0
    a, b = _batch(3), _batch(3, seed=2)
    out = m.train()(a, b)
    assert set(out["heads"]) == {"main"}
    torch.testing.assert_close(out["heads"]["main"], out["score"])
    pruned = m.prune()
    assert pruned.pruned and not pruned.training
    assert "heads" not in pruned(a, b)
    torch.testing.assert_close(pruned.score(a, b), out["score"])
    with pytest.raises(ValueError):
        m(a, b[:, :, :16, :16])
