"""CFOG: channel features of oriented gradients (Ye et al., 2019), correlated densely by FFT.

Classical and parameter-free, like NCC, but on a representation built for optical-SAR pairs: absolute
oriented derivatives (blind to the contrast reversals between the two), smoothed and normalised per pixel
(blind to the local gain), from :func:`geomatch.pipeline.cfog_features.channels`, the same code the coarse
stage uses. The score is (zncc + 1) / 2 of the channel stacks, on NCC's scale.

Two ways in:

- ``dense(optical, optical_valid, sar, sar_valid)``: the fine search's path (``dense_context`` extra pixels
  around every patch and window, for the channels' support). All offsets of a keypoint's search window come
  from one FFT product per channel, for all keypoints at once, instead of one patch pair per offset.
- ``forward(optical, sar)``: the Matcher contract's patch-pair score (evaluation, FPR95), the same score at
  the patch's own position, with the context made up by reflecting the patch's border.

Computed in NumPy (the coarse stage's code), so there is no ONNX graph: export refuses, and the runtime
choice falls back to a PyTorch runtime, which calls the same code.
"""

from __future__ import annotations

import numpy as np
import torch

from geomatch.errors import ConfigError
from geomatch.models.base import Matcher, MatcherConfig
from geomatch.pipeline.cfog import SIGMA
from geomatch.pipeline.cfog_features import channels, crop_correlation, erosion_px


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

    def dense(self, optical: np.ndarray, optical_valid: np.ndarray, sar: np.ndarray,
              sar_valid: np.ndarray) -> np.ndarray:
        """Scores of every patch-sized crop of each SAR window against its optical patch.

        ``optical`` (N, P + 2c, P + 2c) and ``sar`` (N, W + 2c, W + 2c), c = ``dense_context``, with their
        valid masks -> (N, W - P + 1, W - P + 1) float32; entry [i, y, x] scores the crop whose corner is
        (y, x) in window coordinates without the context.
        """
        c = self.dense_context
        a, _ = channels(optical, optical_valid, self.sigma)
        b, _ = channels(sar, sar_valid, self.sigma)
        a = a[..., c:a.shape[-2] - c, c:a.shape[-1] - c]
        b = b[..., c:b.shape[-2] - c, c:b.shape[-1] - c]
        return (crop_correlation(a, b) + 1.0) / 2.0

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        if torch.onnx.is_in_onnx_export():
            # Tracing would freeze the NumPy result into a constant; refuse so the runtime uses PyTorch.
            raise RuntimeError("cfog is computed in NumPy and has no ONNX form")
        if optical.shape != sar.shape or optical.dim() != 4:
            raise ValueError(f"cfog: expected two equal (B, C, P, P) batches, got {tuple(optical.shape)} and "
                             f"{tuple(sar.shape)}")
        c = self.dense_context
        pad = ((0, 0), (c, c), (c, c))
        # Several input channels (RGB) are averaged: the representation is of one intensity image.
        o = np.pad(optical.detach().float().mean(1).cpu().numpy(), pad, mode="reflect")
        s = np.pad(sar.detach().float().mean(1).cpu().numpy(), pad, mode="reflect")
        ok = np.ones_like(o, bool)
        score = torch.from_numpy(self.dense(o, ok, s, ok)[:, 0, 0].copy()).to(optical.device)
        out = {"score": score}
        if self.training:
            out["heads"] = {"main": score}
        return out
