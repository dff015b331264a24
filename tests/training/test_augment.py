import torch

from geomatch.training.augment import AugmentConfig, Augmenter, _some_of


def _batch(n=64, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    return x, x.clone()


def test_some_of_picks_zero_to_two_distinct_ops():
    ops = _some_of(7, 3000, torch.Generator().manual_seed(1))
    counts = (ops >= 0).sum(dim=1)
    freq = torch.bincount(counts, minlength=3).float() / 3000
    assert torch.all((freq - 1 / 3).abs() < 0.05)
    two = ops[counts == 2]
    assert torch.all(two[:, 0] != two[:, 1])
    assert set(ops[ops >= 0].unique().tolist()) == set(range(7))


def test_output_range_grid_and_reproducibility():
    opt, sar = _batch()
    a1, b1 = Augmenter(generator=torch.Generator().manual_seed(5))(opt, sar)
    a2, b2 = Augmenter(generator=torch.Generator().manual_seed(5))(opt, sar)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert a1.dtype == torch.float32 and a1.min() >= 0 and a1.max() <= 1
    assert torch.allclose(a1 * 255, (a1 * 255).round(), atol=1e-3)


def test_flips_and_rotations_are_shared_by_the_pair():
    opt, sar = _batch()
    aug = Augmenter(AugmentConfig(photometric=False, geometric=True), torch.Generator().manual_seed(2))
    a, b = aug(opt, sar)
    assert torch.equal(a, b)
    changed = (a != opt.float() / 255).flatten(1).any(dim=1)
    assert 0.3 < changed.float().mean() < 0.95  # 0-2 ops, flips only half the time: most but not all change


def test_photometric_jitter_is_independent_per_modality():
    opt, sar = _batch()
    aug = Augmenter(AugmentConfig(photometric=True, geometric=False), torch.Generator().manual_seed(3))
    a, b = aug(opt, sar)
    differs = (a != b).flatten(1).any(dim=1).float().mean()
    assert differs > 0.5


def test_speckle_multiplies_the_sar_side_only():
    opt = torch.full((32, 1, 16, 16), 128, dtype=torch.uint8)
    cfg = AugmentConfig(photometric=False, geometric=False, speckle_prob=1.0, speckle_looks=4)
    a, b = Augmenter(cfg, torch.Generator().manual_seed(4))(opt, opt.clone())
    assert torch.equal(a, opt.float() / 255)
    ratio = b * 255 / 128
    assert abs(ratio.mean().item() - 1) < 0.05 and abs(ratio.var().item() - 0.25) < 0.05
