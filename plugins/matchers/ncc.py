"""Zero-mean normalised cross-correlation: the classical, parameter-free baseline matcher.

The score is (ncc + 1) / 2, so unrelated patches sit near 0.5 and identical ones at 1. Options (not
learned): ``window`` scores only the central window x window part of the patch; ``sigma`` weights pixels
by a Gaussian of that width around the centre, so the surroundings count less than the point itself;
``absolute`` scores |ncc| instead (optical and SAR brightness are often inverted: bright roofs, dark
water in one and not the other), so the score is |ncc| and unrelated patches sit near 0.
"""

from __future__ import annotations

import torch

from geomatch.errors import ConfigError
from geomatch.models.base import Matcher, MatcherConfig


class NCC(Matcher):
    name = "ncc"
    paper = "zero-mean normalised cross-correlation (classical baseline)"
    HEADS = {"main": "bce"}
    # The floor keeping the most points under 1 px on the volkov-s1s2 validation pairs (benchmarks/cascade.md).
    min_score = 0.53
    # The ambiguity ceiling keeping the most points under 1 px on the six volkov-s1s2 validation pairs
    # (benchmarks/cascade.md, ambiguity ceilings).
    max_ratio = 0.96

    def __init__(self, config: MatcherConfig | None = None, window: int | None = None, sigma: float | None = None,
                 eps: float = 1e-6, absolute: bool = False, **kwargs):
        super().__init__(config, **kwargs)
        if window is not None and window < 2:
            raise ConfigError(f"ncc: window must be >= 2 pixels, got {window}")
        if sigma is not None and sigma <= 0:
            raise ConfigError(f"ncc: sigma must be > 0, got {sigma}")
        self.window = None if window is None else int(window)
        self.sigma = None if sigma is None else float(sigma)
        self.eps = float(eps)
        self.absolute = bool(absolute)

    def _weights(self, p: int, device, dtype) -> torch.Tensor | None:
        if self.sigma is None:
            return None
        k = torch.arange(p, device=device, dtype=dtype) - (p // 2)
        g = torch.exp(-0.5 * (k / self.sigma) ** 2)
        w = g[:, None] * g[None, :]
        return w / w.sum()

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        p = x.shape[-1]
        if self.window is None or self.window >= p:
            return x
        # Same centre convention as the patch sampler: the centre pixel is p // 2.
        a = p // 2 - self.window // 2
        return x[..., a:a + self.window, a:a + self.window]

    def ncc(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        if optical.shape != sar.shape or optical.dim() != 4:
            raise ValueError(f"ncc: expected two equal (B, C, P, P) batches, got {tuple(optical.shape)} and "
                             f"{tuple(sar.shape)}")
        a = self._crop(optical).to(torch.float32)
        b = self._crop(sar).to(torch.float32)
        w = self._weights(a.shape[-1], a.device, a.dtype)
        a, b = a.flatten(1), b.flatten(1)
        if w is None:
            a = a - a.mean(1, keepdim=True)
            b = b - b.mean(1, keepdim=True)
        else:
            # Weighted moments: centre on the weighted mean, then fold sqrt(w) into both sides.
            w = w.flatten().repeat(optical.shape[1]) / optical.shape[1]
            a = (a - (a @ w)[:, None]) * w.sqrt()
            b = (b - (b @ w)[:, None]) * w.sqrt()
        # Dot products by batched matmul: one pass each, no B x P x P temporaries.
        dot = lambda x, y: torch.bmm(x[:, None, :], y[:, :, None]).flatten()
        n = a.shape[1] if w is None else 1.0
        return dot(a, b) / torch.sqrt(dot(a, a) * dot(b, b) + (n * self.eps) ** 2)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        r = self.ncc(optical, sar)
        score = r.abs().clamp(0, 1) if self.absolute else ((r + 1) / 2).clamp(0, 1)
        out = {"score": score}
        if self.training:
            out["heads"] = {"main": score}
        return out
