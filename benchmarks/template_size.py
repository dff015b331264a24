"""Does a larger CFOG template localise better? CFOG alone at several template sizes on the validation tiles.

    cd benchmarks && OMP_NUM_THREADS=1 python template_size.py [N_3MOS] [SIZES]    # defaults: 12, 64,96,128

The validation tiles of network_thresholds.py (volkov-s1s2 scenes with a crop truth, then N_3MOS 3mos tiles of
the patch set's val split; never a reported pair). One default-config run per tile and size with the `cfog`
matcher searching alone (`match.params.patch_size`, no settling), its own "auto" thresholds. Per tile: kept
points, points under 1 px, median error, match-stage seconds. Writes template_size.json and template_size.md.
What it led to: ``match.refine_patch`` (geomatch.pipeline.refine), the larger template used only to settle
positions.
"""

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import network_thresholds as nt  # noqa: E402
from cascade import run_mod  # noqa: E402

from geomatch import config  # noqa: E402


def measure(with_3mos: int, sizes: list[int]) -> dict:
    out = {}
    for sid, optical, sar, errors, extra in nt.built_pairs(with_3mos):
        for p in sizes:
            cfg = config.load("default", {"write.plot": False, **extra, "match.mode": "search",
                                          "match.plugin": "cfog", "match.params": {"patch_size": p},
                                          "match.refine_patch": 0})
            res = run_mod.run_pipeline(str(optical), str(sar), cfg)
            e = np.asarray(errors(res.gdf[res.gdf["outlier"] == 0]), float)
            out.setdefault(sid, {})[str(p)] = {"kept": len(e), "under_1px": int((e < 1).sum()),
                                               "median_px": round(float(np.median(e)), 3) if len(e) else None,
                                               "match_s": round(float(res.summary["timings_s"]["match"]), 2)}
        print(sid, json.dumps(out[sid]), flush=True)
    return out


def render(out: dict, command: str) -> str:
    sizes = list(next(iter(out.values())))
    lines = ["# CFOG template size on the validation tiles (`benchmarks/template_size.py`)", "",
             f"`{command}`; its docstring says what runs. Per tile: kept / under 1 px / median px.", "",
             "| tile | " + " | ".join(f"{p} px" for p in sizes) + " |", "|---|" + "---|" * len(sizes)]
    def cell(c):
        return f"{c['kept']} / {c['under_1px']} / " + ("–" if c["median_px"] is None else f"{c['median_px']:.2f}")

    for sid, r in out.items():
        lines.append(f"| {sid} | " + " | ".join(cell(r[p]) for p in sizes) + " |")
    tot = {p: [sum(r[p][k] for r in out.values()) for k in ("kept", "under_1px", "match_s")] for p in sizes}
    med = {p: np.median([r[p]["median_px"] for r in out.values() if r[p]["median_px"] is not None]) for p in sizes}
    lines += ["| **sum** (kept / under 1 px / match s) | " + " | ".join(
        f"{tot[p][0]} / {tot[p][1]} / {tot[p][2]:.1f} s" for p in sizes) + " |",
              "| **median of the tiles' medians** | " + " | ".join(f"{med[p]:.2f} px" for p in sizes) + " |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    n3 = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    sizes = [int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else [64, 96, 128]
    res = measure(n3, sizes)
    cmd = "cd benchmarks && OMP_NUM_THREADS=1 python template_size.py " + " ".join(sys.argv[1:])
    (HERE / "template_size.json").write_text(json.dumps({"command": cmd.strip(), "tiles": res}, indent=1) + "\n")
    (HERE / "template_size.md").write_text(render(res, cmd.strip()))
