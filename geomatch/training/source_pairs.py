"""The image pairs a patch-set build reads: :class:`SourcePair`, its readers, and ``--pairs`` CSV lists.

Sources are (optical, SAR/NIR) image pairs that are either aligned (GeoTIFFs on one grid, or plain images of
the same size) or related by a known 2x3 affine ``M`` that takes an optical pixel ``(col, row)`` to the SAR
pixel ``M @ (col, row, 1)`` (array-index coordinates, as the VIS-NIR registration files are written).

Radiometry: plain images (JPEG, PNG...) are read as 8-bit grey (RGB -> ITU-R 601 luma), unstretched, like the
published VIS-NIR patches; GeoTIFFs go through the run pipeline's rules (``geomatch.pipeline.normalise``:
optical bands averaged, SAR in dB, 1-99 % stretch) so trained matchers see what ``geomatch run`` feeds them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geomatch.errors import InputError, RasterError

PLAIN_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclass
class SourcePair:
    optical: Path
    sar: Path
    affine: np.ndarray | None = None  # (2, 3): optical (col, row, 1) -> SAR (col, row)
    split: str | None = None  # train | val | test:<name>; None: assigned by val_fraction
    name: str = ""
    # Images already read (optical, sar, optical_valid, sar_valid; float32 [0, 1] on one grid): read_pair
    # returns them instead of reading the files, which then only name the source (the optical-sar preset).
    arrays: tuple | None = None
    # Per-pixel whole-pixel shifts (2, h, w) in the optical frame, (dx, dy): a positive's SAR patch is cut at its
    # keypoint + the shift there; NaN where no correspondence is known (no keypoint there). None: no shift.
    local_shift: np.ndarray | None = None

    def __post_init__(self):
        self.optical, self.sar = Path(self.optical), Path(self.sar)
        if self.affine is not None:
            self.affine = np.asarray(self.affine, dtype=np.float64).reshape(2, 3)
        if not self.name:
            self.name = self.optical.stem


def read_affine(path: str | Path) -> np.ndarray:
    """A 2x3 affine from ``.npy`` or text (any six numbers, brackets allowed, as the VIS-NIR ``_nir.txt``)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            m = np.load(path, allow_pickle=False)
        else:
            m = np.array([float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?",
                                                         path.read_text(errors="replace"))])
        m = np.asarray(m, dtype=np.float64)
        if m.size == 9 and np.allclose(m.reshape(3, 3)[2], (0, 0, 1)):
            m = m.reshape(3, 3)[:2]
        return m.reshape(2, 3)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a 2x3 affine matrix ({exc}); give 6 numbers as .npy or text") from exc


def _is_plain(path: Path) -> bool:
    return path.suffix.lower() in PLAIN_SUFFIXES


def _read_plain(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise RasterError(f"{path}: cannot read image ({exc})") from exc
    return grey, np.ones(grey.shape, bool)


def _read_geotiff(path: Path, role: str):
    import rasterio

    from geomatch.pipeline import normalise as nm

    try:
        with rasterio.open(path) as src:
            bands = nm.grey_bands(src.count, ()) if role == "optical" else nm.sar_bands(src.count, ())
            data = src.read(list(bands), masked=True).astype(np.float64)
            grid = (src.crs, src.transform, src.width, src.height)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"{path}: cannot read raster ({exc})") from exc
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    values = np.ma.getdata(data).mean(axis=0)
    valid &= np.isfinite(values)
    if role == "sar" and nm.detect_sar_scale(values[valid]) == "linear":
        values = nm.to_db(values)
    stretch = nm.Stretch.fit(values[valid])
    return stretch.apply(np.where(valid, values, stretch.lo)), valid, grid


def read_pair(src: SourcePair) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(optical, sar, optical_valid, sar_valid): float32 [0, 1] grey images and their valid masks."""
    if src.arrays is not None:
        return src.arrays
    for p in (src.optical, src.sar):
        if not p.is_file():
            raise InputError(f"{p}: image not found")
    if _is_plain(src.optical) or _is_plain(src.sar):
        (opt, vo), (sar, vs) = _read_plain(src.optical), _read_plain(src.sar)
    else:
        opt, vo, grid_o = _read_geotiff(src.optical, "optical")
        sar, vs, grid_s = _read_geotiff(src.sar, "sar")
        same = grid_o[0] == grid_s[0] and grid_o[2:] == grid_s[2:] and np.allclose(
            tuple(grid_o[1])[:6], tuple(grid_s[1])[:6], rtol=0, atol=1e-9 * max(1.0, abs(grid_o[1].a)))
        if src.affine is None and not same:
            raise RasterError(
                f"{src.sar}: not on the grid of {src.optical} (CRS, transform or size differ); warp it onto that "
                "grid first (e.g. gdalwarp -te/-tr/-t_srs) or give the pixel affine between them"
            )
    if src.affine is None and opt.shape != sar.shape:
        raise InputError(f"{src.optical} is {opt.shape[::-1]} but {src.sar} is {sar.shape[::-1]} pixels; "
                         "aligned pairs must be the same size (or give an affine)")
    return opt, sar, vo, vs



def read_pair_list(path: str | Path) -> list[SourcePair]:
    """CSV rows ``optical,sar[,affine[,split]]`` (paths relative to the file; a header row is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--pairs {path}: file not found")
    out = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not row or not row[0] or row[0].startswith("#") or (i == 1 and row[0].lower() == "optical"):
                continue
            if len(row) < 2:
                raise InputError(f"{path}:{i}: expected optical,sar[,affine[,split]]")
            opt, sar = (path.parent / row[0]), (path.parent / row[1])
            affine = read_affine(path.parent / row[2]) if len(row) > 2 and row[2] else None
            split = row[3] if len(row) > 3 and row[3] else None
            if split is not None and not (split in ("train", "val") or re.fullmatch(r"test:[\w.-]+", split)):
                raise InputError(f"{path}:{i}: split '{split}' must be train, val or test:NAME")
            out.append(SourcePair(opt, sar, affine, split))
    if not out:
        raise InputError(f"--pairs {path}: no image pairs listed")
    return out

