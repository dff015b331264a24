"""Building blocks that reproduce Keras 2.2 behaviour in PyTorch (see rrlnet-spec §6).

- BatchNorm: Keras momentum 0.99 is PyTorch momentum 0.01; epsilon 1e-3.
- 'same' padding: stride-1 3x3 is padding 1; strided convs pad (0, 1, 0, 1) like TensorFlow.
- Initialisation: truncated He-normal for convs, Glorot-uniform for Dense and Conv1D, zero biases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding, exact for strided convolutions too."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, bias: bool = True):
        super().__init__(cin, cout, kernel_size, stride=stride, padding=0, bias=bias)
        k = kernel_size
        if stride == 1:
            self._pad = (k // 2, (k - 1) // 2, k // 2, (k - 1) // 2)  # (left, right, top, bottom)
        else:
            # For even inputs TF pads total = max(k - stride, 0), the extra pixel on the bottom/right.
            total = max(k - stride, 0)
            self._pad = (total // 2, total - total // 2, total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self._pad):
            x = F.pad(x, self._pad)
        return super().forward(x)


class ConvBNAct(nn.Sequential):
    """Conv -> BatchNorm -> activation ('relu' = CBR, 'lrelu' = CBL with slope 0.1, None = no act)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, act: str | None = "lrelu"):
        layers: list[nn.Module] = [SameConv2d(cin, cout, kernel_size, stride), bn2d(cout)]
        if act == "relu":
            layers.append(nn.ReLU(inplace=True))
        elif act == "lrelu":
            layers.append(nn.LeakyReLU(0.1, inplace=True))
        elif act is not None:
            raise ValueError(f"unknown activation {act!r}")
        super().__init__(*layers)


def CBL(cin: int, cout: int, kernel_size: int = 3, stride: int = 1) -> ConvBNAct:
    return ConvBNAct(cin, cout, kernel_size, stride, act="lrelu")


def CBR(cin: int, cout: int, kernel_size: int = 3, stride: int = 1) -> ConvBNAct:
    return ConvBNAct(cin, cout, kernel_size, stride, act="relu")


def maxpool2() -> nn.MaxPool2d:
    # 'same' and 'valid' 2x2/2 pooling agree on the even sizes these networks use.
    return nn.MaxPool2d(2, 2)


class Head(nn.Module):
    """Head(n): global average pool (for spatial input) -> Dense 512 ReLU -> 256 ReLU -> 1 sigmoid."""

    def __init__(self, n: int, hidden: tuple[int, ...] = (512, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = n
        for h in hidden:
            layers += [nn.Linear(cin, h), nn.ReLU(inplace=True)]
            cin = h
        layers.append(nn.Linear(cin, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        return torch.sigmoid(self.mlp(x)).squeeze(1)


def eca_kernel(n: int) -> int:
    """Kernel size rule of the ECA-style attentions: int(|(log2 n + 1) / 2|), made odd."""
    k = int(abs((math.log2(n) + 1) / 2))
    return k if k % 2 else k + 1


def _truncated_he_normal_(w: torch.Tensor) -> None:
    fan_in = w[0].numel()
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    if w.is_meta:  # shape-only construction (before loading a checkpoint): there is nothing to draw
        return
    # Redrawing the few values beyond 2 sigma gives the same truncated normal as nn.init.trunc_normal_,
    # which is slow enough (seconds per large kernel) to dominate building FIL-Net.
    with torch.no_grad():
        w.normal_(0.0, std)
        bad = w.abs() > 2 * std
        while bad.any():
            w[bad] = torch.randn(int(bad.sum()), dtype=w.dtype, device=w.device) * std
            bad = w.abs() > 2 * std


def keras_init(module: nn.Module) -> nn.Module:
    """Apply Keras 2.2.5 default initialisers to every layer of ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            _truncated_he_normal_(m.weight)
        elif isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.xavier_uniform_(m.weight)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module
