"""The feature-interaction part shared by FIL-Net and RRL-Net (rrlnet-spec §3.5, §3.6).

At every encoder stage k a FIL module turns the two modalities' taps F1 (optical) and F2 (SAR) into
features A_i = CBL1x1(F_i) and gates G_i = sigmoid(BN(Conv1x1(F_i))). Each modality's features gated by
the *other* modality's gate are its common features, C1 = A1 * G2 and C2 = A2 * G1; what the gate removed
is private, P_i = |C_i - A_i|. The aggregation ("metric") trunk consumes the private features of all five
stages; the auxiliary module heads see C1 + C2 of stages 3-5.

:class:`FILFamily` holds everything after the encoders, so the two networks differ only in their encoders
(and RRL-Net's reconstruction decoders). The auxiliary heads are top-level attributes so that
``Matcher.prune`` can delete them by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from geomatch.models.base import Matcher
from geomatch.models.layers import CBL, ConvBNAct, Head, maxpool2

# Stages that carry auxiliary heads, 1-based as in the spec: stage heads on trunk stages 3 and 4 (stage 5
# is the main head), module heads on FIL stages 3, 4 and 5.
AUX_STAGES = (4, 3)
MODULE_STAGES = (5, 4, 3)
BCE_HEADS = ("main", "stage4", "stage3", "module5", "module4", "module3")


class FILFeatures(NamedTuple):
    common_optical: torch.Tensor  # C1 = A1 * G2
    common_sar: torch.Tensor  # C2 = A2 * G1
    private_optical: torch.Tensor  # P1 = |C1 - A1|
    private_sar: torch.Tensor  # P2 = |C2 - A2|


def interact(a1: torch.Tensor, g1: torch.Tensor, a2: torch.Tensor, g2: torch.Tensor) -> FILFeatures:
    """Common and private features from features ``a`` and gates ``g`` of the two modalities."""
    c1 = a1 * g2
    c2 = a2 * g1
    return FILFeatures(c1, c2, torch.abs(c1 - a1), torch.abs(c2 - a2))


class FILModule(nn.Module):
    """Four 1x1 convolutions per stage: a feature and a gate for each modality (gates have BN)."""

    def __init__(self, channels_optical: int, channels_sar: int, channels: int):
        super().__init__()
        self.feature_optical = CBL(channels_optical, channels, 1)
        self.gate_optical = ConvBNAct(channels_optical, channels, 1, act=None)
        self.feature_sar = CBL(channels_sar, channels, 1)
        self.gate_sar = ConvBNAct(channels_sar, channels, 1, act=None)

    def forward(self, f_optical: torch.Tensor, f_sar: torch.Tensor) -> FILFeatures:
        return interact(
            self.feature_optical(f_optical),
            torch.sigmoid(self.gate_optical(f_optical)),
            self.feature_sar(f_sar),
            torch.sigmoid(self.gate_sar(f_sar)),
        )


class AggregationTrunk(nn.Module):
    """Two CBL 3x3 per stage; stage k sees [MaxPool(stage k-1), P1_k, P2_k] (stage 1 only [P1_1, P2_1])."""

    def __init__(self, private_channels: Sequence[int], widths: Sequence[int]):
        super().__init__()
        if len(private_channels) != len(widths):
            raise ValueError("one trunk width per FIL stage is needed")
        stages = []
        previous = 0
        for c, w in zip(private_channels, widths, strict=True):
            stages.append(nn.Sequential(CBL(previous + 2 * c, w), CBL(w, w)))
            previous = w
        self.stages = nn.ModuleList(stages)
        self.pool = maxpool2()

    def forward(self, privates: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Every stage's output, finest first."""
        outputs: list[torch.Tensor] = []
        for stage, (p1, p2) in zip(self.stages, privates, strict=True):
            parts = [p1, p2] if not outputs else [self.pool(outputs[-1]), p1, p2]
            outputs.append(stage(torch.cat(parts, dim=1)))
        return outputs


class ModuleHead(nn.Sequential):
    """Auxiliary head on the common features: (C1 + C2) -> CBL 3x3 -> CBL 3x3 -> Head."""

    def __init__(self, channels: int, hidden: tuple[int, ...]):
        super().__init__(CBL(channels, channels), CBL(channels, channels), Head(channels, hidden))


class FILFamily(Matcher):
    """Matcher base for FIL-Net and RRL-Net: FIL modules, aggregation trunk and MLPP heads.

    A subclass builds its encoders, then calls :meth:`build_fil_metric`; its ``forward`` hands the five
    taps per modality to :meth:`metric_outputs`.
    """

    HEADS = {name: "bce" for name in BCE_HEADS}
    TRAINING_ONLY = tuple(f"head_stage{k}" for k in AUX_STAGES) + tuple(f"head_module{k}" for k in MODULE_STAGES)

    def build_fil_metric(
        self,
        tap_optical: Sequence[int],
        tap_sar: Sequence[int],
        fil_channels: Sequence[int],
        trunk_widths: Sequence[int],
    ) -> None:
        """``tap_*``: encoder tap channels per stage; ``fil_channels``: c_k; ``trunk_widths``: trunk stage widths.

        All counts are already width-scaled.
        """
        hidden = (self.ch(512), self.ch(256))
        self.fil = nn.ModuleList(FILModule(o, s, c) for o, s, c in zip(tap_optical, tap_sar, fil_channels, strict=True))
        self.trunk = AggregationTrunk(fil_channels, trunk_widths)
        self.head_main = Head(trunk_widths[-1], hidden)
        for k in AUX_STAGES:
            setattr(self, f"head_stage{k}", Head(trunk_widths[k - 1], hidden))
        for k in MODULE_STAGES:
            setattr(self, f"head_module{k}", ModuleHead(fil_channels[k - 1], hidden))

    def wants_heads(self) -> bool:
        """Auxiliary outputs are computed only when training the unpruned model."""
        return self.training and not self.pruned

    def metric_outputs(self, taps_optical: Sequence[torch.Tensor], taps_sar: Sequence[torch.Tensor]) -> dict:
        """``{"score": ...}``, plus ``"heads"`` with the six BCE outputs when :meth:`wants_heads`."""
        fil = [module(fo, fs) for module, fo, fs in zip(self.fil, taps_optical, taps_sar, strict=True)]
        stages = self.trunk([(f.private_optical, f.private_sar) for f in fil])
        score = self.head_main(stages[-1])
        out: dict = {"score": score}
        if self.wants_heads():
            heads = {"main": score}
            for k in AUX_STAGES:
                heads[f"stage{k}"] = getattr(self, f"head_stage{k}")(stages[k - 1])
            for k in MODULE_STAGES:
                f = fil[k - 1]
                heads[f"module{k}"] = getattr(self, f"head_module{k}")(f.common_optical + f.common_sar)
            out["heads"] = heads
        return out
