"""RRL-Net (Yu et al., arXiv 2403.11751), as in its Keras repository (rrlnet-spec §3.6).

Two unshared ALFE encoders (CBL + MGLA per stage), a reconstruction decoder per modality on the encoder's
last tap (no skips; its gradients reach the encoder), the FIL modules and aggregation trunk of FIL-Net at
half its widths, and MLPP: eight training outputs (main, stage 4, stage 3, module 5, 4, 3, the two
reconstructions), of which only ``main`` survives pruning. Decoders and auxiliary heads never run in eval
mode, pruned or not.

Upsampling follows TF 1.x ``resize_bilinear`` (what Keras 2.2 ``UpSampling2D(interpolation='bilinear')``
calls): align_corners=False *without* half-pixel centres, so output pixel d samples source coordinate
d * 0.5 and the last row/column repeats the edge. :func:`upsample2x_legacy` computes that mapping
explicitly (even outputs copy a source pixel, odd ones average it with its clamped successor);
``F.interpolate(..., align_corners=False)`` would use half-pixel centres and differ at every pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from geomatch.models.base import MatcherConfig
from geomatch.models.layers import CBL, SameConv2d, keras_init, maxpool2

from .attention import MGLA
from .blocks import require_patch_multiple
from .fil import BCE_HEADS, FILFamily

ENCODER_CHANNELS = (16, 32, 64, 128, 256)
TRUNK_WIDTHS = (32, 64, 128, 256, 512)


def _upsample_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    successor = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim=dim)
    half = x + (successor - x) * 0.5  # TF's lerp: top + (bottom - top) * frac
    return torch.stack([x, half], dim=dim + 1).flatten(dim, dim + 1)


def upsample2x_legacy(x: torch.Tensor) -> torch.Tensor:
    """x2 bilinear upsampling of an NCHW tensor with TF1's legacy mapping (source = destination * 0.5)."""
    # Width first, then height: the order TF interpolates in, so the rounding matches too.
    return _upsample_axis(_upsample_axis(x, 3), 2)


class ALFEEncoder(nn.Module):
    """Stage 1: CBL 3x3 -> MGLA; stages 2-5: CBL 3x3 -> MaxPool -> MGLA. Returns the five MGLA outputs."""

    def __init__(self, cin: int, channels: tuple[int, ...], patch_size: int):
        super().__init__()
        blocks = []
        size = patch_size
        for k, c in enumerate(channels):
            layers: list[nn.Module] = [CBL(cin, c)]
            if k:
                layers.append(maxpool2())
                size //= 2
            layers.append(MGLA(c, size, size))
            blocks.append(nn.Sequential(*layers))
            cin = c
        self.stages = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps


class DecoderStage(nn.Module):
    def __init__(self, cin: int, cout: int, out_size: int):
        super().__init__()
        self.conv = CBL(cin, cout)
        self.attention = MGLA(cout, out_size, out_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(upsample2x_legacy(self.conv(x)))


class ReconstructionDecoder(nn.Module):
    """From F5 back to the patch: four (CBL 3x3 -> bilinear x2 -> MGLA) steps, then Conv 3x3 + sigmoid."""

    def __init__(self, channels: tuple[int, ...], cout: int, patch_size: int):
        super().__init__()
        widths = channels[::-1]  # 256 -> 128 -> 64 -> 32 -> 16
        sizes = [patch_size // 2**k for k in (3, 2, 1, 0)]
        self.stages = nn.Sequential(
            *(DecoderStage(a, b, s) for a, b, s in zip(widths[:-1], widths[1:], sizes, strict=True))
        )
        self.out = SameConv2d(widths[-1], cout, 3)

    def forward(self, f5: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.stages(f5)))


class RRLNet(FILFamily):
    """Relational representation learning matcher (RRL-Net) with MLPP; optical is the first ("VIS") branch."""

    name = "rrlnet"
    paper = "Yu et al., RRL-Net, arXiv 2403.11751 (Information Fusion)"
    optimizer = "nadam"
    HEADS = {**{name: "bce" for name in BCE_HEADS}, "recon_optical": "recon_optical", "recon_sar": "recon_sar"}
    TRAINING_ONLY = FILFamily.TRAINING_ONLY + ("decoder_optical", "decoder_sar")

    def __init__(self, config: MatcherConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        p = require_patch_multiple(self, 16)
        taps = tuple(self.ch(c) for c in ENCODER_CHANNELS)
        c_opt, c_sar = self.config.in_channels
        self.encoder_optical = ALFEEncoder(c_opt, taps, p)
        self.encoder_sar = ALFEEncoder(c_sar, taps, p)
        self.decoder_optical = ReconstructionDecoder(taps, c_opt, p)
        self.decoder_sar = ReconstructionDecoder(taps, c_sar, p)
        self.build_fil_metric(taps, taps, taps, tuple(self.ch(c) for c in TRUNK_WIDTHS))
        keras_init(self)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        self.check_inputs(optical, sar)
        taps_optical = self.encoder_optical(optical)
        taps_sar = self.encoder_sar(sar)
        out = self.metric_outputs(taps_optical, taps_sar)
        if self.wants_heads():
            out["heads"]["recon_optical"] = self.decoder_optical(taps_optical[-1])
            out["heads"]["recon_sar"] = self.decoder_sar(taps_sar[-1])
        return out
