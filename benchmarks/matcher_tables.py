"""Issue 9's matcher tables: NCC, CFOG, RRL-Net and the cascade on held-out pairs with exact truth.

    nice env OMP_NUM_THREADS=1 python benchmarks/matcher_tables.py       # every missing cell, then the md
    ... --only-rows ncc,cfog --only-pairs 3mos,volkov-s1s2/021          # names, their starts, or groups
    ... --row rrlnet-new=match.weights=runs/x/best.pt[,match.top_k=3]   # one more row (kept for later runs)
    ... --fresh --only-rows ncc                                          # recompute cached cells (code changed)
    python benchmarks/matcher_tables.py --render                         # the md from the json only

benchmarks/matcher_tables.json holds one cell per pair and row, keyed by the pair's recipe, the row's resolved
config, its matcher classes' score floor and ambiguity ceiling and its weights' sha256: a rerun computes only
missing or changed cells (--fresh: code changed). The md is written from it. Pairs, all held out by the lead's
patch set (``preset.scenes`` of data/osar2/manifest.json): volkov-s1s2 validation scenes (448 px centre crops),
3mos test tiles (256 px, at most six, sensors alternating), changedet test scenes (512 px centre crops; errors
on unchanged ground only), each with its residual shift measured by ``align_scene`` (on the crop itself when it
is part of a larger scene: ``crop_shift``) taken out and the SAR warped
by cascade.py's affine (volkov) or that affine plus a smooth field (3mos, changedet) in one interpolation, so
the truth is exact up to the alignment estimate; the GeFolki warped pair (exact field). Measures: ``run_row``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from scipy import ndimage as ndi
from scipy.io import loadmat

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cascade import DATA, WARP, _affine, _write_tif, run_row  # noqa: E402

from geomatch import config, config_text, registry  # noqa: E402
from geomatch.errors import InputError  # noqa: E402
from geomatch.fileio import sha256_file  # noqa: E402
from geomatch.models.weights import resolve_weights  # noqa: E402

OUT = HERE / "matcher_tables.json"
MANIFEST = HERE.parent / "data" / "osar2" / "manifest.json"
GSD = HERE / "gsd.json"
RECIPE = 1  # bump when a pair's construction changes: every cell is recomputed
CROPS = {"volkov-s1s2": 448, "3mos": 256, "changedet": 512}
# Groups whose crop is part of a larger scene: their truth is the crop's own shift (``crop_shift``); 3mos tiles are
# their whole 256 px scene, so their truth is unchanged (and so are their cached cells).
CROP_ALIGNED = ("volkov-s1s2", "changedet")
FIELD_PX = {"volkov-s1s2": 0.0, "3mos": 2.0, "changedet": 2.0}  # smooth field amplitude (volkov: cascade.py's warp)
GROUPS = {"gefolki": "GeFolki warped pair", "volkov-s1s2": "volkov-s1s2 validation scenes, alignment corrected",
          "3mos": "3mos test tiles, synthetic warp", "changedet": "changedet test scenes, synthetic warp"}
BUILTIN_ROWS = {**{n: {"match.mode": "search", "match.plugin": n} for n in ("ncc", "cfog", "rrlnet")},
                "cascade": {"match.mode": "cascade", "match.plugin": "rrlnet"}}  # top_k, weight: the config's
CLASSICAL, TIME_LIMIT = ("ncc", "cfog"), 3.0  # the default must beat both, within 3x NCC's match stage
TABLE_HEAD = ("| row | kept | median | under 1 px | evaluations / keypoint | match stage |", "|---|" + "---:|" * 5)


@dataclass(frozen=True)
class SyntheticWarp:
    """Optical crop pixel p -> SAR crop pixel T(p) = A p + f(p) (GDAL pixel-centre coordinates); ``waves``
    rows (kx, ky, phase, ax, ay) make f, a sum of plane sine waves (k in cycles per pixel)."""

    affine: np.ndarray
    waves: np.ndarray

    def field(self, x, y):
        xy = np.stack([np.asarray(x, float), np.asarray(y, float)], -1)
        s = np.sin(2 * np.pi * xy @ self.waves[:, :2].T + self.waves[:, 2])
        return s @ self.waves[:, 3], s @ self.waves[:, 4]

    def forward(self, x, y):
        fx, fy = self.field(x, y)
        ax, ay = _apply(self.affine, x, y)
        return ax + fx, ay + fy

    def inverse(self, qx, qy, iterations: int = 30):
        """p with T(p) = q: p = A^-1 (q - f(p)) by fixed-point iteration (f's slope is ~0.05, so it contracts)."""
        inv, px, py = np.linalg.inv(self.affine), qx, qy
        for _ in range(iterations):
            fx, fy = self.field(px, py)
            px, py = _apply(inv, qx - fx, qy - fy)
        return px, py


def _apply(m: np.ndarray, x, y):
    return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]


def make_warp(size: int, amplitude: float, seed: int, waves: int = 3) -> SyntheticWarp:
    """cascade.py's affine about the crop centre, plus (amplitude > 0) a field of ``waves`` plane waves of
    wavelength 1-2 crop sizes, scaled so its largest displacement over the crop is ``amplitude`` px."""
    a = _affine(WARP[0], WARP[1], WARP[2], (size / 2, size / 2))
    if amplitude <= 0:
        return SyntheticWarp(a, np.zeros((0, 5)))
    rng = np.random.default_rng(seed)
    theta, wavelength = rng.uniform(0, 2 * np.pi, waves), rng.uniform(1.0, 2.0, waves) * size
    w = np.column_stack([np.cos(theta) / wavelength, np.sin(theta) / wavelength, rng.uniform(0, 2 * np.pi, waves),
                         rng.normal(size=waves), rng.normal(size=waves)])
    fx, fy = SyntheticWarp(a, w).field(*np.meshgrid(*[np.arange(0.5, size, 4.0)] * 2))
    w[:, 3:] *= amplitude / np.hypot(fx, fy).max()
    return SyntheticWarp(a, w)


def warp_sar(sar: np.ndarray, offset, shift, warp: SyntheticWarp, size: int) -> np.ndarray:
    """The SAR crop in which optical crop pixel p sits at warp.forward(p): the SAR sampled (cubic) at T^-1(q) +
    crop ``offset`` (row, col) + residual ``shift`` (dx, dy: optical p sits at SAR p + shift); NaN off the source."""
    (h, w), (rows, cols) = sar.shape, np.mgrid[0:size, 0:size]
    px, py = warp.inverse(cols.ravel() + 0.5, rows.ravel() + 0.5)
    src = np.stack([py + offset[0] + shift[1] - 0.5, px + offset[1] + shift[0] - 0.5])
    out = ndi.map_coordinates(sar, src, order=3, mode="constant", cval=np.nan).reshape(size, size)
    inside = ((src[0] >= 0) & (src[0] <= h - 1) & (src[1] >= 0) & (src[1] <= w - 1)).reshape(size, size)
    return np.where(inside, np.clip(out, 0, 255), np.nan).astype(np.float32)


def held_out(manifest: Path) -> dict[str, list[str]]:
    try:
        scenes = json.loads(manifest.read_text())["preset"]["scenes"]
        return {"val": list(scenes["val"]), "test": list(scenes["test"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{manifest}: no preset.scenes.val/test ({exc!r}); build the patch set first "
                         "(geomatch dataset build ...) or give --manifest PATH") from exc


def pick_3mos(ids: list[str], n: int = 6) -> list[str]:
    """At most ``n`` tiles, sensors alternating, each sensor's landscapes alternating (sorted, deterministic)."""
    by_sensor: dict[str, dict[str, list[str]]] = {}
    for sid in sorted(ids):
        sensor, land = sid.split("/", 1)[1].split("_")[:2]
        by_sensor.setdefault(sensor, {}).setdefault(land, []).append(sid)
    queues = [_round_robin(list(lands.values())) for _, lands in sorted(by_sensor.items())]
    return _round_robin(queues)[:n]


def _round_robin(lists: list[list]) -> list:
    return [x[i] for i in range(max(map(len, lists), default=0)) for x in lists if i < len(x)]


def list_pairs(manifest: Path) -> list[dict]:
    """The pairs' recipes (what the cache keys on): id, group, crop, field amplitude and seed."""
    split = held_out(manifest)
    ids = [s for s in split["val"] if s.startswith("volkov-s1s2/")] + pick_3mos(
        [s for s in split["test"] if s.startswith("3mos/")]) + [s for s in split["test"] if s.startswith("changedet/")]
    pairs = [{"id": "gefolki/patch11", "group": "gefolki", "recipe": RECIPE}]
    for sid in ids:
        group = sid.split("/", 1)[0]
        pairs.append({"id": sid, "group": group, "recipe": RECIPE, "crop": CROPS[group], "warp": list(WARP[:2]) +
                      [list(WARP[2])], "field_px": FIELD_PX[group], "seed": zlib.crc32(sid.encode()),
                      **({"truth": "crop shift"} if group in CROP_ALIGNED else {})})
    return pairs


def _raw_arrays(files):
    """(optical (h, w, 3) uint8, SAR band (h, w) float32) as stored: what the written crops carry."""
    if files.mat_keys:
        opt, sar = (np.asarray(loadmat(files.optical[0])[k]) for k in files.mat_keys)
    elif files.optical[0].suffix == ".png":
        opt, sar = np.asarray(Image.open(files.optical[0]).convert("RGB")), np.asarray(Image.open(files.sar))
    else:
        with rasterio.open(files.optical[0]) as a, rasterio.open(files.sar) as b:  # not georeferenced: warns
            opt, sar = np.moveaxis(a.read(list(files.optical_bands)), 0, 2), b.read(files.sar_band)
    opt = np.repeat(opt[..., None], 3, 2) if opt.ndim == 2 else opt[..., :3]
    sar = sar[..., files.sar_band - 1] if sar.ndim == 3 else sar
    return opt, sar.astype(np.float32)


def build_pair(pair: dict, tmp: Path):
    """(optical.tif, sar.tif, errors(kept) -> errors on scored ground, record, extra config) for one recipe."""
    if pair["group"] == "gefolki":
        from gefolki_fixture import build_gefolki, gefolki_errors

        fix, cols = build_gefolki(DATA, tmp), ("ref_col", "ref_row", "tgt_col", "tgt_row")
        return fix.optical, fix.sar, lambda k: gefolki_errors(fix, *(k[c] for c in cols)), {}, {}
    from geomatch.training.scene_files import find_scenes
    from geomatch.training.scenes import TRUSTED, align_scene, load_scene

    files = next(f for f in find_scenes(DATA, (pair["id"],)) if f.scene_id == pair["id"])
    scene = load_scene(files, align=False)  # valid: both images valid and (changedet) unchanged ground
    _, _, rec = align_scene(scene.optical, scene.valid, scene.sar, scene.valid, reference=files.reference_shift,
                            confirm=True)
    if rec["status"] not in TRUSTED:
        raise InputError(f"{pair['id']}: residual shift not established ({rec['status']}); no exact truth")
    (opt, sar), size = _raw_arrays(files), pair["crop"]
    if min(sar.shape) < size or opt.shape[:2] != sar.shape:
        raise InputError(f"{pair['id']}: images {opt.shape[:2]} / {sar.shape} smaller than the {size} px crop")
    o = ((sar.shape[0] - size) // 2, (sar.shape[1] - size) // 2)
    shift, rec = crop_shift(pair["id"], scene, o, size, rec)
    warp = make_warp(size, pair["field_px"], pair["seed"])
    optical = _write_tif(tmp / "optical.tif", np.moveaxis(opt[o[0]:o[0] + size, o[1]:o[1] + size], 2, 0).copy())
    sar_tif = _write_tif(tmp / "sar.tif", warp_sar(sar, o, shift, warp, size))
    ground = scene.valid[o[0]:o[0] + size, o[1]:o[1] + size]

    def errors(kept):
        x, y = kept["ref_col"].to_numpy(float), kept["ref_row"].to_numpy(float)
        on = ground[np.clip(y.astype(int), 0, size - 1), np.clip(x.astype(int), 0, size - 1)]
        tx, ty = warp.forward(x[on], y[on])
        return np.hypot(kept["tgt_col"].to_numpy(float)[on] - tx, kept["tgt_row"].to_numpy(float)[on] - ty)

    record = {**{k: rec[k] for k in ("measured_shift_px", "reference_shift_px", "status", "crop_shift_px") if k in rec},
              "scored_ground": round(float(ground.mean()), 4)}
    return optical, sar_tif, errors, record, {"pair.sar_scale": files.sar_scale}


def crop_shift(scene_id: str, scene, o: tuple[int, int], size: int, rec: dict) -> tuple[np.ndarray, dict]:
    """The residual shift that is the truth of the ``size`` px crop at ``o`` (row, col), and ``rec`` with it.

    A crop smaller than its scene gets its own shift (``scenes.region_shift``: the scene's need not hold there;
    on the volkov validation crops they differ by 0.1-4.5 px); a crop whose corners disagree has no translation
    truth and is refused (InputError: the pair is skipped and reported). A crop that is the whole scene keeps the
    scene's trusted shift."""
    from geomatch.training.scenes import region_shift

    if scene.optical.shape[0] <= size and scene.optical.shape[1] <= size:
        return np.asarray(rec["measured_shift_px"], float), rec
    win = (slice(o[0], o[0] + size), slice(o[1], o[1] + size))
    shift, crop = region_shift(scene.optical[win], scene.valid[win], scene.sar[win], scene.valid[win])
    if shift is None:
        raise InputError(f"{scene_id}: the {size} px crop has no single residual shift (corners "
                         f"{crop['corner_shifts_px']} against {crop['region_shift_px']}); no exact truth")
    return shift, {**rec, "crop_shift_px": crop["region_shift_px"], "crop_alignment": crop}


def parse_row(text: str) -> tuple[str, dict]:
    """``NAME=STAGE.KEY=VALUE[,STAGE.KEY=VALUE...]`` -> (name, overrides)."""
    name, _, sets = text.partition("=")
    if not name or not sets:
        raise InputError(f"--row {text!r}: expected NAME=STAGE.KEY=VALUE[,...], e.g. rrlnet-new=match.weights=PATH")
    return name, config_text.parse_set_options(sets.split(","), "--row")


def row_identity(sets: dict) -> dict:
    """The row's resolved config (no pair settings) and its weights' sha256: what its cells are keyed on."""
    cfg = config.load("default", {"write.plot": False, **sets})
    resolved = resolve_weights(cfg.match.plugin, cfg.match.weights)
    sha = None if resolved is None else (resolved.sha256 or sha256_file(resolved.path))
    d = {k: v for k, v in cfg.as_dict().items() if k != "description"}
    # The classes' own score floor and ambiguity ceiling: "auto" in the config resolves to them at run time.
    classes = dict.fromkeys([cfg.match.plugin, *([cfg.match.proposer] if cfg.match.mode == "cascade" else [])])
    limits = {n: [getattr(registry.load("matchers", n), k, None) for k in ("min_score", "max_ratio")] for n in classes}
    return {"config": d, "class_limits": limits, "weights": None if resolved is None else resolved.tag,
            "weights_sha256": sha}


def cell_key(pair: dict, identity: dict) -> str:
    blob = json.dumps({"pair": pair, **{k: v for k, v in identity.items() if k != "weights"}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_row(identities: dict[str, dict]) -> str | None:
    """The row that resolves to what ``pipelines/default.toml`` gives (the shipped default), if any."""
    target = row_identity({})
    return next((n for n, i in identities.items() if i == {**target, "weights": i["weights"]}), None)


def _wanted(name: str, only: list[str] | None, group: str = "") -> bool:  # a name, its start or its group
    return not only or any(name.startswith(o) or group.startswith(o) for o in only)


def compute(out: dict, pairs: list[dict], rows: dict[str, dict], only_pairs, only_rows, command: str,
            fresh: bool = False) -> None:
    idents = {n: row_identity(s) for n, s in rows.items()}
    out["rows"] = {n: {"sets": rows[n], **{k: v for k, v in i.items() if k != "config"}} for n, i in idents.items()}
    out.update(default_row=default_row(idents), pair_order=[p["id"] for p in pairs])
    cells = out.setdefault("cells", {})
    for pair in pairs:
        for n in rows:  # a cached cell whose key no longer matches is shown as stale until recomputed
            if (c := cells.get(f"{pair['id']}|{n}")) is not None:
                c["stale"] = c.get("key") != cell_key(pair, idents[n])
        todo = [n for n in rows if _wanted(n, only_rows) and _wanted(pair["id"], only_pairs, pair["group"])
                and (fresh or cells.get(f"{pair['id']}|{n}", {}).get("key") != cell_key(pair, idents[n]))]
        if not todo:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                optical, sar, errors, record, extra = build_pair(pair, Path(tmp))
            except InputError as exc:  # no exact truth for this pair (e.g. its crop has no single shift): say so
                out.setdefault("pairs", {})[pair["id"]] = {**pair, "skipped": str(exc)}
                for n in rows:
                    cells.pop(f"{pair['id']}|{n}", None)
                print(json.dumps({"pair": pair["id"], "skipped": str(exc)}), flush=True)
                OUT.write_text(json.dumps(out, indent=1) + "\n")
                continue
            out.setdefault("pairs", {})[pair["id"]] = {**pair, "alignment": record}
            for name in todo:
                scored = []  # the errors run_row asked for: their count is the kept points on scored ground
                cell = run_row(optical, sar, {**extra, **rows[name]},
                               lambda k, e=errors, s=scored: s.append(e(k)) or s[-1])
                cell.update(kept_all=cell["kept"], kept=len(scored[-1]), key=cell_key(pair, idents[name]),
                            weights_sha256=idents[name]["weights_sha256"], command=command,
                            when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                cells[f"{pair['id']}|{name}"] = cell
                print(json.dumps({"pair": pair["id"], "row": name, **cell}), flush=True)
                OUT.write_text(json.dumps(out, indent=1) + "\n")  # a long run keeps what it finished


def verdict(by_row: dict[str, dict], name: str) -> dict | None:
    """Issue 9's rule on one pair for row ``name``: more kept points AND a lower median error than each classical
    row (no kept point, no median: it loses on kept), match stage within 3x NCC's. None while a cell is missing."""
    if any(n not in by_row for n in (name, *CLASSICAL)):
        return None
    c = by_row[name]
    lost = [b for b, o in ((b, by_row[b]) for b in CLASSICAL)
            if c["kept"] <= o["kept"] or (o["median_px"] is not None and c["median_px"] >= o["median_px"])]
    ratio = c["match_s"] / max(by_row["ncc"]["match_s"], 1e-9)
    return {"lost_to": lost, "time_ratio": ratio, "passes": not lost and ratio <= TIME_LIMIT}


def _fmt(r: dict) -> list[str]:
    med = "–" if r["median_px"] is None else f"{r['median_px']:.2f} px"
    share = "–" if r["within_1px"] is None else f"{100 * r['within_1px']:.0f} %"
    kept = str(r["kept"]) + (f" of {r['kept_all']}" if r.get("kept_all", r["kept"]) != r["kept"] else "")
    return [kept, med, share, f"{r['evals_per_keypoint']:.1f}", f"{r['match_s']:.1f} s"]


def _command(group: str, out: dict) -> str:
    extra = "".join(f" --row {n}=" + ",".join(f"{k}={v}" for k, v in r["sets"].items())
                    for n, r in out.get("rows", {}).items() if n not in BUILTIN_ROWS)
    return f"nice env OMP_NUM_THREADS=1 python benchmarks/matcher_tables.py --only-pairs {group}{extra}"


def render(out: dict) -> str:
    rows, cells, pairs = list(out.get("rows", {})), out.get("cells", {}), out.get("pairs", {})
    dflt = out.get("default_row")
    lines = ["# Matcher tables (`benchmarks/matcher_tables.py`)", "",
             "Written by the script from `matcher_tables.json` (its docstring: how the pairs are built). Kept: points "
             "the filters keep (changedet: `N of M`, the N on unchanged ground, the only ones scored, of M kept). "
             "Median and share under 1 px: error against the exact truth. Evaluations per keypoint: the "
             "matcher's patch-pair scores (cfog: offsets of its dense surface; cascade: the network's only). Match "
             "stage: `timings_s.match`, on the shared 2-core CPU with other jobs running: compare rows of one "
             "table, not across tables. `–`: no kept point; a missing row: not run yet (the command fills it); "
             "`stale`: its row's config or weights changed since (left out of the verdict). A time ratio is only "
             "meaningful between cells of one run on a quiet machine (`--fresh --only-pairs PAIR`).", "",
             "Rows: " + "; ".join(f"`{n}` = `{r['sets']}`" + (f" (weights {r['weights']}, sha256 "
                                                              f"{r['weights_sha256'][:12]})" if r["weights"] else "")
                                  for n, r in out.get("rows", {}).items()) + ".", ""]
    for group, title in GROUPS.items():
        ids = [p for p in out.get("pair_order", pairs) if p in pairs and pairs[p]["group"] == group]
        if not ids:
            continue
        lines += [f"## {title}", "", f"`{_command(group, out)}`", ""]
        for pid in ids:
            p, rec = pairs[pid], pairs[pid].get("alignment")
            if "skipped" in p:
                lines += [f"### {pid}: not scored", "", p["skipped"], ""]
                continue
            crop = f", the crop's own: {rec['crop_shift_px']} px (truth)" if rec and "crop_shift_px" in rec else ""
            about = "" if not rec else (f" (crop {p['crop']} px, field {p['field_px']} px; scene alignment "
                                        f"{rec['status']}: {rec['measured_shift_px']} px, table: "
                                        f"{rec['reference_shift_px'] or 'none'}{crop})")
            lines += [f"### {pid}{about}", "", *TABLE_HEAD]
            for n, c in ((n, cells[f"{pid}|{n}"]) for n in rows if f"{pid}|{n}" in cells):
                tags = " (default)" * (n == dflt) + " (stale: rerun)" * bool(c.get("stale"))
                lines.append(f"| {n}{tags} | " + " | ".join(_fmt(c)) + " |")
            lines.append("")
    lines += _render_gsd() + _render_verdict(out)
    return "\n".join(lines)


def _render_gsd() -> list[str]:
    data = json.loads(GSD.read_text()) if GSD.is_file() else {}
    lines = ["## Resampled pairs at 3.3 m and 1 m", ""]
    if not data.get("pairs"):
        return lines + ["Not filled: `benchmarks/gsd.py` (helper \"gsd\") writes `benchmarks/gsd.json`; `--render` "
                        "shows its pairs here.", ""]
    lines += [f"Read from `benchmarks/gsd.json` (`{data.get('command')}`; complete: {data.get('complete')}): the "
              "default pipeline's patch-scale rows (native, auto), then ncc, cfog and RRL-Net alone (its md has more "
              "columns); errors in pixels of that pair.", ""]
    for p in data["pairs"]:
        lines += [f"### GeFolki at {p['gsd_m']:.3g} m (x{p['factor']})", "", *TABLE_HEAD]
        for r in p["rows"]:
            med = r["median_native_px"]
            lines.append(f"| {r['row']} | " + " | ".join(_fmt({**r, "median_px": med and med * p["factor"]})) + " |")
        lines.append("")
    return lines


def _render_verdict(out: dict) -> list[str]:
    """The rule for the default row, then (for comparison) for every other non-classical row; the runs."""
    dflt, cells = out.get("default_row"), out.get("cells", {})
    lines = ["## Verdict", "", f"Rule (issue 9): the default must beat both classical rows ({', '.join(CLASSICAL)}) "
             f"on kept points AND median error on every pair, with a match stage within {TIME_LIMIT:g}x NCC's. "
             + (f"`pipelines/default.toml` resolves to row `{dflt}`." if dflt else
                "No row resolves to `pipelines/default.toml`: add one (`--row default=match.plugin=...`)."), ""]
    pairs = out.get("pairs", {})
    scored = [p for p in out.get("pair_order", []) if p in pairs and "skipped" not in pairs[p]]
    skipped = [p for p, d in pairs.items() if "skipped" in d]
    for name in sorted((n for n in out.get("rows", {}) if n not in CLASSICAL), key=lambda n: n != dflt):
        lines += [f"### {name}{' (the default)' if name == dflt else ''}: figures {name} / ncc / cfog", ""]
        results = []
        for pid in scored:
            by = {n: c for n in out["rows"] if (c := cells.get(f"{pid}|{n}")) and not c.get("stale")}
            results.append(v := verdict(by, name))
            if v is not None:
                won = "beats both" if not v["lost_to"] else "does not beat " + " nor ".join(v["lost_to"])
                k, m = (" / ".join(_fmt(by[n])[i] for n in (name, *CLASSICAL)) for i in (0, 1))
                apart = " (timed in another run than ncc's)" * (by[name]["command"] != by["ncc"]["command"])
                lines.append(f"- {pid}: {won} (kept {k}; median {m}); match stage {v['time_ratio']:.1f}x NCC's"
                             f"{apart} -> " + ("passes" if v["passes"] else "fails"))
        done = [v for v in results if v is not None]
        failed, todo = sum(not v["passes"] for v in done), len(results) - len(done)
        state = (f"fails on {failed} of {len(done)} pairs run" if failed else f"passes on all {len(done)} pairs run"
                 if done else "not run yet") + (f"; {todo} pairs not run yet" if todo and done else "")
        lines += ["", f"{name}: {state}" + (f"; not scored (no exact truth): {', '.join(skipped)}" if skipped else "")
                  + ".", ""]
    runs = sorted({(c["command"], c["when"][:10]) for c in cells.values()})
    return lines + ["## Runs that filled the cells", ""] + [f"- `{cmd}` ({day})" for cmd, day in runs] + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", action="append", default=[], metavar="NAME=STAGE.KEY=VALUE[,...]")
    for only in ("--only-rows", "--only-pairs"):  # comma-separated names, their starts or (pairs) groups
        ap.add_argument(only, type=lambda s: s.split(","))
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--render", action="store_true", help="rewrite the md from the json, run nothing")
    ap.add_argument("--fresh", action="store_true", help="recompute the selected cells, cached or not (code changed)")
    a = ap.parse_args(argv)
    out = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if not a.render:
        try:
            rows = {**BUILTIN_ROWS, **{n: r["sets"] for n, r in out.get("rows", {}).items() if n not in BUILTIN_ROWS},
                    **dict(parse_row(r) for r in a.row)}
            omp = os.environ.get("OMP_NUM_THREADS", "(unset)")
            command = (f"{'nice ' * bool(os.nice(0))}env OMP_NUM_THREADS={omp} python benchmarks/matcher_tables.py "
                       + " ".join(argv or sys.argv[1:]))
            compute(out, list_pairs(a.manifest), rows, a.only_pairs, a.only_rows, command.strip(), a.fresh)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        OUT.write_text(json.dumps(out, indent=1) + "\n")
    OUT.with_suffix(".md").write_text(render(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
