"""Radiometric rules that turn raw raster values into the [0, 1] images the detectors and matchers see.

Rules (user-facing: keep the README's input section in step with them):

- **Optical to grey**: the mean of the selected bands. With no selection: the mean of the first three
  bands when the file has three or more (assumed R, G, B; a fourth band is often alpha or NIR and is
  left out), otherwise the mean of all bands (one or two).
- **SAR band**: the mean of the selected bands; with no selection band 1 (e.g. VV in a VV/VH product).
- **Complex values** (SAR SLC, any side): the amplitude |z|, taken before warping or averaging (GDAL's
  ``mod`` pixel function, in ``raster/sources.py``); a nodata value is compared with the amplitude, and
  the rules below see the amplitude like any other band.
- **SAR scale** (``pair.sar_scale = "auto"``): values with more than 1 % negatives are taken as dB.
  Non-negative values are taken as linear amplitude or intensity when they have a heavy right tail:
  skewness above 0.5 *and* larger than the skewness of their logarithm (a log makes linear SAR
  roughly symmetric). Otherwise (e.g. 8-bit display products) they are taken as already
  logarithmic. Linear values become ``10 * log10(max(v, 1e-6))``.
- **Stretch**: the 1st and 99th percentiles of the valid pixels of the whole overlap (computed once,
  on a decimated read, so every tile shares them) map to 0 and 1, clipped.
- **Implicit border** (only when a raster declares no nodata and none is given in the config):
  pixels whose value is 0 in every read band and that are reached from the image edge along their
  row or their column through such zeros are nodata. For a convex footprint with a zero collar
  (the usual scene edge) this finds the whole collar; zeros inside the image stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DB_EPS = 1e-6
STRETCH_PERCENTILES = (1.0, 99.0)


def grey_bands(count: int, selected: tuple[int, ...]) -> tuple[int, ...]:
    """1-based band indexes averaged into the optical grey image."""
    if selected:
        return tuple(selected)
    return (1, 2, 3) if count >= 3 else tuple(range(1, count + 1))


def sar_bands(count: int, selected: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(selected) if selected else (1,)


def _skew(v: np.ndarray) -> float:
    sd = v.std()
    if sd <= 0:
        return 0.0
    return float(np.mean(((v - v.mean()) / sd) ** 3))


def detect_sar_scale(values: np.ndarray) -> str:
    """'linear' or 'db' for a sample of valid SAR values (see the module doc for the rule)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "db"
    if np.mean(v < 0) > 0.01:
        return "db"
    pos = v[v > 0]
    if pos.size < 16:
        return "db"
    skew_lin = _skew(pos)
    skew_log = _skew(np.log(pos))
    return "linear" if skew_lin > 0.5 and abs(skew_log) < skew_lin else "db"


def to_db(v: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (10.0 * np.log10(np.maximum(v, DB_EPS))).astype(np.float32)


@dataclass(frozen=True)
class Stretch:
    lo: float
    hi: float

    @classmethod
    def fit(cls, values: np.ndarray) -> Stretch:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            return cls(0.0, 1.0)
        lo, hi = np.percentile(v, STRETCH_PERCENTILES)
        if not hi > lo:  # a constant image: keep it finite, it will simply be textureless
            hi = lo + 1.0
        return cls(float(lo), float(hi))

    def apply(self, v: np.ndarray) -> np.ndarray:
        out = (np.asarray(v, dtype=np.float32) - np.float32(self.lo)) / np.float32(self.hi - self.lo)
        return np.clip(out, 0.0, 1.0, out=out)


@dataclass(frozen=True)
class BorderRuns:
    """Lengths of the zero runs that touch each image edge, per row and per column.

    O(width + height) storage, computed in one strip-wise pass, so the implicit-border rule costs no
    memory proportional to the raster and can be evaluated for any tile.
    """

    width: int
    height: int
    left: np.ndarray  # per row
    right: np.ndarray
    top: np.ndarray  # per column
    bottom: np.ndarray

    @classmethod
    def none(cls, width: int, height: int) -> BorderRuns:
        zr, zc = np.zeros(height, np.int32), np.zeros(width, np.int32)
        return cls(width, height, zr, zr.copy(), zc, zc.copy())

    @property
    def empty(self) -> bool:
        return not (self.left.any() or self.right.any() or self.top.any() or self.bottom.any())

    @property
    def pixels(self) -> int:
        """An upper bound on the number of border pixels (rows and columns counted separately)."""
        return int(self.left.sum() + self.right.sum() + self.top.sum() + self.bottom.sum())

    @classmethod
    def scan(cls, read_strip, width: int, height: int, strip: int = 256) -> BorderRuns:
        """``read_strip(row0, nrows) -> bool (nrows, width)`` says which pixels are zero in every band."""
        left = np.zeros(height, np.int32)
        right = np.zeros(height, np.int32)
        top = np.zeros(width, np.int32)
        top_open = np.ones(width, bool)  # the column's run from the top edge has not ended yet
        bottom = np.zeros(width, np.int32)
        for r0 in range(0, height, strip):
            n = min(strip, height - r0)
            z = read_strip(r0, n)
            nz = ~z
            any_nz_row = nz.any(axis=1)
            left[r0:r0 + n] = np.where(any_nz_row, nz.argmax(axis=1), width)
            right[r0:r0 + n] = np.where(any_nz_row, nz[:, ::-1].argmax(axis=1), width)
            any_nz_col = nz.any(axis=0)
            lead = np.where(any_nz_col, nz.argmax(axis=0), n)
            top[top_open] += lead[top_open]
            top_open &= ~any_nz_col
            trail = np.where(any_nz_col, nz[::-1].argmax(axis=0), n)
            bottom = np.where(any_nz_col, trail, bottom + n).astype(np.int32)
        return cls(width, height, left, right, top, bottom)

    def is_border(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Integer pixel indexes (clipped into the raster) -> True where the rule marks nodata."""
        c = np.clip(cols, 0, self.width - 1)
        r = np.clip(rows, 0, self.height - 1)
        return (
            (c < self.left[r]) | (c >= self.width - self.right[r])
            | (r < self.top[c]) | (r >= self.height - self.bottom[c])
        )
