"""Small pieces shared by the SCFDM, AFD-Net, MFD-Net and EFR-Net matchers."""

from __future__ import annotations

from torch import nn

from geomatch.errors import ConfigError
from geomatch.models.base import Matcher


def mlp(cin: int, hidden: tuple[int, ...], cout: int) -> nn.Sequential:
    """Keras Dense stack: ReLU after every hidden layer, the output layer left linear (logits)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(cin, h), nn.ReLU(inplace=True)]
        cin = h
    layers.append(nn.Linear(cin, cout))
    return nn.Sequential(*layers)


def require_patch_multiple(model: Matcher, multiple: int) -> int:
    """The flatten widths follow from the patch size, so it must survive every downsampling step."""
    p = model.config.patch_size
    if p <= 0 or p % multiple:
        raise ConfigError(f"{model.name}: patch_size {p} is not a positive multiple of {multiple}; use e.g. 64")
    return p
