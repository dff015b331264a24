"""Co-registered optical/SAR scene pairs from public Sentinel-1/Sentinel-2 folders, for training material.

Layouts read (as in the project's shared data folder; ``data_dir`` may hold ``s1s2/`` and ``gefolki/``, or
be the ``s1s2`` folder itself):

============  ==========================================================  =========================================
source        optical (grey = mean of B04, B03, B02)                      SAR (band VV)
============  ==========================================================  =========================================
terramind     ``S2L2A/<name>.tif`` bands 4, 3, 2 (``S2RGB/<name>.tif``    ``S1RTC/<name>.tif`` band 1 (dB)
              bands 1-3 when the L2A file is absent)
bigearthnet   ``BigEarthNet-S2-Example/<..._col_row>/*_B04/B03/B02.tif``  ``BigEarthNet-S1-Example/<..._col_row>/
                                                                          *_VV.tif`` (same ``_col_row`` suffix)
sen1floods11  ``<id>_S2Hand.tif`` bands 4, 3, 2 (13-band L1C)             ``<id>_S1Hand.tif`` band 1 (dB)
ssl4eo-s12    ``s2a|s2c/<place>/<date>/B4, B3, B2.tif``                   ``s1/<place>/<scene>/VV.tif``, resampled
                                                                          onto the S2 grid (origins ~4 px apart,
                                                                          pixel sizes 0.4-0.8 % apart)
gefolki       ``S2_patch11.tif`` bands 1-3                                ``S1_patch11.tif`` band 1 (stored linear,
                                                                          scaled 0-1: the auto rule finds it and
                                                                          converts to dB)
============  ==========================================================  =========================================

Every scene is read through the pipeline's own :class:`geomatch.pipeline.raster.RasterPair` (bands stored
one file each are stacked in a temporary VRT first), so the training patches see exactly what ``geomatch
run`` sees: the optical bands averaged to grey, the SAR warped onto the optical grid (bilinear), its scale
detected by the same rule (dB kept, linear converted to dB), both stretched from their 1st-99th
percentiles and nodata marked invalid.

Alignment (``align=True``, the default): the residual optical->SAR shift of each scene is measured with the
pipeline's coarse stage (CFOG descriptors, ±12 px) and, when the estimate is confident, taken out in whole
pixels (:func:`align_scene`; recorded per scene in the manifest). Measured on the shared folder: ssl4eo-s12's S1
is 3-4 px off its S2 in both axes after resampling by the stored transforms; the other sources 0.5-2 px.

For ssl4eo-s12 each S1 date is paired with the S2 acquisition nearest in time (L2A before L1C on a tie);
both pairs are the same place, and :func:`split_scenes` keeps a place on one side of every split.

gefolki's patch11 pair is the pipeline's accuracy test scene (its warped copy is the tie-point benchmark),
so it is left out unless ``exclude`` is changed on purpose.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.warp import transform_bounds

from geomatch.config import PairConfig
from geomatch.errors import InputError

log = logging.getLogger(__name__)

SOURCES = ("terramind", "bigearthnet", "sen1floods11", "ssl4eo-s12", "gefolki")
DEFAULT_EXCLUDE = ("gefolki",)
OPTICAL_BANDS = ("B04", "B03", "B02")  # red, green, blue: averaged to grey as the pipeline does for RGB
# A scene may be as small as one patch; the pipeline's 96-pixel default is for whole scenes.
MIN_OVERLAP_PX = 64
ALIGN_MAX_SHIFT = 12.0  # px: residual misregistration searched for when aligning a scene
ALIGN_MIN_CONFIDENCE = 1.25  # best/runner-up peak ratio needed before a measured shift is applied
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


@dataclass
class ScenePair:
    """One co-registered scene on the optical grid: ``optical`` and ``sar`` float32 (h, w) in [0, 1].

    ``valid`` is True where both are valid. ``place`` names the ground location: scenes that share it (or
    whose footprints overlap) are one unit for splitting. ``bounds`` is the lon/lat footprint (west, south,
    east, north). ``info`` records the files, the radiometry applied (SAR scale, stretches) and the alignment.
    """

    scene_id: str
    source: str
    optical: np.ndarray
    sar: np.ndarray
    valid: np.ndarray
    place: str = ""
    bounds: tuple[float, float, float, float] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.place = self.place or self.scene_id

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.optical.shape)


@dataclass(frozen=True)
class SceneFiles:
    """Where one scene's bands are: ``optical`` is one multi-band file (with ``optical_bands``) or one file
    per band (``optical_bands`` empty); ``sar`` is read at band ``sar_band``."""

    scene_id: str
    source: str
    place: str
    optical: tuple[Path, ...]
    optical_bands: tuple[int, ...]
    sar: Path
    sar_band: int = 1


# -- finding the files ---------------------------------------------------------------------------------


def _source_root(data_dir: Path, source: str) -> Path | None:
    for root in (data_dir / "s1s2" / source, data_dir / source):
        if root.is_dir():
            return root
    return None


def _band_file(folder: Path, band: str) -> Path | None:
    """``B04`` matches ``*_B04.tif`` (BigEarthNet) or ``B4.tif`` (SSL4EO)."""
    short = band[0] + band[1:].lstrip("0")
    for pattern in (f"*_{band}.tif", f"{band}.tif", f"{short}.tif"):
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    return None


def _optical_band_files(folder: Path) -> tuple[Path, ...] | None:
    files = tuple(_band_file(folder, b) for b in OPTICAL_BANDS)
    return None if any(f is None for f in files) else files


def _terramind(root: Path) -> list[SceneFiles]:
    out = []
    for sar in sorted((root / "S1RTC").glob("*.tif")):
        l2a, rgb = root / "S2L2A" / sar.name, root / "S2RGB" / sar.name
        if l2a.is_file():
            optical, bands = (l2a,), (4, 3, 2)
        elif rgb.is_file():
            optical, bands = (rgb,), (1, 2, 3)
        else:
            log.warning("terramind: %s has no S2L2A or S2RGB file of the same name; skipped", sar)
            continue
        out.append(SceneFiles(f"terramind/{sar.stem}", "terramind", f"terramind/{sar.stem}", optical, bands, sar))
    return out


_COL_ROW = re.compile(r"_(\d+_\d+)$")


def _bigearthnet(root: Path) -> list[SceneFiles]:
    s2_dirs = {}
    for d in sorted(root.glob("*S2*/*")):
        m = _COL_ROW.search(d.name)
        if d.is_dir() and m:
            s2_dirs.setdefault(m.group(1), d)
    out = []
    for d in sorted(root.glob("*S1*/*")):
        m = _COL_ROW.search(d.name)
        if not (d.is_dir() and m):
            continue
        s2, vv = s2_dirs.get(m.group(1)), _band_file(d, "VV")
        optical = _optical_band_files(s2) if s2 is not None else None
        if optical is None or vv is None:
            log.warning("bigearthnet: %s has no matching S2 folder with B02-B04 or no VV file; skipped", d)
            continue
        # S1 names carry the S2 tile (e.g. ..._35VPK_57_38): tile plus col_row names the ground patch.
        tile = d.name[: m.start()].rsplit("_", 1)[-1]
        place = f"bigearthnet/{tile}_{m.group(1)}"
        out.append(SceneFiles(f"bigearthnet/{d.name}", "bigearthnet", place, optical, (), vv))
    return out


def _sen1floods11(root: Path) -> list[SceneFiles]:
    out = []
    for sar in sorted(root.rglob("*_S1Hand.tif")):
        stem = sar.name[: -len("_S1Hand.tif")]
        hits = sorted(root.rglob(f"{stem}_S2Hand.tif"))
        if not hits:
            log.warning("sen1floods11: %s has no %s_S2Hand.tif; skipped", sar, stem)
            continue
        out.append(SceneFiles(f"sen1floods11/{stem}", "sen1floods11", f"sen1floods11/{stem}", (hits[0],), (4, 3, 2),
                              sar))
    return out


_DATE = re.compile(r"(?<!\d)(20\d{6})T\d{6}")


def _date_ordinal(name: str) -> int | None:
    import datetime as dt

    m = _DATE.search(name)
    return dt.date(int(m.group(1)[:4]), int(m.group(1)[4:6]), int(m.group(1)[6:])).toordinal() if m else None


def _ssl4eo(root: Path) -> list[SceneFiles]:
    out = []
    for place_dir in sorted(p for p in (root / "s1").glob("*") if p.is_dir()):
        place = place_dir.name
        s2 = []  # (date, L1C after L2A, folder, files)
        for rank, level in enumerate(("s2a", "s2c")):
            for d in sorted((root / level / place).glob("*")):
                files = _optical_band_files(d) if d.is_dir() else None
                date = _date_ordinal(d.name)
                if files and date is not None:
                    s2.append((date, rank, d, files))
        if not s2:
            log.warning("ssl4eo-s12: place %s has S1 but no S2 folder with B2-B4; skipped", place)
            continue
        for s1 in sorted(p for p in place_dir.glob("*") if p.is_dir()):
            vv, date = _band_file(s1, "VV"), _date_ordinal(s1.name)
            if vv is None or date is None:
                continue
            _, _, d2, files = min(s2, key=lambda t: (abs(t[0] - date), t[1]))
            dates = _DATE.search(s1.name).group(1), _DATE.search(d2.name).group(1)
            sid = f"ssl4eo-s12/{place}/s1-{dates[0]}+{d2.parent.parent.name}-{dates[1]}"
            out.append(SceneFiles(sid, "ssl4eo-s12", f"ssl4eo-s12/{place}", files, (), vv))
    return out


def _gefolki(root: Path) -> list[SceneFiles]:
    out = []
    for sar in sorted(root.glob("S1_*.tif")):
        opt = root / ("S2_" + sar.name[3:])
        if opt.is_file():
            out.append(SceneFiles(f"gefolki/{sar.stem[3:]}", "gefolki", f"gefolki/{sar.stem[3:]}", (opt,), (1, 2, 3),
                                  sar))
    return out


_FINDERS = {"terramind": _terramind, "bigearthnet": _bigearthnet, "sen1floods11": _sen1floods11,
            "ssl4eo-s12": _ssl4eo, "gefolki": _gefolki}


def find_scenes(data_dir, sources: tuple[str, ...] | None = None,
                exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[SceneFiles]:
    """Every scene pair's files under ``data_dir``, from ``sources`` (default: all) minus ``exclude``.

    An ``exclude`` entry is a source name or the start of scene ids (e.g. ``ssl4eo-s12/0000200/s1-20200903``).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"--data-dir {data_dir}: folder not found; give the folder holding s1s2/ and gefolki/")
    wanted = tuple(sources) if sources else SOURCES
    exclude = tuple(exclude or ())
    unknown = sorted(set(wanted) - set(SOURCES)) + sorted(
        e for e in exclude if e not in SOURCES and e.split("/", 1)[0] not in SOURCES)
    if unknown:
        raise InputError(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)} "
                         "(exclude also takes scene ids: SOURCE/...)")
    scenes = []
    for source in wanted:
        if source in exclude:
            continue
        root = data_dir / "gefolki" if source == "gefolki" else _source_root(data_dir, source)
        if root is None or not root.is_dir():
            log.info("%s: no folder under %s", source, data_dir)
            continue
        scenes.extend(_FINDERS[source](root))
    prefixes = [e for e in exclude if e not in SOURCES]
    for prefix in prefixes:
        if not any(s.scene_id.startswith(prefix) for s in scenes):
            raise InputError(f"exclude {prefix!r} matches no scene under {data_dir}; give a source or a scene id start")
    scenes = [s for s in scenes if not any(s.scene_id.startswith(p) for p in prefixes)]
    if not scenes:
        names = ", ".join(s for s in wanted if s not in exclude)
        raise InputError(
            f"--data-dir {data_dir}: no optical/SAR scene pair found for {names}; expected s1s2/<source>/ folders "
            "laid out as described in geomatch.training.sources"
        )
    return scenes


# -- reading through the pipeline's raster pair --------------------------------------------------------


def _stack_vrt(files: tuple[Path, ...], folder: Path) -> Path:
    """A VRT stacking single-band files of one grid, so the pipeline can read them as one raster."""
    with rasterio.open(files[0]) as ds:
        width, height, crs, transform = ds.width, ds.height, ds.crs, ds.transform
    bands = []
    for i, f in enumerate(files, 1):
        with rasterio.open(f) as ds:
            if (ds.width, ds.height, ds.crs, ds.transform) != (width, height, crs, transform):
                raise InputError(f"{f}: its grid differs from {files[0]}; the optical bands of a scene must share one")
            gdal_type = _GDAL_TYPES.get(ds.dtypes[0], "Float32")
            nodata = "" if ds.nodata is None else f"<NoDataValue>{ds.nodata!r}</NoDataValue>"
        bands.append(
            f'<VRTRasterBand dataType="{gdal_type}" band="{i}">{nodata}<SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{escape(str(Path(f).resolve()))}</SourceFilename>'
            f"<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        )
    srs = f"<SRS>{escape(crs.to_wkt())}</SRS>" if crs else ""
    gt = ", ".join(repr(v) for v in transform.to_gdal())
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{srs}<GeoTransform>{gt}</GeoTransform>'
           + "".join(bands) + "</VRTDataset>")
    path = folder / "optical.vrt"
    path.write_text(xml)
    return path


def load_scene(files: SceneFiles, cfg: PairConfig | None = None, align: bool = True) -> ScenePair:
    """Read one scene through the pipeline's RasterPair, over the optical/SAR overlap; with ``align``, take out
    a confidently measured residual shift (see :func:`align_scene`)."""
    from geomatch.pipeline.raster import RasterPair

    with tempfile.TemporaryDirectory(prefix="geomatch-scene-") as tmp:
        if files.optical_bands:
            optical_path, bands = files.optical[0], files.optical_bands
        else:
            optical_path, bands = _stack_vrt(files.optical, Path(tmp)), tuple(range(1, len(files.optical) + 1))
        base = cfg or PairConfig(min_overlap_px=MIN_OVERLAP_PX)
        pair_cfg = PairConfig(**{**base.__dict__, "optical_bands": bands, "sar_bands": (files.sar_band,)})
        with RasterPair(optical_path, files.sar, pair_cfg) as pair:
            window = pair.overlap
            optical, opt_valid = pair.read_optical(window)
            sar, sar_valid = pair.read_sar(window)
            w_, s_, e_, n_ = rasterio.windows.bounds(window, pair.grid.transform)
            bounds = None
            if pair.grid.crs is not None:
                bounds = tuple(float(v) for v in transform_bounds(pair.grid.crs, "EPSG:4326", w_, s_, e_, n_))
            info = {
                "optical": [str(p) for p in files.optical],
                "optical_bands": list(files.optical_bands) or [p.name for p in files.optical],
                "sar": str(files.sar),
                "sar_band": files.sar_band,
                "sar_scale": pair.sar_scale,
                "optical_stretch": [pair.optical_stretch.lo, pair.optical_stretch.hi],
                "sar_stretch": [pair.sar_stretch.lo, pair.sar_stretch.hi],
                "window": [int(window.col_off), int(window.row_off), int(window.width), int(window.height)],
            }
    optical, sar = optical.astype(np.float32), sar.astype(np.float32)
    if align:
        sar, sar_valid, info["alignment"] = align_scene(optical, opt_valid, sar, sar_valid)
    return ScenePair(files.scene_id, files.source, optical, sar, opt_valid & sar_valid, files.place, bounds, info)


def _shift_image(img: np.ndarray, valid: np.ndarray, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """``out[y, x] = img[y + dy, x + dx]``; pixels with no source are 0 and invalid."""
    h, w = img.shape
    out, ok = np.zeros_like(img), np.zeros_like(valid)
    dst = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    src = slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx))
    out[dst], ok[dst] = img[src], valid[src]
    return out, ok


def align_scene(optical: np.ndarray, optical_valid: np.ndarray, sar: np.ndarray, sar_valid: np.ndarray,
                max_shift: float = ALIGN_MAX_SHIFT, min_confidence: float = ALIGN_MIN_CONFIDENCE):
    """Measure the residual optical->SAR shift with the pipeline's coarse stage and remove it in whole pixels.

    Why: the sources' georeferencing is not always as good as their READMEs say. Measured here with this
    estimator, ssl4eo-s12's S1 sits ~3-4 px off its S2 in both axes once resampled by the stored transforms
    (both dates, the same way), while the other sources are within ~1-2 px. A positive pair 5 px off teaches a
    matcher the wrong thing. Only a confident estimate (best peak / runner-up >= ``min_confidence``) is used,
    and only as an integer shift, so the SAR pixels keep their speckle statistics (no resampling blur).
    Returns (sar, sar_valid, record) with the measurement and the shift applied.
    """
    from geomatch.config import CoarseConfig
    from geomatch.pipeline.coarse import estimate_initial

    cfg = CoarseConfig(max_shift_px=float(max_shift), downsample=1, min_confidence=float(min_confidence))
    est = estimate_initial(optical, optical_valid, sar, sar_valid, cfg)
    measured = est.details.get("shift_px")
    confidence = float(est.details.get("confidence", 0.0))
    record = {"measured_shift_px": None if measured is None else [round(float(v), 2) for v in measured],
              "confidence": round(confidence, 3) if np.isfinite(confidence) else None,
              "applied_shift_px": [0, 0], "method": est.method}
    if measured is None or est.score <= 0:  # the estimator fell back to the identity: nothing to trust
        return sar, sar_valid, record
    dx, dy = (int(round(v)) for v in measured)
    if dx or dy:
        sar, sar_valid = _shift_image(sar, sar_valid, dx, dy)
        record["applied_shift_px"] = [dx, dy]
    return sar, sar_valid, record


def iter_scene_pairs(data_dir, sources: tuple[str, ...] | None = None, exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
                     cfg: PairConfig | None = None, align: bool = True) -> Iterator[ScenePair]:
    """Load every scene pair found under ``data_dir`` (see :func:`find_scenes`), one at a time."""
    for files in find_scenes(data_dir, sources, exclude):
        yield load_scene(files, cfg, align)


def load_scene_pairs(data_dir, sources: tuple[str, ...] | None = None, exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
                     cfg: PairConfig | None = None, align: bool = True) -> list[ScenePair]:
    return list(iter_scene_pairs(data_dir, sources, exclude, cfg, align))


# -- scene-level split ------------------------------------------------------------------------------------

SPLITS = ("train", "val", "test")


def _overlaps(a, b) -> bool:
    """Footprints share area (touching edges do not count: BigEarthNet patches tile the ground)."""
    if a is None or b is None:
        return False
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def place_groups(pairs: list[ScenePair]) -> list[list[ScenePair]]:
    """Scenes that must stay together: the same ``place``, or footprints that overlap (transitively)."""
    parent = list(range(len(pairs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of_place: dict[str, int] = {}
    for i, p in enumerate(pairs):
        j = first_of_place.setdefault(p.place, i)
        parent[root(i)] = root(j)
        for k in range(i):
            if _overlaps(p.bounds, pairs[k].bounds):
                parent[root(i)] = root(k)
    groups: dict[int, list[ScenePair]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(root(i), []).append(p)
    return list(groups.values())


def split_scenes(pairs: list[ScenePair], val_fraction: float = 0.15, test_fraction: float = 0.15,
                 seed: int = 0) -> dict[str, list[ScenePair]]:
    """Assign whole places (see :func:`place_groups`) to train / val / test.

    Fractions are of valid pixels (what patches are cut from), not of scene counts, because scenes differ
    in size by 20x. Places go largest first, in a seeded order among equal sizes, each to the split
    furthest below its target; a split asked for (fraction > 0) that ends empty takes the smallest
    training place. Raises InputError when there are fewer places than splits asked for.
    """
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    if min(fractions.values()) < 0 or fractions["train"] <= 0:
        raise InputError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction}: each must be >= 0 "
                         "and together below 1")
    groups = place_groups(list(pairs))
    wanted = [s for s in SPLITS if fractions[s] > 0]
    if len(groups) < len(wanted):
        raise InputError(
            f"{len(groups)} place(s) cannot fill the {len(wanted)} splits {', '.join(wanted)} without putting one "
            "place on two sides; add scenes or set the val/test fraction to 0"
        )
    weight = [sum(int(p.valid.sum()) for p in g) for g in groups]
    total = float(sum(weight)) or 1.0
    order = np.random.default_rng(seed).permutation(len(groups))
    order = sorted(order, key=lambda i: -weight[i])  # stable: the seeded order breaks ties
    assigned: dict[str, list[int]] = {s: [] for s in SPLITS}
    filled = dict.fromkeys(SPLITS, 0.0)
    for i in order:
        split = max(wanted, key=lambda s: fractions[s] * total - filled[s])
        assigned[split].append(i)
        filled[split] += weight[i]
    for s in wanted:
        if not assigned[s]:
            donor = max(wanted, key=lambda d: len(assigned[d]))
            smallest = min(assigned[donor], key=lambda i: weight[i])
            assigned[donor].remove(smallest)
            assigned[s].append(smallest)
    return {s: [p for i in sorted(assigned[s], key=lambda i: groups[i][0].scene_id) for p in groups[i]]
            for s in SPLITS}


# -- the optical-sar patch dataset ------------------------------------------------------------------------

TEST_NAME = "optical-sar"  # the test split's file: test_optical-sar.npy (the ``dir`` layout)


def build_optical_sar_patches(data_dir, out_dir, seed: int = 0, per_scene: int = 1000, val_fraction: float = 0.15,
                              test_fraction: float = 0.15, sources: tuple[str, ...] | None = None,
                              exclude: tuple[str, ...] = DEFAULT_EXCLUDE, config=None, overwrite: bool = False,
                              progress: bool = False, align: bool = True) -> dict:
    """Cut the scenes of ``data_dir`` into a patch dataset ``geomatch train --dataset OUT_DIR`` reads.

    Scenes are split by place (:func:`split_scenes`), then ``geomatch.training.build`` cuts them: up to
    ``per_scene`` detector keypoints per scene, each giving a positive (both patches at the keypoint) and a
    negative (hard: the SAR patch 8-24 px off; or random: at another keypoint). ``config`` (a BuildConfig)
    sets the rest; its ``max_points`` and ``seed`` are replaced by ``per_scene`` and ``seed``. Writes
    ``train.npy``, ``val.npy``, ``test_optical-sar.npy`` (+ ``_label.npy``) and ``manifest.json``, whose
    ``preset`` section lists the scenes of each split, pair counts per split and source, and each scene's
    radiometry and alignment. Returns the manifest.

    Speckle is not added here: ``geomatch.training.augment`` (``speckle_prob``) adds it during training.
    """
    from dataclasses import replace

    from geomatch.models.checkpoint import write_atomic
    from geomatch.training.build import BuildConfig, SourcePair, build_dataset

    pairs = load_scene_pairs(data_dir, sources, exclude, align=align)
    split = split_scenes(pairs, val_fraction, test_fraction, seed)
    cfg = replace(config or BuildConfig(), max_points=int(per_scene), seed=int(seed), val_fraction=float(val_fraction))
    tags = {"train": "train", "val": "val", "test": f"test:{TEST_NAME}"}
    build_sources = [
        SourcePair(Path(p.info["optical"][0]), Path(p.info["sar"]), split=tags[name], name=p.scene_id,
                   arrays=(p.optical, p.sar, p.valid, p.valid))
        for name, ps in split.items() for p in ps
    ]
    manifest = build_dataset(build_sources, out_dir, cfg, layout="dir", overwrite=overwrite, progress=progress)

    pairs_of = {s["name"]: s["pairs"] for s in manifest["sources"]}
    by_source: dict = {}
    for name, ps in split.items():
        for p in ps:
            cell = by_source.setdefault(name, {}).setdefault(p.source, {"scenes": 0, "pairs": 0})
            cell["scenes"] += 1
            cell["pairs"] += pairs_of.get(p.scene_id, 0)
    manifest["preset"] = {
        "name": "optical-sar",
        "data_dir": str(data_dir),
        "sources": sorted({p.source for p in pairs}),
        "excluded_sources": list(exclude or ()),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "split_by": "place (same place name or overlapping footprint), fractions of valid pixels",
        "scenes": {name: [p.scene_id for p in ps] for name, ps in split.items()},
        "places": {name: sorted({p.place for p in ps}) for name, ps in split.items()},
        "counts": by_source,
        "aligned": align,
        "scene_info": {p.scene_id: {"source": p.source, "place": p.place, "shape": list(p.shape),
                                    "bounds_lonlat": p.bounds, **p.info} for p in pairs},
    }
    write_atomic(Path(out_dir) / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
