"""FIL-Net and RRL-Net against rrlnet-spec §3.5/§3.6: sizes, MGLA, legacy upsampling, FIL, MLPP pruning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geomatch.models.base import keras_param_count
from geomatch.models.flops import multiply_adds
from geomatch.registry import load
from geomatch_plugins.matchers.attention import MGLA
from geomatch_plugins.matchers.fil import FILModule, interact
from geomatch_plugins.matchers.filnet import FILNet
from geomatch_plugins.matchers.rrlnet import RRLNet, upsample2x_legacy

NARROW = 0.125
RRL_OUTPUTS = ["main", "stage4", "stage3", "module5", "module4", "module3", "recon_optical", "recon_sar"]
AUX_MODULES = [
    "decoder_optical",
    "decoder_sar",
    "head_stage4",
    "head_stage3",
    "head_module5",
    "head_module4",
    "head_module3",
]


def meta(cls, **kwargs):
    # Shapes only: skips the slow truncated-normal initialisation of tens of millions of weights.
    with torch.device("meta"):
        return cls(**kwargs)


def pair(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 64, 64, generator=g), torch.rand(batch, 1, 64, 64, generator=g)


@pytest.fixture(scope="module")
def rrl() -> RRLNet:
    torch.manual_seed(0)
    return RRLNet(width=NARROW)


@pytest.fixture(scope="module")
def fil() -> FILNet:
    torch.manual_seed(0)
    return FILNet(width=NARROW)


# --- sizes -----------------------------------------------------------------------------------------------


def test_keras_param_counts_at_published_width():
    rrl = meta(RRLNet)
    assert keras_param_count(rrl) == 12_829_412
    assert keras_param_count(rrl.prune()) == 9_404_025
    assert keras_param_count(meta(FILNet)) == 33_068_742


def test_registry_names_resolve_to_the_classes():
    assert load("matchers", "rrlnet") is RRLNet
    assert load("matchers", "filnet") is FILNet
    assert RRLNet.optimizer == FILNet.optimizer == "nadam"


@pytest.mark.parametrize("cls", [RRLNet, FILNet])
def test_width_scales_every_channel_count(cls):
    full, half = meta(cls), meta(cls, width=0.5)
    pairs = [
        (a, b) for a, b in zip(full.modules(), half.modules(), strict=True) if isinstance(a, (nn.Conv2d, nn.Linear))
    ]
    assert len(pairs) > 20
    for a, b in pairs:
        fin, fout = (a.in_channels, a.out_channels) if isinstance(a, nn.Conv2d) else (a.in_features, a.out_features)
        hin, hout = (b.in_channels, b.out_channels) if isinstance(b, nn.Conv2d) else (b.in_features, b.out_features)
        # Only the image channels and the single sigmoid outputs keep their size.
        assert hin == (fin if fin == 1 else fin // 2)
        assert hout == (fout if fout == 1 else fout // 2)


@pytest.mark.parametrize(("width", "published"), [(1.0, 627e6), (0.5, 157e6), (0.25, 39e6)])
def test_rrl_multiply_adds_match_the_spec(width, published):
    macs = multiply_adds(meta(RRLNet, width=width))
    assert abs(macs - published) / published < 0.02


def test_fil_multiply_adds_match_the_spec():
    assert abs(multiply_adds(meta(FILNet)) - 1983e6) / 1983e6 < 0.02


class _TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, groups=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, optical, sar):
        return {"score": self.fc(self.conv(optical).mean((2, 3)))}


def test_multiply_adds_counts_known_layers():
    # 16*16*4 conv outputs at 9 MACs each, plus a 4->3 dense layer.
    assert multiply_adds(_TwoLayers(), patch_size=16) == 16 * 16 * 4 * 9 + 4 * 3


# --- MGLA ------------------------------------------------------------------------------------------------

SPEC_KERNELS = {  # position: (k_H, k_W, k_C), rrlnet-spec §3.6 table
    "enc1": (3, 3, 3),
    "enc2": (3, 3, 3),
    "enc3": (3, 3, 3),
    "enc4": (3, 3, 5),
    "enc5": (1, 1, 5),
    "dec8": (3, 3, 5),
    "dec16": (3, 3, 3),
    "dec32": (3, 3, 3),
    "dec64": (3, 3, 3),
}


def test_mgla_kernel_sizes_follow_the_spec_table():
    model = meta(RRLNet)
    for name in ("encoder_optical", "encoder_sar"):
        encoder = getattr(model, name)
        for k, stage in enumerate(encoder.stages, start=1):
            assert stage[-1].kernel_sizes == SPEC_KERNELS[f"enc{k}"]
    for name in ("decoder_optical", "decoder_sar"):
        decoder = getattr(model, name)
        got = {f"dec{s.attention.shape[1]}": s.attention.kernel_sizes for s in decoder.stages}
        assert got == {k: v for k, v in SPEC_KERNELS.items() if k.startswith("dec")}
    assert [s[-1].shape for s in model.encoder_optical.stages] == [
        (16, 64, 64),
        (32, 32, 32),
        (64, 16, 16),
        (128, 8, 8),
        (256, 4, 4),
    ]


def _conv1d_same(z: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Keras Conv1D(1, k, padding='same') on (B, n), written out as a cross-correlation."""
    w, b = conv.weight[0, 0], conv.bias[0]
    k, n = w.numel(), z.shape[1]
    padded = F.pad(z, (k // 2, k // 2))
    return torch.stack([(padded[:, i : i + k] * w).sum(1) + b for i in range(n)], dim=1)


def mgla_reference(x: torch.Tensor, m: MGLA) -> torch.Tensor:
    """The Keras graph step by step in NHWC: softmax of the mean over an axis, weighted pool, Conv1D."""
    xh = x.permute(0, 2, 3, 1)  # B, H, W, C
    b, h, w, c = xh.shape
    alpha = torch.softmax(xh.mean(-1).reshape(b, h * w), 1)
    z_c = (xh.reshape(b, h * w, c) * alpha[:, :, None]).sum(1)
    x_h = xh.permute(0, 2, 3, 1)  # B, W, C, H
    beta = torch.softmax(x_h.mean(-1).reshape(b, w * c), 1)
    z_h = (x_h.reshape(b, w * c, h) * beta[:, :, None]).sum(1)
    x_w = xh.permute(0, 1, 3, 2)  # B, H, C, W
    gamma = torch.softmax(x_w.mean(-1).reshape(b, h * c), 1)
    z_w = (x_w.reshape(b, h * c, w) * gamma[:, :, None]).sum(1)
    a_c = torch.sigmoid(_conv1d_same(z_c, m.conv_c))
    a_h = torch.sigmoid(_conv1d_same(z_h, m.conv_h))
    a_w = torch.sigmoid(_conv1d_same(z_w, m.conv_w))
    out = xh * a_c[:, None, None, :] * a_h[:, :, None, None] * a_w[:, None, :, None]
    return out.permute(0, 3, 1, 2)


def test_mgla_matches_the_keras_graph_on_a_non_square_map():
    torch.manual_seed(1)
    m = MGLA(channels=8, height=16, width=32)  # every kernel 3, every axis a different length
    for conv in (m.conv_c, m.conv_h, m.conv_w):
        nn.init.normal_(conv.weight)  # asymmetric kernels catch flipped or swapped axes
        nn.init.normal_(conv.bias)
    x = torch.randn(2, 8, 16, 32)
    assert m.kernel_sizes == (3, 3, 3)
    torch.testing.assert_close(m(x), mgla_reference(x, m))
    assert m(x[:0]).shape == (0, 8, 16, 32)


# --- legacy bilinear upsampling --------------------------------------------------------------------------


def test_legacy_upsampling_samples_source_at_half_the_destination_index():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    expected = torch.tensor([
        [1.0, 1.5, 2.0, 2.0],
        [2.0, 2.5, 3.0, 3.0],
        [3.0, 3.5, 4.0, 4.0],
        [3.0, 3.5, 4.0, 4.0],
    ])[None, None]  # fmt: skip
    torch.testing.assert_close(upsample2x_legacy(x), expected)
    # PyTorch's own align_corners=False uses half-pixel centres: a different mapping.
    assert not torch.allclose(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), expected)


def test_legacy_upsampling_equals_align_corners_on_an_edge_padded_map():
    # Same mapping another way: with one replicated row/column, align_corners=True to 2n+1 samples n*d/(2n).
    x = torch.randn(2, 3, 5, 4)
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    other = F.interpolate(padded, size=(11, 9), mode="bilinear", align_corners=True)[..., :10, :8]
    torch.testing.assert_close(upsample2x_legacy(x), other)


# --- FIL module ------------------------------------------------------------------------------------------


def test_common_and_private_features_by_hand():
    a1, g1 = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])
    a2, g2 = torch.tensor([4.0, 3.0]), torch.tensor([0.25, 0.0])
    f = interact(a1, g1, a2, g2)
    torch.testing.assert_close(f.common_optical, torch.tensor([0.5, 0.0]))  # a1 * g2
    torch.testing.assert_close(f.common_sar, torch.tensor([2.0, 3.0]))  # a2 * g1
    torch.testing.assert_close(f.private_optical, torch.tensor([1.5, 1.0]))  # |c1 - a1|
    torch.testing.assert_close(f.private_sar, torch.tensor([2.0, 0.0]))  # |c2 - a2|


def test_fil_module_gates_each_modality_by_the_other():
    module = FILModule(1, 1, 1).eval()  # fresh BN: y = x / sqrt(1 + 1e-3)
    for conv, weight in (
        (module.feature_optical[0], 1.0),
        (module.gate_optical[0], 2.0),
        (module.feature_sar[0], 3.0),
        (module.gate_sar[0], -1.0),
    ):
        nn.init.constant_(conv.weight, weight)
        nn.init.zeros_(conv.bias)
    x1, x2 = torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 1.0)
    s = 1 / math.sqrt(1 + 1e-3)
    a1, g1 = 0.5 * s, torch.sigmoid(torch.tensor(1.0 * s))
    a2, g2 = 3.0 * s, torch.sigmoid(torch.tensor(-1.0 * s))
    f = module(x1, x2)
    assert f.common_optical.item() == pytest.approx(a1 * g2.item(), rel=1e-6)
    assert f.common_sar.item() == pytest.approx(a2 * g1.item(), rel=1e-6)
    assert f.private_optical.item() == pytest.approx(abs(a1 * g2.item() - a1), rel=1e-6)
    assert f.private_sar.item() == pytest.approx(abs(a2 * g1.item() - a2), rel=1e-6)


# --- forward contract ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("net", ["rrl", "fil"])
def test_forward_shapes_at_narrow_width(net, batch, request):
    model = request.getfixturevalue(net)
    optical, sar = pair(batch)
    model.train()
    out = model(optical, sar)
    expected = RRL_OUTPUTS if net == "rrl" else RRL_OUTPUTS[:6]
    assert list(out["heads"]) == expected == list(model.HEADS)
    for name, value in out["heads"].items():
        shape = (batch, 1, 64, 64) if name.startswith("recon") else (batch,)
        assert value.shape == shape, name
        assert ((value >= 0) & (value <= 1)).all()
    assert out["score"] is out["heads"]["main"]
    model.eval()
    with torch.no_grad():
        out = model(optical, sar)
    assert set(out) == {"score"} and out["score"].shape == (batch,)


@pytest.mark.parametrize("net", ["rrl", "fil"])
def test_empty_batch(net, request):
    model = request.getfixturevalue(net).eval()
    optical, sar = pair(0)
    with torch.no_grad():
        assert model(optical, sar)["score"].shape == (0,)
        assert model.prune()(optical, sar)["score"].shape == (0,)


@pytest.mark.parametrize("net", ["rrl", "fil"])
def test_prune_drops_training_heads_and_keeps_the_score(net, request):
    model = request.getfixturevalue(net)
    optical, sar = pair(5, seed=3)
    pruned = model.prune()
    for name in model.TRAINING_ONLY:
        assert not hasattr(pruned, name)
    if net == "rrl":
        assert set(model.TRAINING_ONLY) == set(AUX_MODULES)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(pruned(optical, sar)["score"], model(optical, sar)["score"], rtol=0, atol=0)
        # Training mode (batch statistics): the pruned model still returns only the main score.
        model.train()
        pruned.train()
        main = model(optical, sar)["heads"]["main"]
        out = pruned(optical, sar)
    assert set(out) == {"score"}
    torch.testing.assert_close(out["score"], main, rtol=0, atol=0)


def test_eval_mode_skips_decoders_and_auxiliary_heads(rrl):
    called: list[str] = []
    handles = [getattr(rrl, n).register_forward_hook(lambda *a, n=n: called.append(n)) for n in AUX_MODULES]
    try:
        optical, sar = pair(2)
        with torch.no_grad():
            rrl.eval()(optical, sar)
            assert called == []
            rrl.train()(optical, sar)
    finally:
        for h in handles:
            h.remove()
    assert sorted(called) == sorted(AUX_MODULES)


@pytest.mark.parametrize("net", ["rrl", "fil"])
def test_every_parameter_gets_gradient_from_the_training_losses(net, request):
    model = request.getfixturevalue(net).train()
    model.zero_grad()
    optical, sar = pair(4, seed=5)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    heads = model(optical, sar)["heads"]
    loss = sum(F.binary_cross_entropy(heads[n], labels) for n, kind in model.HEADS.items() if kind == "bce")
    if net == "rrl":
        loss = loss + F.mse_loss(heads["recon_optical"], optical) + F.mse_loss(heads["recon_sar"], sar)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    model.zero_grad()
