"""Multiply-adds per patch pair of a matcher's inference form.

Counted with forward hooks on ``Conv1d``, ``Conv2d`` and ``Linear``: output elements x (input channels /
groups) x kernel area, or x input features; biases, normalisation, activations, pooling and other
element-wise work are not counted. This is the convention of the figures in rrlnet-spec §8: it gives RRL-Net
626.5 M / 156.9 M / 39.4 M at widths 1.0 / 0.5 / 0.25 (spec: 627 / 157 / 39) and FIL-Net 1,982.7 M (1,983).
``torch.utils.flop_counter.FlopCounterMode`` / 2 was measured too: it also counts the ``einsum`` pools inside
RRL-Net's MGLA attention (0.76 M at width 1.0) and gives 39.6 M at width 0.25, off the published 39 M, so the
hook count is the one used. Functional ``F.linear`` / ``matmul`` calls outside these module types are not seen.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from geomatch.models.base import Matcher

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    per_output = (
        module.in_features
        if isinstance(module, nn.Linear)
        else (module.in_channels // module.groups * math.prod(module.kernel_size))
    )
    return output.numel() * per_output


def multiply_adds(model: nn.Module, patch_size: int | None = None) -> int:
    """Multiply-adds of one (optical, SAR) pair through the pruned eval-mode forward of ``model``.

    ``patch_size`` defaults to the model's configured patch size. The model itself is left untouched.
    """
    if isinstance(model, Matcher):
        probe = model.prune()
        p = patch_size or model.config.patch_size
        c_opt, c_sar = model.config.in_channels
    else:
        probe = copy.deepcopy(model).eval()
        p = patch_size or 64
        c_opt = c_sar = 1
    first = next(probe.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in probe.modules() if isinstance(m, _COUNTED)]
    try:
        with torch.no_grad():
            probe(torch.zeros(1, c_opt, p, p, device=device), torch.zeros(1, c_sar, p, p, device=device))
    finally:
        for h in handles:
            h.remove()
    return total
