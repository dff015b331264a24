"""SCFDM (Quan et al., ACCV 2018), as in the RRL-Net repository (rrlnet-spec §3.1).

The two patches are placed side by side (optical left, SAR right) and one trunk sees the joint image,
so the 3x3 convolutions near the seam mix the two modalities; the spec insists on keeping that instead of
a siamese split (§6.12). The trunk output is cut back into its two halves for the two heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geomatch.errors import ConfigError
from geomatch.models.base import Matcher, MatcherConfig
from geomatch.models.layers import CBR, keras_init, maxpool2

from .blocks import mlp, require_patch_multiple


class SCFDM(Matcher):
    """Shared-trunk feature-difference matcher on a 64x128 side-by-side pair.

    Heads: ``main`` is a two-class softmax on |x1 - x2| (class 1 = match, the score); ``similarity``
    is (cos(maxpool x1, maxpool x2) + 1) / 2, trained with BCE and parameter-free.
    """

    name = "scfdm"
    paper = "Quan et al., SCFDM, ACCV 2018"
    optimizer = "nadam"
    HEADS = {"main": "ce2", "similarity": "bce"}

    def __init__(self, config: MatcherConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        p = require_patch_multiple(self, 16)
        ch = self.ch
        cin, cin_sar = self.config.in_channels
        if cin != cin_sar:
            raise ConfigError(f"scfdm: in_channels {cin} and {cin_sar} differ; one shared trunk needs equal counts")
        c64, c128, c256 = ch(64), ch(128), ch(256)
        self.trunk = nn.Sequential(
            CBR(cin, c64), maxpool2(),
            CBR(c64, c128), maxpool2(),
            CBR(c128, c256),
            CBR(c256, c256), maxpool2(),
            CBR(c256, c256),
            CBR(c256, c256), maxpool2(),
        )  # fmt: skip
        side = p // 16
        self.classifier = mlp(c256 * side * side, (ch(1024), ch(128)), 2)
        keras_init(self)

    def features(self, optical: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk output of the joint image, split into its optical and SAR halves."""
        joint = torch.cat([optical, sar], dim=3)  # along the width axis
        f = self.trunk(joint)
        half = f.shape[3] // 2
        return f[..., :half], f[..., half:]

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        self.check_inputs(optical, sar)
        x1, x2 = self.features(optical, sar)
        probs = F.softmax(self.classifier(torch.flatten(torch.abs(x1 - x2), 1)), dim=1)
        out = {"score": probs[:, 1]}
        if self.training:
            # The published MaxPool 4x4 is a global max on the 4x4 halves of a 64-pixel patch.
            v1 = F.normalize(torch.amax(x1, dim=(2, 3)), dim=1)
            v2 = F.normalize(torch.amax(x2, dim=(2, 3)), dim=1)
            similarity = ((v1 * v2).sum(dim=1) + 1) / 2
            out["heads"] = {"main": probs, "similarity": similarity}
        return out
