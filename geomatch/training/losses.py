"""Per-head training losses, by the loss kind a matcher declares in ``HEADS`` (rrlnet-spec §1, §3, §6.7, §6.9).

- ``bce``: binary cross-entropy on a probability, clipped to [1e-7, 1 - 1e-7] as Keras does.
- ``ce2``: categorical cross-entropy on two-class softmax probabilities against one-hot labels (Keras: the
  probabilities are renormalised and clipped the same way).
- ``recon_optical`` / ``recon_sar``: the seed's ``p_mse_loss_01`` against the augmented input patch,
  0.1 * pixel MSE + 1.0 * MSE of VGG19 ``block5_conv4`` (post-ReLU) features. The perceptual term needs VGG19
  weights, which geomatch never downloads: give a local file (torchvision layout, ``features.N.weight``) and it is
  used; without one only the pixel term (still weighted 0.1) is trained and the log says so.

Head losses are batch means, summed with weight 1 each, as the seed's multi-output Keras models are.
All loss arithmetic runs in float32, also under mixed precision.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from geomatch.errors import InputError

log = logging.getLogger(__name__)

KERAS_EPSILON = 1e-7
KINDS = ("bce", "ce2", "recon_optical", "recon_sar")
PIXEL_WEIGHT = 0.1
PERCEPTUAL_WEIGHT = 1.0

# torchvision's VGG19 ``features`` up to block5_conv4 + ReLU (= ``features[:36]``), the Keras ``layers[20]``.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)


def bce(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = prob.float().reshape(-1).clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    t = target.float().reshape(-1)
    return -(t * torch.log(p) + (1.0 - t) * torch.log1p(-p)).mean()


def ce2(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = probs.float()
    p = (p / p.sum(dim=1, keepdim=True)).clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    return -torch.log(p.gather(1, target.long().reshape(-1, 1))).mean()


class VGG19Features(nn.Module):
    """VGG19 convolutions up to block5_conv4 + ReLU, with torchvision's parameter names."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        # The seed repeats the [0, 1] grey patch to 3 channels with no ImageNet preprocessing.
        return self.features(grey.expand(-1, 3, -1, -1))


def load_vgg19(path: str | Path) -> VGG19Features:
    """Frozen VGG19 features from a local state dict (torchvision ``vgg19`` layout; classifier keys ignored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--vgg19-weights {path}: file not found; give a local torchvision-layout VGG19 state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"--vgg19-weights {path}: not a loadable state dict ({exc})") from exc
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    model = VGG19Features()
    wanted = model.state_dict()
    picked = {k: v for k, v in state.items() if k in wanted} if isinstance(state, Mapping) else {}
    missing = [k for k in wanted if k not in picked]
    bad = [k for k in picked if tuple(picked[k].shape) != tuple(wanted[k].shape)]
    if missing or bad:
        raise InputError(
            f"--vgg19-weights {path}: not a VGG19 state dict in torchvision layout "
            f"({len(missing)} missing keys such as {missing[:1]}, {len(bad)} with wrong shapes)"
        )
    model.load_state_dict(picked)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class MatcherLoss(nn.Module):
    """Sum of the per-head losses of one matcher's training outputs."""

    def __init__(self, heads: Mapping[str, str], vgg: VGG19Features | None = None):
        super().__init__()
        unknown = {k: v for k, v in heads.items() if v not in KINDS}
        if unknown:
            raise ValueError(f"unknown loss kinds {unknown}; valid kinds: {', '.join(KINDS)}")
        self.heads = dict(heads)
        self.vgg = vgg
        if vgg is None and any(k.startswith("recon") for k in self.heads.values()):
            log.warning("perceptual term off: no --vgg19-weights given; reconstruction uses 0.1 x pixel MSE only")

    @property
    def perceptual(self) -> bool:
        return self.vgg is not None

    def recon(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        loss = PIXEL_WEIGHT * F.mse_loss(pred, target)
        if self.vgg is not None:
            with torch.no_grad():
                ft = self.vgg(target).float()
            loss = loss + PERCEPTUAL_WEIGHT * F.mse_loss(self.vgg(pred).float(), ft)
        return loss

    def forward(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor, optical: torch.Tensor,
                sar: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        missing = [k for k in self.heads if k not in outputs]
        if missing:
            raise ValueError(f"model did not return heads {missing}; it declares {sorted(self.heads)}")
        parts: dict[str, torch.Tensor] = {}
        for name, kind in self.heads.items():
            out = outputs[name]
            if kind == "bce":
                parts[name] = bce(out, labels)
            elif kind == "ce2":
                parts[name] = ce2(out, labels)
            else:
                parts[name] = self.recon(out, optical if kind == "recon_optical" else sar)
        total = torch.stack(list(parts.values())).sum()
        # Detached tensors, not floats: reading them back every iteration would stall a GPU.
        return total, {k: v.detach() for k, v in parts.items()}
