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
from geomatch.pipeline.cfog_features import N_ORIENT, SIGMA, channels, crop_correlation, erosion_px


class CFOG(Matcher):
    name = "cfog"
    paper = "Ye et al., Fast and robust matching for multimodal remote sensing image registration, TGRS 2019"
    HEADS = {"main": "bce"}
    needs_weights = False
    # (zncc + 1) / 2 over 8 smoothed channels sits lower than NCC's for the same match (median 0.58 on the
    # volkov-s1s2 validation pairs): the floor keeping the most points under 1 px there (benchmarks/cascade.md).
    min_score = 0.56
    # No ambiguity test: its flat (zncc + 1) / 2 peaks put the runner-up ratio of good matches near 1 (median
    # 0.97-0.99), and on the six volkov-s1s2 validation pairs every ceiling below 1 lost points under 1 px
    # (benchmarks/cascade.md, ambiguity ceilings); the local and model levels still judge its points.
    max_ratio = 1.0

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


def channels_torch(img: torch.Tensor, valid: torch.Tensor, sigma: float = SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`channels` in PyTorch: the same values (a test holds them equal), differentiable in ``img`` and
    traceable, for a patch-pair score that must train, export and check like any matcher's.

    Why both: on this project's CPU the SciPy filters run 5-7x faster than PyTorch's on whole tiles, and the
    search only needs values; the Matcher contract needs gradients and an ONNX graph. Filters follow SciPy's
    ``gaussian_filter`` (truncate 4, mode "reflect") and NumPy's ``gradient`` and ``median``.
    """
    lead = img.shape[:-2]
    h, w = img.shape[-2:]
    x = img.reshape(-1, h, w).float()
    ok = valid.reshape(-1, h, w).bool()
    n = x.shape[0]
    okf = ok.float()
    cnt = okf.sum((1, 2))
    fill = torch.where(cnt > 0, (x * okf).sum((1, 2)) / cnt.clamp(min=1), torch.zeros_like(cnt))
    x = _smooth(torch.where(ok, x, fill[:, None, None]), 0.7)
    gy, gx = _gradient(x, 1), _gradient(x, 2)
    th = torch.pi * torch.arange(N_ORIENT, dtype=torch.float64) / N_ORIENT
    cos, sin = torch.cos(th).float()[None, :, None, None], torch.sin(th).float()[None, :, None, None]
    ch = torch.abs(cos * gx[:, None] + sin * gy[:, None])
    ch = _smooth(ch.reshape(n * N_ORIENT, h, w), sigma).reshape(n, N_ORIENT, h, w)
    # Across orientation, [1, 2, 1] with wrap-around: neighbouring bins share a little.
    ch = 0.5 * ch + 0.25 * (torch.roll(ch, 1, 1) + torch.roll(ch, -1, 1))
    norm = torch.sqrt((ch * ch).sum(1) + 1e-30)  # + tiny: a finite gradient where all channels vanish
    e = erosion_px(sigma)
    outside = F.pad((~ok).float()[:, None], (e, e, e, e), value=1.0)
    outside = F.max_pool2d(F.max_pool2d(outside, (1, 2 * e + 1), stride=1), (2 * e + 1, 1), stride=1)
    inner = outside[:, 0] == 0
    n_in = inner.sum((1, 2))
    floor = torch.where(n_in > 0, 0.1 * _masked_median(norm, inner, n_in), torch.full_like(norm[:, 0, 0], 1e-6))
    ch = ch / (norm[:, None] + floor[:, None, None, None] + 1e-12) * inner[:, None]
    mean = ch.sum((2, 3)) / n_in.clamp(min=1)[:, None]
    ch = ch - mean[:, :, None, None] * inner[:, None]
    return ch.reshape(*lead, N_ORIENT, h, w), inner.reshape(*lead, h, w)


def _masked_median(x: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """NumPy's median of each image's masked values (mean of the two middle ones), by one sort: traceable."""
    srt = torch.where(mask, x, torch.full_like(x, float("inf"))).flatten(1).sort(1).values
    lo = srt.gather(1, ((count - 1) // 2).clamp(min=0)[:, None])
    hi = srt.gather(1, (count // 2).clamp(max=srt.shape[1] - 1)[:, None])
    return torch.where(count > 0, 0.5 * (lo + hi)[:, 0], torch.zeros_like(lo[:, 0]))


def _gradient(x: torch.Tensor, dim: int) -> torch.Tensor:
    """NumPy's ``gradient`` along ``dim``: central differences inside, one-sided at the two ends."""
    n = x.shape[dim]
    inner = (x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2
    first = x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1)
    last = x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1)
    return torch.cat([first, inner, last], dim)


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """SciPy's ``gaussian_filter`` over the last two axes of (B, h, w): truncate 4, edges reflected (d c b a | a b)."""
    r = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).tolist()
    y = x
    for dim in (-1, -2):
        # Shifted slices, weighted: a 1-D kernel this short runs faster so than as a convolution on CPU.
        size = y.shape[dim]
        padded = torch.cat([y.narrow(dim, 0, r).flip(dim), y, y.narrow(dim, size - r, r).flip(dim)], dim)
        y = sum(wt * padded.narrow(dim, j, size) for j, wt in enumerate(k))
    return y
