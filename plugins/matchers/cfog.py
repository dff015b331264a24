"""CFOG: channel features of oriented gradients (Ye et al., 2019), correlated densely by FFT.

Classical and parameter-free, like NCC, but on a representation built for optical-SAR pairs: absolute
oriented derivatives (blind to the contrast reversals between the two), smoothed and normalised per pixel
(blind to the local gain), from :func:`geomatch.pipeline.cfog_features.channels`, the same code the coarse
stage uses. The score is (zncc + 1) / 2 of the channel stacks, on NCC's scale.

Two ways in:

- ``features`` + ``correlate``: the fine search's dense path (:mod:`geomatch.pipeline.cascade`). The
  channels of a tile are computed once, and all offsets of a keypoint's search window come from one FFT
  product per channel, for all keypoints at once, instead of one patch pair per offset.
- ``forward(optical, sar)``: the Matcher contract's patch-pair score (evaluation, FPR95), the same score at
  the patch's own position, with the channels' support (``dense_context``) made up by reflecting the
  patch's border.

The channels are computed with PyTorch operations (differentiable, exportable), the dense correlation with
NumPy's FFT.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from geomatch.errors import ConfigError
from geomatch.models.base import Matcher, MatcherConfig
from geomatch.pipeline.cfog import SIGMA
from geomatch.pipeline.cfog_features import channels, channels_torch, crop_correlation, erosion_px


class CFOG(Matcher):
    name = "cfog"
    paper = "Ye et al., Fast and robust matching for multimodal remote sensing image registration, TGRS 2019"
    HEADS = {"main": "bce"}
    needs_weights = False

    def __init__(self, config: MatcherConfig | None = None, sigma: float = SIGMA, **kwargs):
        super().__init__(config, **kwargs)
        if not sigma > 0:
            raise ConfigError(f"cfog: sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        # The channels vanish within erosion_px of an array edge; one more pixel keeps the crops clear of it.
        self.dense_context = erosion_px(self.sigma) + 1

    def features(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(C, H, W) channels of one image (or (..., C, H, W) of a stack), zero outside the valid area."""
        return channels(image, valid, self.sigma)[0]

    def correlate(self, patches: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """(N, C, P, P) against every crop of (N, C, W, W) -> (N, W - P + 1, W - P + 1) scores in [0, 1]."""
        return (crop_correlation(patches, windows) + 1.0) / 2.0

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        if optical.shape != sar.shape or optical.dim() != 4:
            raise ValueError(f"cfog: expected two equal (B, C, P, P) batches, got {tuple(optical.shape)} and "
                             f"{tuple(sar.shape)}")
        c = self.dense_context
        # Several input channels (RGB) are averaged: the representation is of one intensity image.
        o = F.pad(optical.float().mean(1, keepdim=True), (c, c, c, c), mode="reflect")[:, 0]
        s = F.pad(sar.float().mean(1, keepdim=True), (c, c, c, c), mode="reflect")[:, 0]
        ok = torch.ones_like(o, dtype=torch.bool)
        a = channels_torch(o, ok, self.sigma)[0][..., c:-c, c:-c].flatten(1)
        b = channels_torch(s, ok, self.sigma)[0][..., c:-c, c:-c].flatten(1)
        # crop_correlation's zero offset, written out: zero-mean NCC of the channel stacks.
        a = a - a.mean(1, keepdim=True)
        b = b - b.mean(1, keepdim=True)
        r = (a * b).sum(1) / torch.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)
        score = ((r + 1.0) / 2.0).clamp(0, 1)
        out = {"score": score}
        if self.training:
            out["heads"] = {"main": score}
        return out
