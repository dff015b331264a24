"""EFR-Net (TGRS 2023), as in the RRL-Net repository (rrlnet-spec §3.4).

Four unshared extractors with a three-axis ECA attention after every stage: the first pair feeds a
difference relation |E1 - E2|, the second a product relation E3 * E4, and their fusion gives the score.
"""

from __future__ import annotations

import torch
from torch import nn

from geomatch.models.base import Matcher, MatcherConfig
from geomatch.models.layers import CBL, Head, eca_kernel, keras_init, maxpool2

from .blocks import require_patch_multiple


class AxisECA(nn.Module):
    """The repository's ``imp_eca``: one ECA gate per axis (H, W and C) of an (N, C, H, W) map.

    Each gate averages x over the other two axes, runs a one-filter Conv1D (kernel from the k(n) rule,
    zero 'same' padding, with bias) along the remaining axis and applies a sigmoid; x is multiplied by
    all three gates. The sizes are fixed at build time because the kernels depend on them.
    """

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.conv_h = self._conv(height)
        self.conv_w = self._conv(width)
        self.conv_c = self._conv(channels)

    @staticmethod
    def _conv(n: int) -> nn.Conv1d:
        k = eca_kernel(n)
        return nn.Conv1d(1, 1, k, padding=k // 2)

    @staticmethod
    def _gate(conv: nn.Conv1d, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(conv(v.unsqueeze(1))).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h = self._gate(self.conv_h, x.mean(dim=(1, 3)))[:, None, :, None]
        a_w = self._gate(self.conv_w, x.mean(dim=(1, 2)))[:, None, None, :]
        a_c = self._gate(self.conv_c, x.mean(dim=(2, 3)))[:, :, None, None]
        return x * a_h * a_w * a_c


class _Extractor(nn.Sequential):
    """Four stages of CBL, CBL, MaxPool, AxisECA with 32, 64, 128 and 256 channels (scaled)."""

    def __init__(self, cin: int, ch, patch_size: int):
        layers: list[nn.Module] = []
        side = patch_size
        for c in (ch(32), ch(64), ch(128), ch(256)):
            side //= 2
            layers += [CBL(cin, c), CBL(c, c), maxpool2(), AxisECA(c, side, side)]
            cin = c
        super().__init__(*layers)


class EFRNet(Matcher):
    """Difference-and-product relation matcher with ECA-attended extractors.

    Heads: ``main`` (on the fused relations), ``difference`` (on S = CBL(|E1 - E2|)) and ``product``
    (on M = CBL(E3 * E4)), all BCE. The two relation heads are training-only; ``prune()`` drops them.
    """

    name = "efrnet"
    paper = "EFR-Net, IEEE TGRS 2023"
    optimizer = "adam"
    HEADS = {"main": "bce", "difference": "bce", "product": "bce"}
    TRAINING_ONLY = ("difference_head", "product_head")

    def __init__(self, config: MatcherConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        p = require_patch_multiple(self, 16)
        ch = self.ch
        c_opt, c_sar = self.config.in_channels
        # Inputs in the original's order (optical, SAR, optical, SAR): pair 1 differs, pair 2 multiplies.
        self.extractors = nn.ModuleList(_Extractor(c, ch, p) for c in (c_opt, c_sar, c_opt, c_sar))
        c256, c512 = ch(256), ch(512)
        self.difference = CBL(c256, c256)
        self.product = CBL(c256, c256)
        self.fusion = CBL(2 * c256, c512)
        hidden = (ch(512), ch(256))
        self.head = Head(c512, hidden)
        self.difference_head = Head(c256, hidden)
        self.product_head = Head(c256, hidden)
        keras_init(self)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        self.check_inputs(optical, sar)
        e1, e2, e3, e4 = (ext(x) for ext, x in zip(self.extractors, (optical, sar, optical, sar), strict=True))
        s = self.difference(torch.abs(e1 - e2))
        m = self.product(e3 * e4)
        score = self.head(self.fusion(torch.cat([s, m], dim=1)))
        out = {"score": score}
        if self.training:
            out["heads"] = {"main": score, "difference": self.difference_head(s), "product": self.product_head(m)}
        return out
