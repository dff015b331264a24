"""Affine helpers that behave the same on affine 2.x and 3.x (3.x deprecates ``*`` for ``@``)."""

from __future__ import annotations

import numpy as np
from affine import Affine


def apply(t: Affine, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates (scalars or arrays) through ``t``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def compose(outer: Affine, inner: Affine) -> Affine:
    """``outer`` after ``inner`` (what ``outer * inner`` meant in affine 2.x)."""
    a, b, c, d, e, f = tuple(outer)[:6]
    p, q, r, s, t, u = tuple(inner)[:6]
    return Affine(a * p + b * s, a * q + b * t, a * r + b * u + c, d * p + e * s, d * q + e * t, d * r + e * u + f)
