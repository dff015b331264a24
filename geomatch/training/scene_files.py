"""Finding the optical/SAR scene pairs of the shared data folder's public sources (training material).

Layouts read (as in the project's shared data folder; ``data_dir`` may hold ``s1s2/``, ``gefolki/``,
``volkov-s1s2/``, ``3mos/`` and ``changedet/``, or be the ``s1s2`` folder itself):

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
volkov-s1s2   ``opt/NNN.png`` (8-bit true colour)                         ``sar/NNN.png`` (8-bit VH, kept as
                                                                          stored); footprint from metadata.json
3mos          ``<SENSOR>_<scene>_<k>_opt.png``                            ``..._sar.png`` band 1 (kept as stored)
changedet     ``*.mat`` key ``image_t2``; ``*-Bc.tif``                    ``image_t1``; ``*-A.tif``; change mask
                                                                          ``Ref_gt``; ``*-C.tif`` (white = changed)
============  ==========================================================  =========================================

The last three are display images (8-bit, not georeferenced) whose published alignment is off by 1-8 px:
their scenes are marked ``must_align`` (:func:`geomatch.training.scenes.align_scene` must measure the shift,
or confirm it against the folder's own ``alignment_check.csv`` measurement, before positives are cut from them).
changedet's ``#1-Italy`` (Landsat NIR / optical) and ``#4-Img17`` (two optical images) are not optical/SAR
pairs and are skipped.

For ssl4eo-s12 each S1 date is paired with the S2 acquisition nearest in time (L2A before L1C on a tie);
both pairs are the same place, and :mod:`geomatch.training.splits` keeps a place on one side of every split.

gefolki's patch11 pair is the pipeline's accuracy test scene (its warped copy is the tie-point benchmark),
so it is left out unless ``exclude`` is changed on purpose. Reading a scene: :mod:`geomatch.training.scenes`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from geomatch.errors import InputError

log = logging.getLogger(__name__)

SOURCES = ("terramind", "bigearthnet", "sen1floods11", "ssl4eo-s12", "gefolki", "volkov-s1s2", "3mos", "changedet")
DEFAULT_EXCLUDE = ("gefolki",)
OPTICAL_BANDS = ("B04", "B03", "B02")  # red, green, blue: averaged to grey as the pipeline does for RGB


@dataclass(frozen=True)
class SceneFiles:
    """Where one scene's bands are: ``optical`` is one multi-band file (with ``optical_bands``) or one file
    per band (``optical_bands`` empty); ``sar`` is read at band ``sar_band``.

    ``mat_keys`` names the (optical, SAR) arrays when both are in one ``.mat`` file; ``change_mask`` (a raster,
    or the ``.mat`` array ``change_key``) marks what changed between the two dates. ``reference_shift`` is the
    folder's own residual measurement, (dx, dy) in the sense :func:`~geomatch.training.scenes.align_scene`
    applies it; ``bounds`` a lon/lat footprint for files that carry no georeference.
    """

    scene_id: str
    source: str
    place: str
    optical: tuple[Path, ...]
    optical_bands: tuple[int, ...]
    sar: Path
    sar_band: int = 1
    sar_scale: str = "auto"  # PairConfig.sar_scale; "db" keeps display images' values as stored
    mat_keys: tuple[str, ...] = ()
    change_mask: Path | None = None
    change_key: str = ""
    reference_shift: tuple[float, float] | None = None
    bounds: tuple[float, float, float, float] | None = None
    must_align: bool = False


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


def _table(path: Path, key: str) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row[key]: row for row in csv.DictReader(f)}


def _reference(row: dict | None, dx: str, dy: str) -> tuple[float, float] | None:
    """The table's shift to apply to the SAR (skimage convention, out = sar moved by (dy, dx)) as the
    (dx, dy) that align_scene applies (out[y, x] = sar[y + dy, x + dx]): the same shift, negated."""
    try:
        return (-float(row[dx]), -float(row[dy])) if row else None
    except (KeyError, ValueError):
        return None


def _mercator_bounds(record: dict | None) -> tuple[float, float, float, float] | None:
    from rasterio.warp import transform_bounds

    corners = (record or {}).get("corners_EPSG:3395")
    if not corners:
        return None
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return tuple(float(v) for v in transform_bounds("EPSG:3395", "EPSG:4326", min(xs), min(ys), max(xs), max(ys)))


def _volkov(root: Path) -> list[SceneFiles]:
    table = _table(root / "alignment_check.csv", "pair")
    meta_path = root / "metadata.json"
    meta = {m["fragment_filename"]: m for m in json.loads(meta_path.read_text())} if meta_path.is_file() else {}
    out = []
    for opt in sorted((root / "opt").glob("*.png")):
        sar = root / "sar" / opt.name
        if not sar.is_file():
            log.warning("volkov-s1s2: %s has no sar/%s; skipped", opt, opt.name)
            continue
        sid = f"volkov-s1s2/{opt.stem}"
        out.append(SceneFiles(sid, "volkov-s1s2", sid, (opt,), (1, 2, 3), sar, sar_scale="db",
                              reference_shift=_reference(table.get(opt.name), "ncc_dx", "ncc_dy"),
                              bounds=_mercator_bounds(meta.get(opt.name)), must_align=True))
    return out


_3MOS = re.compile(r"^(?P<sensor>[A-Za-z0-9]+)_(?P<scene>[A-Za-z]+)_\d+_opt\.png$")


def _3mos(root: Path) -> list[SceneFiles]:
    table = _table(root / "alignment_check.csv", "opt_tile")
    out = []
    for opt in sorted(root.glob("*_opt.png")):
        m = _3MOS.match(opt.name)
        sar = opt.with_name(opt.name[: -len("_opt.png")] + "_sar.png")
        if m is None or not sar.is_file():
            log.warning("3mos: %s has no matching _sar.png (or is not SENSOR_scene_k_opt.png); skipped", opt)
            continue
        # The tiles of one montage (sensor and landscape) are cut from one figure: one place for splitting.
        out.append(SceneFiles(f"3mos/{opt.name[: -len('_opt.png')]}", "3mos", f"3mos/{m['sensor']}_{m['scene']}",
                              (opt,), (1, 2, 3), sar, sar_scale="db",
                              reference_shift=_reference(table.get(opt.name), "cfog_dx", "cfog_dy"), must_align=True))
    return out


# Not optical/SAR (README): Landsat NIR / optical, and false-colour / grey optical.
CHANGEDET_NOT_SAR = ("#1-Italy", "#4-Img17")


def _changedet(root: Path) -> list[SceneFiles]:
    out = []
    for mat in sorted(root.glob("*/*.mat")):
        if mat.stem in CHANGEDET_NOT_SAR:
            log.info("changedet: %s is not an optical/SAR pair; skipped", mat)
            continue
        sid = f"changedet/{mat.parent.name}/{mat.stem}"
        # In these repositories image_t1 is the SAR date and image_t2 the optical one.
        out.append(SceneFiles(sid, "changedet", sid, (mat,), (1, 2, 3), mat, sar_scale="db",
                              mat_keys=("image_t2", "image_t1"), change_mask=mat, change_key="Ref_gt", must_align=True))
    for sar in sorted(root.glob("*/*-A.tif")):
        stem = sar.name[: -len("-A.tif")]
        opt, mask = sar.with_name(f"{stem}-Bc.tif"), sar.with_name(f"{stem}-C.tif")
        if not (opt.is_file() and mask.is_file()):
            log.warning("changedet: %s has no %s-Bc.tif optical or %s-C.tif change mask; skipped", sar, stem, stem)
            continue
        sid = f"changedet/{sar.parent.name}/{stem}"
        out.append(SceneFiles(sid, "changedet", sid, (opt,), (1, 2, 3), sar, sar_scale="db", change_mask=mask,
                              must_align=True))
    return out


_FINDERS = {"terramind": _terramind, "bigearthnet": _bigearthnet, "sen1floods11": _sen1floods11,
            "ssl4eo-s12": _ssl4eo, "gefolki": _gefolki, "volkov-s1s2": _volkov, "3mos": _3mos,
            "changedet": _changedet}


def _by_prefix(entries: tuple[str, ...]) -> tuple[set[str], list[str]]:
    """Split ``--include``/``--exclude`` entries into whole sources and scene id starts (``SOURCE/...``)."""
    unknown = sorted(e for e in entries if e.split("/", 1)[0] not in SOURCES)
    if unknown:
        raise InputError(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)} "
                         "(include and exclude also take scene ids: SOURCE/...)")
    return {e for e in entries if e in SOURCES}, [e for e in entries if e not in SOURCES]


def find_scenes(data_dir, sources: tuple[str, ...] | None = None,
                exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[SceneFiles]:
    """Every scene pair's files under ``data_dir``, from ``sources`` (default: all) minus ``exclude``.

    A ``sources`` or ``exclude`` entry is a source name or the start of scene ids (e.g.
    ``ssl4eo-s12/0000200/s1-20200903``, ``volkov-s1s2/00``).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"--data-dir {data_dir}: folder not found; give the folder holding s1s2/ and gefolki/")
    whole, include = _by_prefix(tuple(sources or SOURCES))
    dropped, prefixes = _by_prefix(tuple(exclude or ()))
    wanted = [src for src in SOURCES if (src in whole or any(p.split("/", 1)[0] == src for p in include))
              and src not in dropped]
    scenes = []
    for source in wanted:
        root = data_dir / "gefolki" if source == "gefolki" else _source_root(data_dir, source)
        if root is None or not root.is_dir():
            log.info("%s: no folder under %s", source, data_dir)
            continue
        found = _FINDERS[source](root)
        if source not in whole:  # only the scenes asked for by id
            found = [s for s in found if any(s.scene_id.startswith(p) for p in include)]
        scenes.extend(found)
    for option, entries in (("include", include), ("exclude", prefixes)):
        for prefix in entries:
            if prefix.split("/", 1)[0] in wanted and not any(s.scene_id.startswith(prefix) for s in scenes):
                raise InputError(f"{option} {prefix!r} matches no scene under {data_dir}; give a source or a "
                                 "scene id start")
    scenes = [s for s in scenes if not any(s.scene_id.startswith(p) for p in prefixes)]
    if not scenes:
        raise InputError(
            f"--data-dir {data_dir}: no optical/SAR scene pair found for {', '.join(wanted) or 'no source'}; "
            "expected the folders (s1s2/<source>/, volkov-s1s2/, ...) laid out as described in "
            "geomatch.training.scene_files"
        )
    return scenes
