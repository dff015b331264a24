"""Affine helpers: ``Affine`` transforms that behave the same on affine 2.x and 3.x (3.x deprecates ``*``
for ``@``), and the 2x3 numpy maps between pixel grids that the pipeline passes between stages.

A 2x3 map ``A`` takes a point ``p = (x, y)`` in one array's pixel-centre coordinates to ``A[:, :2] @ p +
A[:, 2]`` in another's. Arrays cut from a larger grid at an origin (col_off, row_off) change only the
translation part (:func:`to_global`, :func:`shift_affine`).
"""

from __future__ import annotations

import numpy as np
from affine import Affine
from rasterio.windows import Window


def apply(t: Affine, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates (scalars or arrays) through ``t``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def compose(outer: Affine, inner: Affine) -> Affine:
    """``outer`` after ``inner`` (what ``outer * inner`` meant in affine 2.x)."""
    a, b, c, d, e, f = tuple(outer)[:6]
    p, q, r, s, t, u = tuple(inner)[:6]
    return Affine(a * p + b * s, a * q + b * t, a * r + b * u + c, d * p + e * s, d * q + e * t, d * r + e * u + f)


def to_global(affine_local: np.ndarray, origin) -> np.ndarray:
    """A map between arrays that both start at ``origin`` of one grid -> the same map in that grid's coordinates."""
    lin, t = affine_local[:, :2], affine_local[:, 2]
    o = np.asarray(origin, float)
    return np.hstack([lin, (t + o - lin @ o)[:, None]])


def shift_affine(affine: np.ndarray, src_origin, dst_origin) -> np.ndarray:
    """A grid map q = A p, expressed between arrays whose origins are ``src_origin`` (p) and ``dst_origin`` (q)."""
    lin = affine[:, :2]
    t = affine[:, 2] + lin @ np.asarray(src_origin, float) - np.asarray(dst_origin, float)
    return np.hstack([lin, t[:, None]])


def bbox_window(affine: np.ndarray, win: Window, margin: float) -> Window:
    """The integer window that holds ``win`` mapped through ``affine``, grown by ``margin`` pixels on every side."""
    c0, r0 = win.col_off, win.row_off
    c1, r1 = c0 + win.width, r0 + win.height
    corners = np.array([[c0, r0, 1], [c1, r0, 1], [c0, r1, 1], [c1, r1, 1]], float)
    q = corners @ affine.T
    x0, y0 = np.floor(q.min(axis=0) - margin)
    x1, y1 = np.ceil(q.max(axis=0) + margin)
    return Window(int(x0), int(y0), int(x1 - x0), int(y1 - y0))
