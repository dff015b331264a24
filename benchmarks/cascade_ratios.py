"""The ambiguity test's ceiling per classical matcher (``benchmarks/cascade.py ratios``).

``filter.max_ratio = "auto"`` takes the matcher class's ``max_ratio``. Chosen here for ``ncc`` and ``cfog`` on
validation pairs only: the volkov-s1s2 scenes of the optical-SAR patch set's val split (``RATIO_VALIDATION``),
each prepared by :func:`cascade.validation_pair` (centre crop, residual shift measured and taken out, the SAR
warped by a known affine). One run per matcher and pair with the ambiguity test off (``max_ratio = 1``; the
class's own score floor), then its points re-filtered (all three levels) at every ceiling of ``RATIOS``. Rule:
the ceiling keeping the most points under 1 px summed over the pairs; ties: the lower ceiling. The networks'
ceilings are not chosen here (their scores change with their weights; see ``geomatch models calibrate``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

RATIO_VALIDATION = tuple(f"volkov-s1s2/{n}" for n in ("021", "062", "128", "141", "145", "164"))
RATIOS = tuple(round(r, 3) for r in np.arange(0.90, 1.0001, 0.005))
RATIO_MATCHERS = ("ncc", "cfog")
RULE = "most kept points under 1 px summed over the validation pairs; ties: the lower max_ratio"


def _sweep(gdf, cfg, floor: float, errors) -> list[dict]:
    from cascade import _filtered

    return [{**_filtered(gdf, cfg, floor, errors, max_ratio=r), "max_ratio": r} for r in RATIOS]


def _row(optical, sar, matcher: str, errors) -> dict:
    from cascade import run_mod

    from geomatch import config
    from geomatch.pipeline import thresholds

    sets = {"pair.sar_scale": "db", "match.plugin": matcher, "write.plot": False, "filter.max_ratio": 1.0}
    cfg = config.load("default", sets)
    res = run_mod.run_pipeline(str(optical), str(sar), cfg)
    floor = thresholds.resolve_min_score(cfg.filter.min_score, cfg.match)
    ratio = res.gdf["ratio"].to_numpy(float)
    return {"row": matcher, "found": int(len(res.gdf)), "floor": floor,
            "ratio_median": float(np.median(ratio)) if len(ratio) else None,
            "match_s": round(float(res.summary["timings_s"]["match"]), 2), "sweep": _sweep(res.gdf, cfg, floor, errors)}


def ratios() -> dict:
    """Validation only: the max_ratio per classical matcher from one ratio-free run per pair."""
    from cascade import validation_pair

    rows = []
    for sid in RATIO_VALIDATION:
        with tempfile.TemporaryDirectory() as tmp:
            optical, sar, errors, rec = validation_pair(sid, Path(tmp))
            for name in RATIO_MATCHERS:
                row = {"pair": sid, "alignment": rec, **_row(optical, sar, name, errors)}
                print(json.dumps({k: v for k, v in row.items() if k != "sweep"}), flush=True)
                rows.append(row)

    def total(name, r, key="under_1px"):
        return sum(next(x for x in row["sweep"] if x["max_ratio"] == r)[key] for row in rows if row["row"] == name)

    chosen = {n: max(RATIOS, key=lambda r, n=n: (total(n, r), -r)) for n in RATIO_MATCHERS}
    totals = {n: {str(r): {"under_1px": total(n, r), "kept": total(n, r, "kept")} for r in RATIOS}
              for n in RATIO_MATCHERS}
    return {"validation": rows, "chosen": chosen, "totals": totals, "pairs": list(RATIO_VALIDATION),
            "ratios": [RATIOS[0], RATIOS[-1], 0.005], "rule": RULE}


def render_ratios(out: dict) -> list[str]:
    ra = out.get("ratios")
    if not ra:
        return []
    names = list(ra["chosen"])
    lines = [f"## Ambiguity ceilings per matcher (`{out.get('ratios_command')}`)", "",
             "`filter.max_ratio = \"auto\"` (the default) takes the matcher class's `max_ratio` (the Matcher default "
             "0.95 for the networks); the cascade mixes the two ceilings by `cascade_weight`, as it mixes the scores "
             f"and floors. Validation pairs {', '.join(ra['pairs'])} (the patch set's val scenes), prepared as "
             "above; one run per row with the ambiguity test off at the class's own score floor, re-filtered (all "
             f"three levels) at every max_ratio {ra['ratios'][0]}-{ra['ratios'][1]} step {ra['ratios'][2]}. Rule: "
             f"{ra['rule']}. Chosen: " + ", ".join(f"{n} {r:.3f}" for n, r in ra["chosen"].items()) + " (1.000: no "
             "ambiguity test). The sections above were recorded with the former shared max_ratio 0.95.", "",
             "Summed over the pairs, kept points / under 1 px:", "",
             "| max_ratio | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for key in sorted(ra["totals"][names[0]], key=float):
        here = [n for n in names if ra["chosen"][n] == float(key)]
        cells = [f"{ra['totals'][n][key]['kept']} / {ra['totals'][n][key]['under_1px']}" for n in names]
        lines.append(f"| {float(key):.3f}{' (chosen: ' + ', '.join(here) + ')' if here else ''} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Per pair at 0.95 (the former shared value) and at the chosen ceiling: kept / median / under 1 px:",
              "", "| pair | row | floor | found | ratio median | at 0.95 | at chosen |",
              "|---|---|---:|---:|---:|---|---|"]

    def cell(row, r):
        x = next(s for s in row["sweep"] if abs(s["max_ratio"] - r) < 1e-9)
        med = "–" if x["median_px"] is None else f"{x['median_px']:.2f} px"
        return f"{x['kept']} / {med} / {x['under_1px']}"

    for row in ra["validation"]:
        rmed = "–" if row["ratio_median"] is None else f"{row['ratio_median']:.3f}"
        lines.append(f"| {row['pair']} | {row['row']} | {row['floor']:.3f} | {row['found']} | {rmed} | "
                     f"{cell(row, 0.95)} | {cell(row, ra['chosen'][row['row']])} |")
    lines.append("")
    return lines
