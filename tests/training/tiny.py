"""A tiny matcher following the contract, for fast loop tests, and a narrow RRL-Net for the learning test."""

from __future__ import annotations

import torch
from torch import nn

from geomatch.models.base import Matcher, MatcherConfig


class TinyMatcher(Matcher):
    name = "tiny"
    optimizer = "adam"
    HEADS = {"main": "bce", "aux": "ce2"}

    def __init__(self, config: MatcherConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Linear(4, 1)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, optical, sar):
        self.check_inputs(optical, sar)
        d = (self.a(optical) - self.b(sar)).abs().mean(dim=(2, 3))
        score = torch.sigmoid(self.fc(d)).squeeze(1)
        out = {"score": score}
        if self.training:
            out["heads"] = {"main": score, "aux": torch.softmax(self.fc2(d), dim=1)}
        return out


def narrow_rrlnet(patch_size: int = 32, width: float = 0.125, bn_momentum: float = 0.3):
    """RRL-Net at 1/8 width. Keras' BatchNorm momentum (0.99, i.e. 0.01 here) needs hundreds of iterations
    before eval-mode statistics mean anything; a test of a dozen iterations raises it instead."""
    from geomatch.models.factory import build_matcher

    torch.manual_seed(0)
    model = build_matcher("rrlnet", width=width, patch_size=patch_size)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = bn_momentum
    return model
