"""The cascade (CFOG proposes, RRL-Net decides) against CFOG, NCC and RRL-Net alone, on the same keypoints.

    nice python benchmarks/cascade.py validation   # chooses top_k and cascade_weight (volkov-s1s2 pairs)
    nice python benchmarks/cascade.py gefolki       # reports the chosen cascade beside the three others
    nice python benchmarks/cascade.py floors        # each matcher's score floor (validation pairs)
    nice python benchmarks/cascade.py floors_gefolki   # GeFolki with filter.min_score = "auto"
    nice python benchmarks/cascade.py ratios        # ncc's and cfog's max_ratio (cascade_ratios.py)

Writes benchmarks/cascade.json (both parts, merged) and benchmarks/cascade.md (its tables; `render` redoes
only that) and prints one row per matcher: kept points, median error, share under 1 px, network (or
patch-pair) evaluations per keypoint, match-stage seconds.

Validation material (never the reported pair): ``volkov-s1s2`` pairs ``VALIDATION``, their residual
misalignment measured by the project's own estimator (:func:`geomatch.training.scenes.align_scene`,
confirmed against the folder's table; then on the crop itself, ``matcher_tables.crop_shift``) and taken out,
then the SAR warped by a known affine ``WARP`` in the same single interpolation, so a tie point's truth is exact
up to the alignment estimate. The cascade's parameters are the ones with the most kept points under 1 px summed
over those pairs (ties: lower median).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

import numpy as np
import rasterio
from cascade_ratios import ratios, render_ratios  # the script's own folder is on sys.path
from rasterio.transform import from_origin

from geomatch import config
from geomatch.pipeline import run as run_mod
from geomatch.pipeline import thresholds

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("GEOMATCH_DATA", HERE.parents[1] / "shared" / "data"))
OUT = HERE / "cascade.json"
VALIDATION = ("volkov-s1s2/020", "volkov-s1s2/021")  # align_scene confident and within 0.3 px of the table
CROP = 448  # px, centred; the GeFolki pair's size
WARP = (1.5, 1.01, (5.3, -3.7))  # rotation deg, scale, shift px about the crop centre
TOP_K = (1, 2, 3)
WEIGHTS = (0.25, 0.5, 0.75)
BASELINES = {"ncc": {"match.plugin": "ncc"}, "cfog": {"match.plugin": "cfog"}, "rrlnet": {}}


def cascade_sets(top_k: int, weight: float) -> dict:
    return {"match.mode": "cascade", "match.proposer": "cfog", "match.top_k": top_k, "match.cascade_weight": weight}


@contextlib.contextmanager
def counted_evals():
    """A list that collects the tile stage's ``n_evals`` (not the coarse stage's quick pass) while inside."""
    evals: list = []
    inner = run_mod.match_points

    def counting(*a, **k):
        df = inner(*a, **k)
        evals.extend(df["n_evals"].tolist())
        return df

    run_mod.match_points = counting
    try:
        yield evals
    finally:
        run_mod.match_points = inner


def run_row(optical, sar, sets: dict, errors) -> dict:
    """One pipeline run; ``errors(kept tie points) -> their errors`` in SAR pixels."""
    cfg = config.load("default", {"write.plot": False, **sets})
    with counted_evals() as evals:
        res = run_mod.run_pipeline(str(optical), str(sar), cfg)
    kept = res.gdf[res.gdf["outlier"] == 0]
    err = np.asarray(errors(kept), float)
    return {"sets": sets, "found": int(len(res.gdf)), "kept": int(len(kept)),
            "median_px": float(np.median(err)) if len(err) else None,
            "within_1px": float(np.mean(err < 1.0)) if len(err) else None,
            "under_1px": int((err < 1.0).sum()),
            "evals_per_keypoint": float(np.mean(evals)) if evals else 0.0,
            "match_s": round(float(res.summary["timings_s"]["match"]), 2)}


def _write_tif(path: Path, data: np.ndarray) -> Path:
    data = data if data.ndim == 3 else data[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": "EPSG:32611", "transform": from_origin(500000, 3700000, 10, 10)}
    if data.dtype.kind == "f":
        profile["nodata"] = np.nan
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _affine(rot_deg, scale, shift, centre) -> np.ndarray:
    th = np.radians(rot_deg)
    lin = scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    c = np.asarray(centre, float)
    return np.vstack([np.hstack([lin, (c + np.asarray(shift) - lin @ c)[:, None]]), [0, 0, 1]])


def validation_pair(scene_id: str, tmp: Path):
    """(optical.tif, sar.tif, errors, record): the scene's centre crop, aligned, the SAR warped by WARP
    (matcher_tables' recipe for a volkov-s1s2 pair: its crop truth, no smooth field)."""
    from matcher_tables import build_pair  # it imports this module: not at the top

    pair = {"id": scene_id, "group": "volkov-s1s2", "crop": CROP, "field_px": 0.0, "seed": 0}
    optical, sar, errors, record, _ = build_pair(pair, tmp)  # InputError: the pair has no truth (say which)
    return optical, sar, errors, record


def validation() -> dict:
    rows = []
    configs = {**BASELINES, **{f"cascade k={k} w={wt}": cascade_sets(k, wt) for k, wt in product(TOP_K, WEIGHTS)}}
    for sid in VALIDATION:
        with tempfile.TemporaryDirectory() as tmp:
            optical, sar, errors, rec = validation_pair(sid, Path(tmp))
            for name, sets in configs.items():
                # volkov SAR is 8-bit display VH, already log-scaled: read as dB, as `dataset build` does.
                row = {"pair": sid, "alignment": rec, "row": name,
                       **run_row(optical, sar, {"pair.sar_scale": "db", **sets}, errors)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    cands = [n for n in configs if n.startswith("cascade")]

    def total(n, key):
        vals = [r[key] for r in rows if r["row"] == n and r[key] is not None]
        return sum(vals), (np.mean(vals) if vals else np.inf)

    chosen = max(cands, key=lambda n: (total(n, "under_1px")[0], -total(n, "median_px")[1]))
    return {"rows": rows, "chosen": chosen, "chosen_sets": configs[chosen],
            "rule": "most kept points under 1 px summed over the validation pairs; ties: lower mean median"}


def gefolki(chosen_sets: dict) -> dict:
    from gefolki_fixture import build_gefolki, gefolki_errors

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fix = build_gefolki(DATA, Path(tmp))

        def errors(kept):
            return gefolki_errors(fix, kept["ref_col"], kept["ref_row"], kept["tgt_col"], kept["tgt_row"])

        for name, sets in {**BASELINES, "cascade": chosen_sets}.items():
            row = {"row": name, **run_row(fix.optical, fix.sar, sets, errors)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"rows": rows}


FLOORS = tuple(round(f, 2) for f in np.arange(0.40, 0.801, 0.01))
SWEPT = ("ncc", "cfog")  # the classes that carry their own floor; rrlnet keeps the Matcher default


def _filtered(gdf, cfg, floor, errors, max_ratio=None) -> dict:
    """The run's points re-filtered at ``floor`` (all three levels redone, as the pipeline would)."""
    from dataclasses import replace

    from geomatch.pipeline.filters import flag_outliers

    filt = replace(cfg.filter, min_score=floor, **({} if max_ratio is None else {"max_ratio": max_ratio}))
    df, _ = flag_outliers(gdf.drop(columns=[c for c in ("outlier", "residual_px") if c in gdf]), filt)
    kept = df[df["outlier"] == 0]
    err = np.asarray(errors(kept), float)
    return {"floor": floor, "kept": int(len(kept)), "under_1px": int((err < 1.0).sum()),
            "median_px": float(np.median(err)) if len(err) else None,
            "within_1px": float(np.mean(err < 1.0)) if len(err) else None}


def sweep_row(optical, sar, sets: dict, errors) -> dict:
    """One run with no score floor, then every floor of FLOORS applied to its points."""
    cfg = config.load("default", {"write.plot": False, **sets, "filter.min_score": -1.0})
    with counted_evals() as evals:
        res = run_mod.run_pipeline(str(optical), str(sar), cfg)
    gdf = res.gdf
    if os.environ.get("CASCADE_KEEP"):  # the raw points, for looking further (e.g. at max_ratio) without rerunning
        keep = Path(os.environ["CASCADE_KEEP"])
        keep.mkdir(parents=True, exist_ok=True)
        n = len(list(keep.glob("*.pkl")))
        gdf.drop(columns="geometry", errors="ignore").to_pickle(keep / f"{n:02d}.pkl")
    auto = config.load("default", {k: v for k, v in sets.items() if k != "pair.sar_scale"}).filter.min_score
    ratio = gdf["ratio"].to_numpy(float)
    return {"sets": sets, "found": int(len(gdf)), "auto_floor": auto,
            "score_median": float(np.median(gdf["score"])), "ratio_median": float(np.median(ratio)),
            "ratio_over_max": float(np.mean(ratio > thresholds.resolve_max_ratio(cfg.filter.max_ratio, cfg.match))),
            "evals_per_keypoint": float(np.mean(evals)) if evals else 0.0,
            "match_s": round(float(res.summary["timings_s"]["match"]), 2),
            "sweep": [_filtered(gdf, cfg, f, errors) for f in FLOORS],
            "at_auto": _filtered(gdf, cfg, auto, errors),
            "at_auto_no_ratio": _filtered(gdf, cfg, auto, errors, max_ratio=1.0),
            "at_0.6": _filtered(gdf, cfg, 0.6, errors)}


def floors() -> dict:
    """Validation only: a floor per matcher from the sweep of one unfiltered run each."""
    prior = json.loads(OUT.read_text()) if OUT.is_file() else {}
    casc = prior.get("validation", {}).get("chosen_sets") or cascade_sets(2, 0.25)
    rows = []
    for sid in VALIDATION:
        with tempfile.TemporaryDirectory() as tmp:
            optical, sar, errors, rec = validation_pair(sid, Path(tmp))
            for name, sets in {**BASELINES, "cascade": casc}.items():
                row = {"pair": sid, "row": name, **sweep_row(optical, sar, {"pair.sar_scale": "db", **sets}, errors)}
                print(json.dumps({k: v for k, v in row.items() if k != "sweep"}), flush=True)
                rows.append(row)

    def total(name, floor):
        return sum(next(x for x in r["sweep"] if x["floor"] == floor)["under_1px"] for r in rows if r["row"] == name)

    # Rule: the floor keeping the most points under 1 px summed over the validation pairs; ties: the higher one.
    chosen = {n: max(FLOORS, key=lambda f, n=n: (total(n, f), f)) for n in (*BASELINES, "cascade")}
    return {"validation": rows, "chosen": chosen, "cascade_sets": casc, "floors": [FLOORS[0], FLOORS[-1], 0.01],
            "rule": "most kept points under 1 px summed over the validation pairs; ties: the higher floor"}


def floors_gefolki(casc: dict) -> list[dict]:
    """GeFolki, reported only: the four rows as a user runs them, filter.min_score = "auto"."""
    from gefolki_fixture import build_gefolki, gefolki_errors

    gef = []
    with tempfile.TemporaryDirectory() as tmp:
        fix = build_gefolki(DATA, Path(tmp))

        def gerr(kept):
            return gefolki_errors(fix, kept["ref_col"], kept["ref_row"], kept["tgt_col"], kept["tgt_row"])

        for name, sets in {**BASELINES, "cascade": casc}.items():
            row = {"row": name, "min_score": config.load("default", sets).filter.min_score,
                   **run_row(fix.optical, fix.sar, sets, gerr)}
            print(json.dumps(row), flush=True)
            gef.append(row)
    return gef


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("validation", "gefolki", "floors", "floors_gefolki", "ratios", "render"))
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    out = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if a.part == "render":
        OUT.with_suffix(".md").write_text(render(out))
        return
    t = time.perf_counter()
    if a.part == "validation":
        out["validation"] = validation()
    elif a.part == "floors":
        out["floors"] = floors()
    elif a.part == "ratios":
        out["ratios"] = ratios()
    elif a.part == "floors_gefolki":
        if "floors" not in out:
            raise SystemExit("run `benchmarks/cascade.py floors` first: the floors come from it")
        out["floors_gefolki"] = floors_gefolki(out["floors"]["cascade_sets"])
    else:
        if "validation" not in out:
            raise SystemExit("run `benchmarks/cascade.py validation` first: the cascade's parameters come from it")
        out["gefolki"] = gefolki(out["validation"]["chosen_sets"])
    out[f"{a.part}_command"] = f"nice python benchmarks/cascade.py {a.part}"
    out[f"{a.part}_seconds"] = round(time.perf_counter() - t, 1)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    OUT.with_suffix(".md").write_text(render(out))


def _table(rows: list[dict], label) -> list[str]:
    lines = ["| row | kept | median | under 1 px | evaluations / keypoint | match stage |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        med = "–" if r["median_px"] is None else f"{r['median_px']:.2f} px"
        share = "–" if r["within_1px"] is None else f"{100 * r['within_1px']:.0f} %"
        lines.append(f"| {label(r)} | {r['kept']} | {med} | {share} | {r['evals_per_keypoint']:.1f} | "
                     f"{r['match_s']:.1f} s |")
    return lines


def render(out: dict) -> str:
    lines = ["# Cascade benchmark (`benchmarks/cascade.py`)", "",
             "Written by the script from `cascade.json`. Evaluations per keypoint: patch-pair scores of the row's "
             "matcher; for `cfog` alone the offsets of its dense surface (one FFT pass, not patch pairs); for the "
             "cascade the network's scores only. Match stage: `timings_s.match` of the run, on the shared 2-core "
             "CPU (other jobs were running: compare rows of one table, not across tables).", ""]
    val = out.get("validation")
    if val:
        lines += [f"## Validation: choosing the cascade's parameters (`{out.get('validation_command')}`)", "",
                  f"Pairs {', '.join(VALIDATION)}: {CROP}x{CROP} centre crops, residual shift measured by "
                  f"`align_scene` and taken out, SAR warped by rotation {WARP[0]} deg, scale {WARP[1]}, shift "
                  f"{WARP[2]} px. Rule: {val['rule']}. Chosen: **{val['chosen']}**.", ""]
        for sid in VALIDATION:
            rows = [r for r in val["rows"] if r["pair"] == sid]
            if rows:
                rec = rows[0]["alignment"]
                lines += [f"### {sid} (alignment: measured {rec['measured_shift_px']} px, table "
                          f"{rec['reference_shift_px']} px, {rec['status']})", ""]
                lines += _table(rows, lambda r: r["row"]) + [""]
    gef = out.get("gefolki")
    if gef:
        lines += [f"## GeFolki warped pair (`{out.get('gefolki_command')}`)", "",
                  "Sentinel-2 against Sentinel-1 warped by the reference field (`gefolki_fixture.py`); the cascade "
                  "with the parameters chosen above.", ""]
        lines += _table(gef["rows"], lambda r: r["row"]) + [""]
    if val and gef:
        lines += ["## Default or option", "", "Rule (issue 9): the cascade becomes the default only if it beats both "
                  "classical rows on kept points AND median error on every pair, within 3x of NCC's match time.", ""]
        sets = [(sid, [r for r in val["rows"] if r["pair"] == sid], val["chosen"]) for sid in VALIDATION]
        verdicts = []
        for where, rows, name in [*sets, ("GeFolki", gef["rows"], "cascade")]:
            by = {r["row"]: r for r in rows}
            c = by[name]
            wins = all(c["kept"] > by[b]["kept"] and c["median_px"] < by[b]["median_px"] for b in ("ncc", "cfog"))
            slower = c["match_s"] / by["ncc"]["match_s"]
            verdicts.append(wins and slower <= 3)
            lines.append(f"- {where}: {'beats' if wins else 'does not beat'} both classical rows; match stage "
                         f"{slower:.1f}x NCC's, {by['rrlnet']['match_s'] / c['match_s']:.1f}x faster than RRL-Net.")
        lines += ["", "So it is the default." if all(verdicts) else
                  "So it ships as an option (`--set match.mode=cascade`), not as the default.", ""]
    return "\n".join(lines + _render_floors(out) + render_ratios(out))


def _render_floors(out: dict) -> list[str]:
    fl = out.get("floors")
    if not fl:
        return []
    lines = [f"## Score floors per matcher (`{out.get('floors_command')}`)", "",
             "`filter.min_score = \"auto\"` (the default) takes the matcher class's `min_score`; the cascade mixes its "
             "two floors by `cascade_weight` as it mixes the scores. One unfiltered run per row on the validation "
             f"pairs above, re-filtered (all three levels) at every floor {fl['floors'][0]}-{fl['floors'][1]} "
             f"step {fl['floors'][2]}. Rule: {fl['rule']}. Chosen: "
             + ", ".join(f"{n} {f:.2f}" for n, f in fl["chosen"].items())
             + f" (only {', '.join(SWEPT)} set a floor of their own; rrlnet keeps the Matcher default). "
             "`ratio > max` is the share of found points that fail the ambiguity test (`max_ratio`); `no ratio` "
             "the kept points at the auto floor with that test off. The sections above were recorded with the shared "
             "floor 0.6 for every matcher (the `at 0.6` column).", "",
             "| pair | row | floor (auto) | kept | median | under 1 px | at 0.6: kept / median / under 1 px | "
             "score median | ratio median | ratio > max | no ratio: kept / under 1 px |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in fl["validation"]:
        a, b, c = r["at_auto"], r["at_0.6"], r["at_auto_no_ratio"]
        med = lambda x: "–" if x["median_px"] is None else f"{x['median_px']:.2f} px"  # noqa: E731
        lines.append(f"| {r['pair']} | {r['row']} | {r['auto_floor']:.3f} | {a['kept']} | {med(a)} | "
                     f"{a['under_1px']} | {b['kept']} / {med(b)} / {b['under_1px']} | {r['score_median']:.3f} | "
                     f"{r['ratio_median']:.3f} | {100 * r['ratio_over_max']:.0f} % | {c['kept']} / {c['under_1px']} |")
    gef = out.get("floors_gefolki")
    if gef:
        lines += ["", f"GeFolki warped pair at `filter.min_score = \"auto\"` (`{out.get('floors_gefolki_command')}`; "
                  "reported, never used to choose):", ""]
        lines += _table(gef, lambda r: f"{r['row']} (floor {r['min_score']:.3f})")
    lines += ["", "Against NCC and the default (rrlnet), on kept points AND median error, at the auto floors:", ""]
    where = [(sid, {r["row"]: r["at_auto"] | {"match_s": r["match_s"]} for r in fl["validation"] if r["pair"] == sid})
             for sid in VALIDATION]
    where += [("GeFolki", {r["row"]: r for r in gef})] if gef else []
    for name, by in where:
        for cand in ("cfog", "cascade"):
            c = by[cand]
            lost = [b for b in ("ncc", "rrlnet")
                    if not (c["kept"] > by[b]["kept"] and c["median_px"] < by[b]["median_px"])]
            lines.append(f"- {name}: {cand} {'beats both' if not lost else 'does not beat ' + ' nor '.join(lost)} "
                         f"(kept {c['kept']} vs {by['ncc']['kept']} / {by['rrlnet']['kept']}, median "
                         f"{c['median_px']:.2f} vs {by['ncc']['median_px']:.2f} / {by['rrlnet']['median_px']:.2f} px; "
                         f"match stage {c['match_s'] / by['ncc']['match_s']:.1f}x NCC's)")
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
