"""A network's score floor and ambiguity ceiling, and the default pipeline, chosen on validation pairs only.

    nice python benchmarks/network_thresholds.py --weights runs/x/calibrated.pt [--out FILE.json]

Why: calibrated weights (``geomatch models calibrate``) put the network's scores on a probability scale, where
the shared 0.6 floor and 0.95 ceiling mean something else than on the saturated scores they were set for. The
pairs are ``cascade_ratios.RATIO_VALIDATION`` (the volkov-s1s2 scenes of the optical-SAR patch set's val
split), each prepared by :func:`cascade.validation_pair`. Per pair and row (RRL-Net alone, the cascade): one
run with both tests off (floor -1, ceiling 1), its points re-filtered (all levels) at every (floor, ceiling) of
``FLOORS`` x ``CEILINGS``. Rule: the most kept points under 1 px summed over the pairs; ties: the higher floor,
then the lower ceiling. The classical rows (ncc, cfog) run at their own "auto" thresholds for the comparison
that decides the default: a candidate must beat both on kept points AND median error summed/median over the
pairs (the issue's rule, applied to validation pairs, never to a reported pair).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from itertools import product
from pathlib import Path

import numpy as np
from cascade import _filtered, run_mod, validation_pair
from cascade_ratios import RATIO_VALIDATION

from geomatch import config
from geomatch.pipeline import thresholds

FLOORS = tuple(round(f, 2) for f in np.arange(0.0, 0.91, 0.05))
CEILINGS = (0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
HERE = Path(__file__).resolve().parent


def _run(optical, sar, sets: dict):
    cfg = config.load("default", {"write.plot": False, **sets})
    res = run_mod.run_pipeline(str(optical), str(sar), cfg)
    evals = float(res.gdf["n_evals"].mean()) if "n_evals" in res.gdf and len(res.gdf) else 0.0
    return cfg, res, evals


def validation_pairs(with_3mos: int):
    """(scene id, builder(tmp) -> (optical, sar, errors, extra config)): the volkov-s1s2 validation scenes, then
    up to ``with_3mos`` 3mos tiles of the patch set's val split (other sensors; synthetic warp + field, as
    matcher_tables.py builds its test tiles)."""
    out = [(sid, lambda tmp, sid=sid: (*validation_pair(sid, tmp)[:3], {"pair.sar_scale": "db"}))
           for sid in RATIO_VALIDATION]
    if with_3mos:
        import matcher_tables as mt

        split = mt.held_out(mt.MANIFEST)
        for sid in mt.pick_3mos([s for s in split["val"] if s.startswith("3mos/")], with_3mos):
            pair = {"id": sid, "group": "3mos", "recipe": mt.RECIPE, "crop": mt.CROPS["3mos"],
                    "warp": list(mt.WARP[:2]) + [list(mt.WARP[2])], "field_px": mt.FIELD_PX["3mos"],
                    "seed": mt.zlib.crc32(sid.encode())}

            def build(tmp, pair=pair):
                optical, sar, errors, _, extra = mt.build_pair(pair, tmp)
                return optical, sar, errors, extra

            out.append((sid, build))
    return out


def built_pairs(with_3mos: int = 0):
    """(scene id, optical, sar, errors, extra config) of each validation pair of :func:`validation_pairs`, built
    in a temporary folder that lasts until the next pair; a pair that cannot be built is reported and skipped."""
    for sid, build in validation_pairs(with_3mos):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                optical, sar, errors, extra = build(Path(tmp))
            except Exception as exc:  # a tile without an established shift has no truth: say so, go on
                print(json.dumps({"pair": sid, "skipped": str(exc)}), flush=True)
                continue
            yield sid, optical, sar, errors, extra


def network_rows(weights: str) -> dict:
    net = {"match.plugin": "rrlnet", "match.weights": weights}
    return {"rrlnet": {**net, "match.mode": "search"},
            "cascade": {**net, "match.mode": "cascade", "match.cascade_verify": "block"},
            "cascade-peak": {**net, "match.mode": "cascade", "match.cascade_verify": "peak"}}


def collect(weights: str, with_3mos: int = 0, names=("rrlnet", "cascade"), extra=None) -> list[dict]:
    rows = {**{k: v for k, v in network_rows(weights).items() if k in names}, **(extra or {})}
    out = []
    for sid, optical, sar, errors, extra in built_pairs(with_3mos):
        for name in ("ncc", "cfog"):
            cfg, res, evals = _run(optical, sar, {**extra, "match.plugin": name})
            floor = thresholds.resolve_min_score(cfg.filter.min_score, cfg.match)
            ceiling = thresholds.resolve_max_ratio(cfg.filter.max_ratio, cfg.match)
            out.append({"pair": sid, "row": name, "match_s": res.summary["timings_s"]["match"],
                        "evals": evals, "auto": _filtered(res.gdf, cfg, floor, errors, max_ratio=ceiling)})
            print(json.dumps({k: v for k, v in out[-1].items()}), flush=True)
        for name, sets in rows.items():
            cfg, res, evals = _run(optical, sar, {**extra, **sets, "filter.min_score": -1.0,
                                                  "filter.max_ratio": 1.0})
            grid = [{**_filtered(res.gdf, cfg, f, errors, max_ratio=c), "max_ratio": c}
                    for f, c in product(FLOORS, CEILINGS)]
            out.append({"pair": sid, "row": name, "match_s": res.summary["timings_s"]["match"], "evals": evals,
                        "grid": grid})
            print(json.dumps({"pair": sid, "row": name, "match_s": out[-1]["match_s"], "evals": evals}),
                  flush=True)
    return out


def choose(rows: list[dict]) -> dict:
    chosen = {}
    for name in dict.fromkeys(r["row"] for r in rows if "grid" in r):
        mine = [r for r in rows if r["row"] == name]

        def total(f, c, mine=mine):
            return sum(next(g for g in r["grid"] if g["floor"] == f and g["max_ratio"] == c)["under_1px"]
                       for r in mine)

        f, c = max(product(FLOORS, CEILINGS), key=lambda fc: (total(*fc), fc[0], -fc[1]))
        per_pair = [{"pair": r["pair"], **next(g for g in r["grid"] if g["floor"] == f and g["max_ratio"] == c),
                     "match_s": r["match_s"], "evals": r["evals"]} for r in mine]
        chosen[name] = {"min_score": f, "max_ratio": c, "under_1px": total(f, c), "pairs": per_pair}
    for name in ("ncc", "cfog"):
        mine = [r for r in rows if r["row"] == name]
        chosen[name] = {"under_1px": sum(r["auto"]["under_1px"] for r in mine),
                        "pairs": [{"pair": r["pair"], **r["auto"], "match_s": r["match_s"], "evals": r["evals"]}
                                  for r in mine]}
    return chosen


def render(out: dict) -> list[str]:
    lines = ["# Network thresholds and the default pipeline (`benchmarks/network_thresholds.py`)", "",
             f"Weights: `{out['weights']}`. Pairs (validation only): {', '.join(out['pairs'])}. "
             "Rule: most kept points under 1 px summed over the pairs.", "",
             "| row | min_score | max_ratio | kept | under 1 px | median of pair medians | match s (sum) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, c in out["chosen"].items():
        meds = [p["median_px"] for p in c["pairs"] if p["median_px"] is not None]
        lines.append(f"| {name} | {c.get('min_score', 'auto')} | {c.get('max_ratio', 'auto')} | "
                     f"{sum(p['kept'] for p in c['pairs'])} | {c['under_1px']} | "
                     f"{np.median(meds):.2f} px | {sum(p['match_s'] for p in c['pairs']):.0f} |")
    lines += ["", "Per pair (kept / median px / under 1 px):", "", "| pair | " + " | ".join(out["chosen"]) + " |",
              "|---|" + "---|" * len(out["chosen"])]
    for sid in out["pairs"]:
        cells = []
        for c in out["chosen"].values():
            p = next(p for p in c["pairs"] if p["pair"] == sid)
            med = "-" if p["median_px"] is None else f"{p['median_px']:.2f}"
            cells.append(f"{p['kept']} / {med} / {p['under_1px']}")
        lines.append(f"| {sid} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", default=str(HERE / "network_thresholds.json"))
    ap.add_argument("--with-3mos", type=int, default=0, metavar="N",
                    help="also N 3mos tiles of the validation split (other sensors)")
    ap.add_argument("--rows", nargs="+", default=["rrlnet", "cascade"], choices=sorted(network_rows("")),
                    help="network rows to sweep (the classical rows always run)")
    ap.add_argument("--row", action="append", default=[], metavar="NAME=STAGE.KEY=VALUE[,...]",
                    help="one more network row: a cascade-peak row with these settings (matcher_tables' syntax)")
    args = ap.parse_args()
    from matcher_tables import parse_row

    extra = {name: {**network_rows(args.weights)["cascade-peak"], **sets}
             for name, sets in map(parse_row, args.row)}
    rows = collect(args.weights, args.with_3mos, args.rows, extra)
    out = {"weights": args.weights, "pairs": list(dict.fromkeys(r["pair"] for r in rows)), "floors": list(FLOORS),
           "ceilings": list(CEILINGS), "rows": rows, "chosen": choose(rows)}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    md = "\n".join(render(out)) + "\n"
    Path(args.out).with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
