"""FIL-Net (Yu et al., TIP 2023), as in the RRL-Net repository (rrlnet-spec §3.5).

Two unshared residual extractors, a FIL module on each of their five stages, the aggregation trunk
over the private features, and six BCE outputs: the stage-5 main head (the score), stage heads on
trunk stages 4 and 3 and module heads on the common features of stages 5, 4 and 3. The original keeps
all heads at test time, but only the main one gives the score, so ``prune()`` drops the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from geomatch.models.base import MatcherConfig
from geomatch.models.layers import CBL, ConvBNAct, keras_init, maxpool2

from .blocks import require_patch_multiple
from .fil import FILFamily

EXTRACTOR_CHANNELS = (32, 32, 64, 128, 256)  # taps F1..F5
TRUNK_WIDTHS = (64, 128, 256, 512, 1024)


class ResidualStage(nn.Module):
    """Halves the resolution. Main path: CBL 3x3, MaxPool, CBL 3x3, Conv 3x3 + BN; shortcut: CBL 1x1, MaxPool.

    The sum goes through LeakyReLU(0.1).
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.main = nn.Sequential(CBL(cin, cout), maxpool2(), CBL(cout, cout), ConvBNAct(cout, cout, act=None))
        self.shortcut = nn.Sequential(CBL(cin, cout, 1), maxpool2())
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.main(x) + self.shortcut(x))


class FILExtractor(nn.Module):
    """One modality's feature extractor; returns the five stage taps F1..F5 (64, 32, 16, 8, 4 px)."""

    def __init__(self, cin: int, channels: tuple[int, ...]):
        super().__init__()
        c1 = channels[0]
        self.stem = nn.Sequential(CBL(cin, c1), CBL(c1, c1))
        self.stages = nn.ModuleList(ResidualStage(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = [self.stem(x)]
        for stage in self.stages:
            taps.append(stage(taps[-1]))
        return taps


class FILNet(FILFamily):
    """Feature-interaction learning matcher; optical is the first ("VIS") branch, SAR the second."""

    name = "filnet"
    paper = "Yu et al., FIL-Net, IEEE TIP 2023"
    optimizer = "nadam"

    def __init__(self, config: MatcherConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        require_patch_multiple(self, 16)
        taps = tuple(self.ch(c) for c in EXTRACTOR_CHANNELS)
        c_opt, c_sar = self.config.in_channels
        self.extractor_optical = FILExtractor(c_opt, taps)
        self.extractor_sar = FILExtractor(c_sar, taps)
        self.build_fil_metric(taps, taps, taps, tuple(self.ch(c) for c in TRUNK_WIDTHS))
        keras_init(self)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        self.check_inputs(optical, sar)
        return self.metric_outputs(self.extractor_optical(optical), self.extractor_sar(sar))
