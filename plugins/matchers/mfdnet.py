"""MFD-Net, eight-branch variant (Yu et al., TGRS 2022), as in the RRL-Net repository (rrlnet-spec §3.3).

Eight unshared extractors form four (optical, SAR) pairs; each pair feeds a multi-level feature-difference
branch, and the four branch outputs are fused for the main score. The first two difference taps are the
raw conv outputs before BN and ReLU (§6.11), so the extractor keeps its first two convs apart from their BN.
"""

from __future__ import annotations

import torch
from torch import nn

from geomatch.models.base import Matcher, MatcherConfig
from geomatch.models.layers import CBR, SameConv2d, bn2d, keras_init, maxpool2

from .blocks import mlp, require_patch_multiple

N_PAIRS = 4
DENSE = (2048, 1024, 512, 512, 128, 128, 64)


class _Extractor(nn.Module):
    """Returns the six taps (c1, c2, p1, p2, p3, p4); c1 and c2 are pre-BN conv outputs."""

    def __init__(self, cin: int, ch):
        super().__init__()
        c32, c64 = ch(32), ch(64)
        self.conv1 = SameConv2d(cin, c32)
        self.bn1 = bn2d(c32)
        self.conv2 = SameConv2d(c32, c64)
        self.bn2 = bn2d(c64)
        self.stages = nn.ModuleList(
            nn.Sequential(CBR(ch(a), ch(b)), maxpool2()) for a, b in ((64, 128), (128, 256), (256, 512))
        )
        self.pool = maxpool2()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.conv1(x)
        c2 = self.conv2(torch.relu(self.bn1(c1)))
        x = self.pool(torch.relu(self.bn2(c2)))
        taps = [c1, c2, x]
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps


class _DifferenceBranch(nn.Module):
    """D0..D5 over the absolute tap differences of one extractor pair; returns the 3x3-conv fusion tap."""

    def __init__(self, ch):
        super().__init__()
        tap_widths = [ch(c) for c in (32, 64, 64, 128, 256, 512)]
        steps, cin = [], 0
        for i, c in enumerate(tap_widths):
            cin += c  # concat(|tap_i diff|, previous step)
            if i == 0:
                steps.append(CBR(cin, cin, kernel_size=1))
            elif i < 5:
                steps.append(nn.Sequential(CBR(cin, cin, kernel_size=1), maxpool2()))
            else:
                steps.append(CBR(cin, cin, kernel_size=3))
        self.steps = nn.ModuleList(steps)
        self.out_channels = cin

    def forward(self, taps_a: list[torch.Tensor], taps_b: list[torch.Tensor]) -> torch.Tensor:
        x = None
        for step, a, b in zip(self.steps, taps_a, taps_b, strict=True):
            d = torch.abs(a - b)
            x = step(d if x is None else torch.cat([d, x], dim=1))
        return x


class _DenseHead(nn.Module):
    """MaxPool -> flatten -> the seven-layer Dense ReLU stack -> sigmoid."""

    def __init__(self, n: int, ch):
        super().__init__()
        self.pool = maxpool2()
        self.mlp = mlp(n, tuple(ch(h) for h in DENSE), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(torch.flatten(self.pool(x), 1))).squeeze(1)


class MFDNet(Matcher):
    """Multi-level feature-difference matcher, eight extractors in four difference branches.

    Heads: ``main`` (fusion of the four branches) and ``branch1``..``branch4`` (one sigmoid head per
    difference branch), all BCE. The branch heads are training-only; ``prune()`` drops them.
    """

    name = "mfdnet"
    paper = "Yu et al., MFD-Net (eight branches), TGRS 2022"
    optimizer = "adam"
    HEADS = {"main": "bce", **{f"branch{i + 1}": "bce" for i in range(N_PAIRS)}}
    TRAINING_ONLY = ("branch_heads",)

    def __init__(self, config: MatcherConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        p = require_patch_multiple(self, 32)  # four pools in the branches, one more before the heads
        ch = self.ch
        c_opt, c_sar = self.config.in_channels
        # Extractors in the original's input order: optical, SAR, optical, SAR, ...
        self.extractors = nn.ModuleList(_Extractor(c, ch) for _ in range(N_PAIRS) for c in (c_opt, c_sar))
        self.branches = nn.ModuleList(_DifferenceBranch(ch) for _ in range(N_PAIRS))
        c_branch = self.branches[0].out_channels
        side = p // 32
        self.branch_heads = nn.ModuleList(_DenseHead(c_branch * side * side, ch) for _ in range(N_PAIRS))
        self.fusion = CBR(N_PAIRS * c_branch, ch(1024))
        self.head = _DenseHead(ch(1024) * side * side, ch)
        keras_init(self)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        self.check_inputs(optical, sar)
        fused = []
        for i, branch in enumerate(self.branches):
            fused.append(branch(self.extractors[2 * i](optical), self.extractors[2 * i + 1](sar)))
        score = self.head(self.fusion(torch.cat(fused, dim=1)))
        out = {"score": score}
        if self.training:
            heads = {"main": score}
            for i, (head, x) in enumerate(zip(self.branch_heads, fused, strict=True)):
                heads[f"branch{i + 1}"] = head(x)
            out["heads"] = heads
        return out
