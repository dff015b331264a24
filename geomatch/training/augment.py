"""The seed's training augmentation (``utils.gen4``, rrlnet-spec §1), in torch instead of imgaug.

Per modality, independently (so positives end up slightly misaligned, as in the seed): imgaug
``SomeOf((0, 2), random_order=True)`` over seven ops, i.e. each patch gets 0, 1 or 2 distinct ops in random
order, drawn from

- ``GaussianBlur(0, 1)``: in the seed this is sigma = 0, a **no-op**; it is kept as an op that does nothing so
  the odds of the other six match the seed's;
- gamma contrast, gamma ~ U(0.5, 1.5);
- scale along x, and separately along y, ~ U(0.95, 1.05) about the patch centre;
- translate along x, and separately along y, by ~ U(-5 %, +5 %) of the patch size;
- additive Gaussian noise, std 0.02 * 255 grey levels.

Geometric jitter is bilinear with mirrored borders (imgaug ``mode="symmetric"``). Then, shared by both
patches of a pair: ``SomeOf((0, 2))`` over horizontal flip (p = 0.5), vertical flip (p = 0.5) and rotations
by 90, 180 and 270 degrees. Values stay on the 0-255 grid (rounded once at the end, as the seed's uint8
batches are) and are returned divided by 255.

``speckle_prob`` adds what the seed does not have: multiplicative gamma speckle (mean 1, ``speckle_looks``
looks, an integer) on the SAR side, for training on optical/SAR pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

NOISE_STD = 0.02 * 255.0
GAMMA = (0.5, 1.5)
SCALE = (0.95, 1.05)
TRANSLATE = 0.05
# Per-modality ops, in the seed's list order.
BLUR_NOOP, GAMMA_OP, SCALE_X, SCALE_Y, SHIFT_X, SHIFT_Y, NOISE = range(7)
# Shared ops.
FLIP_LR, FLIP_UD, ROT90, ROT180, ROT270 = range(5)


@dataclass(frozen=True)
class AugmentConfig:
    photometric: bool = True  # the per-modality list (photometric and small geometric jitter)
    geometric: bool = True  # the shared flips and rotations
    speckle_prob: float = 0.0
    speckle_looks: int = 4

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("photometric", "geometric", "speckle_prob", "speckle_looks")}


def _some_of(n_ops: int, batch: int, gen: torch.Generator, max_ops: int = 2) -> torch.Tensor:
    """(batch, max_ops) op ids, -1 for none: 0..max_ops distinct ops per row in random order."""
    count = torch.randint(0, max_ops + 1, (batch,), generator=gen)
    ops = torch.argsort(torch.rand(batch, n_ops, generator=gen), dim=1)[:, :max_ops]
    ops[torch.arange(max_ops)[None, :] >= count[:, None]] = -1
    return ops


def _uniform(lo: float, hi: float, n: int, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


class Augmenter:
    """Callable ``(optical_u8, sar_u8) -> (optical, sar)``: uint8 (B, 1, P, P) in, float [0, 1] out.

    Every random number comes from ``generator`` (CPU), so a seeded run is reproducible and a resumed run
    continues the same stream when the generator state is restored.
    """

    def __init__(self, config: AugmentConfig | None = None, generator: torch.Generator | None = None):
        self.config = config or AugmentConfig()
        self.generator = generator or torch.Generator().manual_seed(0)

    def __call__(self, optical: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        optical = optical.float()
        sar = sar.float()
        if cfg.photometric:
            # The seed augments the NIR/SAR batch first, then the VIS batch.
            sar = self._per_modality(sar)
            optical = self._per_modality(optical)
        if cfg.speckle_prob > 0:
            sar = self._speckle(sar)
        optical = optical.round_().clamp_(0, 255) / 255.0
        sar = sar.round_().clamp_(0, 255) / 255.0
        if cfg.geometric:
            optical, sar = self._shared(optical, sar)
        return optical, sar

    def _per_modality(self, x: torch.Tensor) -> torch.Tensor:
        gen, b, dev = self.generator, x.shape[0], x.device
        ops = _some_of(7, b, gen)
        for pos in range(ops.shape[1]):
            op = ops[:, pos]
            gamma = _uniform(*GAMMA, b, gen)
            sx, sy = _uniform(*SCALE, b, gen), _uniform(*SCALE, b, gen)
            tx, ty = _uniform(-TRANSLATE, TRANSLATE, b, gen), _uniform(-TRANSLATE, TRANSLATE, b, gen)
            noise = torch.randn(x.shape, generator=gen) * NOISE_STD

            m = op == GAMMA_OP
            if m.any():
                g = gamma[m].to(dev).view(-1, 1, 1, 1)
                x[m.to(dev)] = 255.0 * (x[m.to(dev)] / 255.0).clamp_(min=0) ** g

            geo = (op >= SCALE_X) & (op <= SHIFT_Y)
            if geo.any():
                one, zero = torch.ones(b), torch.zeros(b)
                ax = torch.where(op == SCALE_X, 1.0 / sx, one)
                ay = torch.where(op == SCALE_Y, 1.0 / sy, one)
                # Normalised coordinates span 2 units across the patch: a shift of t * size is 2 t.
                bx = torch.where(op == SHIFT_X, -2.0 * tx, zero)
                by = torch.where(op == SHIFT_Y, -2.0 * ty, zero)
                theta = torch.zeros(b, 2, 3)
                theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = ax, ay, bx, by
                sel = geo.to(dev)
                grid = F.affine_grid(theta[geo].to(dev), list(x[sel].shape), align_corners=False)
                x[sel] = F.grid_sample(x[sel], grid, mode="bilinear", padding_mode="reflection", align_corners=False)

            m = op == NOISE
            if m.any():
                x[m.to(dev)] += noise[m].to(dev)
            x.clamp_(0, 255)
        return x

    def _speckle(self, x: torch.Tensor) -> torch.Tensor:
        gen, b = self.generator, x.shape[0]
        looks = max(1, int(self.config.speckle_looks))
        apply = torch.rand(b, generator=gen) < self.config.speckle_prob
        # Gamma(L, 1/L), mean 1 and variance 1/L (the intensity speckle of an L-look image), as the mean of
        # L unit exponentials, which a seeded generator can draw.
        u = torch.rand((looks, *x.shape), generator=gen).clamp_(min=1e-12)
        g = -torch.log(u).mean(dim=0)
        g[~apply] = 1.0
        return x * g.to(x.device)

    def _shared(self, optical: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gen, b, dev = self.generator, optical.shape[0], optical.device
        ops = _some_of(5, b, gen)
        for pos in range(ops.shape[1]):
            op = ops[:, pos]
            coin = torch.rand(b, generator=gen) < 0.5  # Fliplr(0.5) / Flipud(0.5) flip only half the time
            for code, fn in (
                (FLIP_LR, lambda t: t.flip(3)),
                (FLIP_UD, lambda t: t.flip(2)),
                (ROT90, lambda t: t.rot90(1, (2, 3))),
                (ROT180, lambda t: t.rot90(2, (2, 3))),
                (ROT270, lambda t: t.rot90(3, (2, 3))),
            ):
                m = op == code
                if code in (FLIP_LR, FLIP_UD):
                    m &= coin
                if m.any():
                    md = m.to(dev)
                    optical[md] = fn(optical[md])
                    sar[md] = fn(sar[md])
        return optical, sar
