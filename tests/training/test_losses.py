import logging
import math

import pytest
import torch

from geomatch.errors import InputError
from geomatch.training.losses import MatcherLoss, VGG19Features, bce, ce2, load_vgg19


def test_bce_clips_like_keras():
    assert bce(torch.tensor([0.0]), torch.tensor([1])).item() == pytest.approx(-math.log(1e-7), rel=1e-4)
    p, y = torch.tensor([0.8, 0.3]), torch.tensor([1, 0])
    assert bce(p, y).item() == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2, rel=1e-6)


def test_ce2_on_softmax_probabilities():
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    assert ce2(probs, torch.tensor([1, 1])).item() == pytest.approx(-(math.log(0.8) + math.log(0.4)) / 2, rel=1e-6)


def _recon_outputs(n=2, size=32):
    g = torch.Generator().manual_seed(0)
    target = torch.rand(n, 1, size, size, generator=g)
    pred = torch.rand(n, 1, size, size, generator=g)
    return {"main": torch.full((n,), 0.5), "recon_optical": pred, "recon_sar": target.clone()}, target


def test_reconstruction_without_vgg_is_the_pixel_term_and_says_so(caplog):
    heads = {"main": "bce", "recon_optical": "recon_optical", "recon_sar": "recon_sar"}
    with caplog.at_level(logging.WARNING):
        loss_fn = MatcherLoss(heads)
    assert "perceptual term off: no --vgg19-weights given" in caplog.text
    out, target = _recon_outputs()
    total, parts = loss_fn(out, torch.tensor([1, 0]), target, target)
    assert parts["recon_optical"].item() == pytest.approx(0.1 * torch.mean((out["recon_optical"] - target) ** 2).item())
    assert parts["recon_sar"].item() == 0.0
    assert total.item() == pytest.approx(sum(v.item() for v in parts.values()))


def test_vgg19_weights_load_from_a_torchvision_layout_file_and_add_the_feature_term(tmp_path):
    torch.manual_seed(0)
    ref = VGG19Features()
    state = {**ref.state_dict(), "classifier.0.weight": torch.zeros(2, 2)}  # classifier keys are ignored
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    vgg = load_vgg19(path)
    assert all(torch.equal(a, b) for a, b in zip(vgg.state_dict().values(), ref.state_dict().values(), strict=True))
    assert not any(p.requires_grad for p in vgg.parameters())
    out, target = _recon_outputs(size=64)
    heads = {"recon_optical": "recon_optical"}
    with_vgg = MatcherLoss(heads, vgg)(out, torch.tensor([1, 0]), target, target)[1]["recon_optical"]
    pixel = MatcherLoss(heads)(out, torch.tensor([1, 0]), target, target)[1]["recon_optical"]
    with torch.no_grad():
        feat = torch.mean((vgg(out["recon_optical"]) - vgg(target)) ** 2)
    assert with_vgg.item() == pytest.approx(pixel.item() + feat.item(), rel=1e-5)
    assert feat.item() > 0


def test_foreign_vgg_file_is_an_input_error(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(InputError, match="not a VGG19 state dict"):
        load_vgg19(path)
    with pytest.raises(InputError, match="not found"):
        load_vgg19(tmp_path / "missing.pth")


def test_unknown_kind_and_missing_head():
    with pytest.raises(ValueError, match="unknown loss kinds"):
        MatcherLoss({"main": "hinge"})
    with pytest.raises(ValueError, match="did not return"):
        MatcherLoss({"main": "bce", "aux": "bce"})({"main": torch.tensor([0.5])}, torch.tensor([1]), None, None)
