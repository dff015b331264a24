"""The matcher contract every patch-matching network follows.

A matcher is an ``nn.Module`` that scores (optical, SAR) patch pairs:

- ``forward(optical, sar)`` takes two float batches shaped (B, C, P, P) in [0, 1] (uint8 / 255, the
  seed's scaling) and returns a dict. ``out["score"]`` is the match probability, shape (B,).
- In training mode the dict also has ``out["heads"]``: every output the original trains on, keyed by
  name, including ``"main"``. ``HEADS`` maps each name to its loss kind:
  ``"bce"`` (B,) probability, ``"ce2"`` (B, 2) softmax probabilities, ``"recon_optical"`` /
  ``"recon_sar"`` (B, 1, P, P) reconstructions of the (augmented) inputs.
- ``prune()`` returns the inference form: training-only heads removed (MLPP post-pruning for
  RRL-Net), in eval mode, with the same ``score`` for the same weights.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class MatcherConfig:
    patch_size: int = 64
    in_channels: tuple[int, int] = (1, 1)  # (optical, sar)
    normalisation: str = "unit"  # uint8 / 255 -> [0, 1], no mean/std
    width: float = 1.0  # channel multiplier; 1.0 is the published architecture

    def as_dict(self) -> dict:
        d = asdict(self)
        d["in_channels"] = list(self.in_channels)
        return d


class Matcher(nn.Module):
    name: ClassVar[str] = ""  # registry name
    paper: ClassVar[str] = ""
    optimizer: ClassVar[str] = "nadam"  # nadam | adam, as the original trained it
    HEADS: ClassVar[dict[str, str]] = {"main": "bce"}
    # The tie-point filter's score floor on this matcher's own scale (``filter.min_score = "auto"``): a score
    # below it is taken for a weak peak. Subclasses whose scores live on another scale set their own, chosen
    # on validation scenes (benchmarks/cascade.md, floors).
    min_score: ClassVar[float] = 0.6
    # The ambiguity test's ceiling (``filter.max_ratio = "auto"``): a runner-up peak scoring more than this share
    # of the best is taken for an ambiguous match. A matcher with flat peaks (CFOG) sets its own, chosen on
    # validation scenes (benchmarks/cascade.md, ratios).
    max_ratio: ClassVar[float] = 0.95
    # Submodule attribute names that only training uses; prune() deletes them.
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MatcherConfig | None = None, **kwargs):
        super().__init__()
        # Keyword options override the config; an unknown one is a TypeError instead of being dropped silently.
        self.config = dataclasses.replace(config, **kwargs) if config is not None else MatcherConfig(**kwargs)
        self.pruned = False

    @property
    def width(self) -> float:
        return self.config.width

    def ch(self, channels: int) -> int:
        """Scale a published channel count by the width multiplier."""
        return max(1, int(round(channels * self.config.width)))

    def check_inputs(self, optical: torch.Tensor, sar: torch.Tensor) -> None:
        p = self.config.patch_size
        co, cs = self.config.in_channels
        if optical.shape[1:] != (co, p, p) or sar.shape[1:] != (cs, p, p):
            raise ValueError(
                f"{self.name}: expected optical (B,{co},{p},{p}) and sar (B,{cs},{p},{p}), "
                f"got {tuple(optical.shape)} and {tuple(sar.shape)}"
            )

    def prune(self) -> Matcher:
        """Inference form: a copy without training-only heads, in eval mode."""
        model = copy.deepcopy(self)
        for attr in self.TRAINING_ONLY:
            if hasattr(model, attr):  # pruning an already pruned model is a no-op, not an error
                delattr(model, attr)
        model.pruned = True
        return model.eval()

    inference = prune

    def score(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return self.forward(optical, sar)["score"]


def keras_param_count(module: nn.Module) -> int:
    """Parameters counted as Keras does: trainable weights plus BatchNorm moving mean/variance."""
    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n += m.running_mean.numel() + m.running_var.numel()
    return n
