"""SCFDM, AFD-Net, MFD-Net and EFR-Net: published sizes, output contract and one defining property each."""

from __future__ import annotations

import pytest
import torch

from geomatch import registry
from geomatch.errors import ConfigError
from geomatch.models.base import keras_param_count
from geomatch_plugins.matchers.afdnet import AFDNet, SampleInstanceNorm
from geomatch_plugins.matchers.efrnet import AxisECA, EFRNet
from geomatch_plugins.matchers.mfdnet import MFDNet
from geomatch_plugins.matchers.scfdm import SCFDM

CLASSES = {"scfdm": SCFDM, "afdnet": AFDNet, "mfdnet": MFDNet, "efrnet": EFRNet}
# Keras count_params of the repository's graphs (rrlnet-spec §3.1-3.4), all heads included.
FULL_COUNTS = {"scfdm": 6_471_554, "afdnet": 8_255_628, "mfdnet": 151_239_045, "efrnet": 9_166_915}
# Without the training-only heads: MFD drops four branch heads, EFR its two relation heads.
PRUNED_COUNTS = {"scfdm": 6_471_554, "afdnet": 8_255_628, "mfdnet": 104_723_329, "efrnet": 8_640_577}
NARROW = 0.125


def pair(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 64, 64, generator=g), torch.rand(batch, 1, 64, 64, generator=g)


@pytest.fixture(scope="module")
def published():
    # Built on the meta device: the counts need shapes only, and MFD-Net alone would be 600 MB of weights.
    with torch.device("meta"):
        return {name: cls() for name, cls in CLASSES.items()}


@pytest.fixture(scope="module")
def narrow():
    torch.manual_seed(0)
    return {name: cls(width=NARROW) for name, cls in CLASSES.items()}


@pytest.mark.parametrize("name", CLASSES)
def test_registry_resolves_name_to_class(name):
    cls = registry.load("matchers", name)
    assert cls is CLASSES[name]
    assert cls.name == name
    assert cls.optimizer == ("adam" if name in ("mfdnet", "efrnet") else "nadam")


@pytest.mark.parametrize("name", CLASSES)
def test_param_count_matches_published(published, name):
    model = published[name]
    assert keras_param_count(model) == FULL_COUNTS[name]
    assert keras_param_count(model.prune()) == PRUNED_COUNTS[name]


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("batch", [0, 1, 7])
def test_eval_forward_scores(narrow, name, batch):
    model = narrow[name].eval()
    with torch.no_grad():
        out = model(*pair(batch))
    assert set(out) == {"score"}
    assert out["score"].shape == (batch,)
    assert torch.all((out["score"] >= 0) & (out["score"] <= 1))


@pytest.mark.parametrize("name", CLASSES)
def test_training_heads_follow_heads_table(narrow, name):
    model = narrow[name].train()
    out = model(*pair(3, seed=1))
    heads = out["heads"]
    assert set(heads) == set(model.HEADS)
    for head, kind in model.HEADS.items():
        value = heads[head]
        if kind == "ce2":
            assert value.shape == (3, 2)
            torch.testing.assert_close(value.sum(dim=1), torch.ones(3))
        else:
            assert kind == "bce" and value.shape == (3,)
        assert torch.all((value >= 0) & (value <= 1))
    main = heads["main"][:, 1] if model.HEADS["main"] == "ce2" else heads["main"]
    torch.testing.assert_close(out["score"], main)


@pytest.mark.parametrize("name", ["mfdnet", "efrnet"])
def test_prune_drops_aux_heads_keeps_score(narrow, name):
    model = narrow[name].eval()
    pruned = model.prune()
    for attr in model.TRAINING_ONLY:
        assert not hasattr(pruned, attr)
    x = pair(4, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(pruned(*x)["score"], model(*x)["score"])


def test_patch_size_and_channels_are_validated():
    with pytest.raises(ConfigError, match="patch_size 48"):
        AFDNet(patch_size=48, width=NARROW)
    with pytest.raises(ConfigError, match="in_channels"):
        SCFDM(in_channels=(3, 1), width=NARROW)


def test_wider_model_scales_channels():
    assert SCFDM(width=0.25).trunk[0][0].out_channels == 16
    assert keras_param_count(EFRNet(width=0.25)) < FULL_COUNTS["efrnet"] / 8


# --- SCFDM: one trunk over the side-by-side image, so pixels at the seam reach both halves.


def test_scfdm_seam_pixels_reach_both_halves():
    torch.manual_seed(0)
    model = SCFDM(width=0.25).eval()  # eval: BatchNorm must not couple samples
    optical, sar = pair(1, seed=3)
    with torch.no_grad():
        base1, base2 = model.features(optical, sar)

        def halves_changed(opt, s):
            f1, f2 = model.features(opt, s)
            return not torch.equal(f1, base1), not torch.equal(f2, base2)

        seam_opt = optical.clone()
        seam_opt[..., 63] = 1 - seam_opt[..., 63]
        seam_sar = sar.clone()
        seam_sar[..., 0] = 1 - seam_sar[..., 0]
        far_opt = optical.clone()
        far_opt[..., 0] = 1 - far_opt[..., 0]
        assert halves_changed(seam_opt, sar) == (True, True)
        assert halves_changed(optical, seam_sar) == (True, True)
        # The trunk's receptive field is 70 px, so the optical patch's far edge cannot reach the SAR half.
        assert halves_changed(far_opt, sar) == (True, False)


# --- AFD-Net: whole-sample instance norm with scalar affine and eps on the std.


def test_afd_instance_norm_is_per_sample_over_chw():
    norm = SampleInstanceNorm()
    assert sum(p.numel() for p in norm.parameters()) == 2
    with torch.no_grad():
        norm.weight.fill_(1.5)
        norm.bias.fill_(-0.25)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 5, 5, generator=g) * torch.linspace(0.5, 4, 8).view(1, 8, 1, 1)
    y = norm(x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False).sqrt()
    torch.testing.assert_close(y, (x - mean) / (std + 1e-3) * 1.5 - 0.25)

    scaled = x.clone()
    scaled[0] = 40 * scaled[0] + 7  # rescale one sample's whole feature map
    y_scaled = norm(scaled)
    torch.testing.assert_close(y_scaled[0], y[0], atol=1e-3, rtol=1e-3)  # eps on a std of ~2 leaves 1e-3
    assert torch.equal(y_scaled[1], y[1])  # other samples untouched: no batch statistics
    # Joint over C: per-channel means stay apart, unlike nn.InstanceNorm2d.
    assert (x - mean)[0].mean(dim=(1, 2)).abs().max() > 0.1


# --- MFD-Net: the first two difference taps are raw conv outputs, before BN and ReLU.


def test_mfd_first_taps_are_pre_batchnorm(narrow):
    extractor = narrow["mfdnet"].extractors[0].eval()
    x, _ = pair(2, seed=5)
    with torch.no_grad():
        taps = extractor(x)
        assert torch.equal(taps[0], extractor.conv1(x))
        assert taps[0].min() < 0 and taps[1].min() < 0  # impossible after a ReLU
        extractor.bn1.bias.add_(3.0)
        extractor.bn2.bias.add_(3.0)
        shifted = extractor(x)
        extractor.bn1.bias.sub_(3.0)
        extractor.bn2.bias.sub_(3.0)
    assert torch.equal(shifted[0], taps[0])
    assert not torch.equal(shifted[2], taps[2])  # the pooled tap does see BN
    assert [t.shape[1:] for t in taps] == [
        (4, 64, 64), (8, 64, 64), (8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)
    ]  # fmt: skip


# --- EFR-Net: imp_eca attention, one Conv1D gate per axis with kernels from k(n).


def test_efr_attention_kernels_follow_k_rule(published):
    attentions = [m for m in published["efrnet"].extractors[0] if isinstance(m, AxisECA)]
    kernels = [(a.conv_h.kernel_size[0], a.conv_w.kernel_size[0], a.conv_c.kernel_size[0]) for a in attentions]
    # (H, W, C) per stage: (32, 32, 32), (16, 16, 64), (8, 8, 128), (4, 4, 256).
    assert kernels == [(3, 3, 3), (3, 3, 3), (3, 3, 5), (1, 1, 5)]


def test_efr_attention_multiplies_three_axis_gates():
    torch.manual_seed(6)
    att = AxisECA(channels=128, height=8, width=16)  # kernels 5, 3, 3
    x = torch.randn(2, 128, 8, 16)

    def gate(conv, v):  # Keras Conv1D 'same': zero padding of k // 2, one filter, bias
        k = conv.kernel_size[0]
        padded = torch.nn.functional.pad(v, (k // 2, k // 2))
        w = conv.weight.view(k)
        out = torch.stack([(padded[:, i : i + k] * w).sum(dim=1) for i in range(v.shape[1])], dim=1)
        return torch.sigmoid(out + conv.bias)

    a_h = gate(att.conv_h, x.mean(dim=(1, 3)))[:, None, :, None]
    a_w = gate(att.conv_w, x.mean(dim=(1, 2)))[:, None, None, :]
    a_c = gate(att.conv_c, x.mean(dim=(2, 3)))[:, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(att(x), x * a_h * a_w * a_c)
