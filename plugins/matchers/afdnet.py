"""AFD-Net (Quan et al., ICCV 2019) as re-implemented in the RRL-Net repository (rrlnet-spec §3.2).

This is the repository's version, not the original TF code: two unshared branches with BN and a
whole-sample instance norm, five feature-difference taps aggregated by a strided CBR trunk, and an
auxiliary two-class head on the deepest difference that stays in the model at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geomatch.models.base import Matcher, MatcherConfig
from geomatch.models.layers import CBR, keras_init

from .blocks import mlp, require_patch_multiple


class SampleInstanceNorm(nn.Module):
    """keras-contrib InstanceNormalization(axis=None): one mean/std per sample over C, H and W jointly.

    It has a scalar gamma and beta and adds eps to the population std, (x - mean) / (std + eps), which
    is neither ``nn.InstanceNorm2d`` (per channel) nor ``nn.GroupNorm(1)`` (eps inside the sqrt).
    """

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        centred = x - mean
        # Population std written out: torch.std warns on an empty batch, and this form has no such edge.
        std = centred.square().mean(dim=dims, keepdim=True).sqrt()
        return centred / (std + self.eps) * self.weight + self.bias


class _Branch(nn.Module):
    """One modality's feature extractor; returns the five taps f1..f5."""

    def __init__(self, cin: int, ch):
        super().__init__()
        c32, c64, c128, c256 = ch(32), ch(64), ch(128), ch(256)
        self.f1 = CBR(cin, c32)
        self.f2 = nn.Sequential(CBR(c32, c32, stride=2), SampleInstanceNorm(), nn.ReLU(inplace=True))
        self.f3 = nn.Sequential(CBR(c32, c64), CBR(c64, c64, stride=2), SampleInstanceNorm(), nn.ReLU(inplace=True))
        self.f4 = nn.Sequential(CBR(c64, c128), CBR(c128, c128, stride=2))
        self.f5 = nn.Sequential(CBR(c128, c256), CBR(c256, c256, stride=2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for stage in (self.f1, self.f2, self.f3, self.f4, self.f5):
            x = stage(x)
            taps.append(x)
        return taps


class AFDNet(Matcher):
    """Aggregated feature-difference matcher with two pseudo-siamese branches.

    Heads: ``main`` (two-class softmax from the aggregation trunk; class 1 is the score) and ``aux``
    (two-class softmax from the deepest difference |f5(optical) - f5(SAR)|). Both are kept at inference
    as in the original, so ``prune()`` changes nothing; eval-mode forward skips ``aux``.
    """

    name = "afdnet"
    paper = "Quan et al., AFD-Net, ICCV 2019 (RRL-Net repository version)"
    optimizer = "nadam"
    HEADS = {"main": "ce2", "aux": "ce2"}

    def __init__(self, config: MatcherConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        p = require_patch_multiple(self, 64)  # four stride-2 steps, then AvgPool 4
        ch = self.ch
        c_opt, c_sar = self.config.in_channels
        self.branch_optical = _Branch(c_opt, ch)
        self.branch_sar = _Branch(c_sar, ch)
        # Stage k takes concat(previous stage, d_k); stage 1 takes d1 alone.
        widths = [ch(32), ch(64), ch(128), ch(256)]
        stages, cin = [], widths[0]
        for c in widths:
            stages.append(nn.Sequential(CBR(cin, c), CBR(c, c, stride=2)))
            cin = 2 * c
        self.stages = nn.ModuleList(stages)
        c512 = ch(512)
        self.stage5 = nn.Sequential(CBR(cin, c512), nn.AvgPool2d(4))
        side = p // 64
        self.main_head = mlp(c512 * side * side, (ch(512), ch(256)), 2)
        self.aux_conv = nn.Sequential(CBR(widths[3], c512), nn.AvgPool2d(4))
        self.aux_head = mlp(c512 * side * side, (ch(512), ch(256)), 2)
        keras_init(self)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        self.check_inputs(optical, sar)
        diffs = [torch.abs(a - b) for a, b in zip(self.branch_optical(optical), self.branch_sar(sar), strict=True)]
        x = self.stages[0](diffs[0])
        for stage, d in zip(self.stages[1:], diffs[1:4], strict=True):
            x = stage(torch.cat([x, d], dim=1))
        x = self.stage5(torch.cat([x, diffs[4]], dim=1))
        probs = F.softmax(self.main_head(torch.flatten(x, 1)), dim=1)
        out = {"score": probs[:, 1]}
        if self.training:
            aux = F.softmax(self.aux_head(torch.flatten(self.aux_conv(diffs[4]), 1)), dim=1)
            out["heads"] = {"main": probs, "aux": aux}
        return out
