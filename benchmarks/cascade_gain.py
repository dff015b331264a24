"""Where the default cascade's points differ from CFOG's, on validation tiles only, and what they are worth.

    OMP_NUM_THREADS=1 python benchmarks/cascade_gain.py [--weights TAG_OR_PATH] [--with-3mos 12] [--out FILE]

Why: in the peak cascade (the default) a point the network leaves on CFOG's best peak gets CFOG's own
sub-pixel position, so the cascade's median error can only move through the points it keeps and CFOG does not
(or the reverse). Per validation pair (``network_thresholds.validation_pairs``: the volkov-s1s2 validation
scenes, then 3mos tiles of the patch set's val split), one default run and one ``--matcher cfog`` run on the
same keypoints, each at its own "auto" thresholds; every keypoint kept by either falls in one class:

- ``same``: kept by both on one peak (within ``SAME_PX``; exactly CFOG's position unless the tile's initial
  transform differs between the runs);
- ``other peak``: kept by both, the network having chosen another of CFOG's peaks;
- ``cascade only, same peak``: CFOG found it on that peak too but its filters dropped it (its floor, or the
  local and model levels judging it among other neighbours);
- ``cascade only, other peak``: CFOG's best peak was elsewhere (and dropped), the network chose another;
- ``cfog only``: kept by CFOG, not by the cascade.

Errors against the pair's exact truth (after the scene's measured residual shift is taken out). Writes
benchmarks/cascade_gain.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from network_thresholds import _run, validation_pairs

HERE = Path(__file__).resolve().parent
CLASSES = ("same", "other peak", "cascade only, same peak", "cascade only, other peak", "cfog only")
COLS = ("ref_col", "ref_row", "tgt_col", "tgt_row")
SAME_PX = 0.5  # two positions of one keypoint this close come from one peak (CFOG's peaks are >= 2 px apart)


def _aligned(errors, frame) -> np.ndarray:
    """errors(frame) per row, NaN where the truth has none (errors() drops points off scored ground)."""
    e = np.asarray(errors(frame), float)
    if len(e) == len(frame):
        return e
    return np.array([(list(errors(frame.iloc[[i]])) or [np.nan])[0] for i in range(len(frame))], float)


def _points(gdf, errors) -> dict:
    """{(ref x, ref y): (tgt x, tgt y, kept, error)} over every point the run found."""
    g = gdf.reset_index(drop=True)
    err = _aligned(errors, g)
    return {(round(float(x), 3), round(float(y), 3)): (float(tx), float(ty), bool(o == 0), float(e))
            for x, y, tx, ty, o, e in zip(*(g[c] for c in COLS), g["outlier"], err, strict=True)}


def classify(casc_gdf, cfog_gdf, errors) -> dict:
    """Per class, the errors (px) of the cascade's points (``cfog only``: CFOG's), and of CFOG's position for
    the keypoints in ``other peak``."""
    a, b = _points(casc_gdf, errors), _points(cfog_gdf, errors)
    out = {c: [] for c in (*CLASSES, "other peak, cfog's position")}
    for key, (tx, ty, kept, e) in a.items():
        if not kept:
            continue
        theirs = b.get(key)
        same = theirs is not None and np.hypot(tx - theirs[0], ty - theirs[1]) < SAME_PX
        if theirs is not None and theirs[2]:
            out["same" if same else "other peak"].append(e)
            if not same:
                out["other peak, cfog's position"].append(theirs[3])
        else:
            out["cascade only, same peak" if same else "cascade only, other peak"].append(e)
    out["cfog only"] = [e for key, (_, _, kept, e) in b.items() if kept and not (key in a and a[key][2])]
    return {c: [round(e, 4) for e in v if np.isfinite(e)] for c, v in out.items()}


def collect(weights: str, with_3mos: int) -> list[dict]:
    rows = []
    for sid, build in validation_pairs(with_3mos):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                optical, sar, errors, extra = build(Path(tmp))
            except Exception as exc:  # no established residual shift: no exact truth
                print(json.dumps({"pair": sid, "skipped": str(exc)}), flush=True)
                continue
            _, casc, _ = _run(optical, sar, {**extra, "match.weights": weights})
            _, cfog, _ = _run(optical, sar, {**extra, "match.plugin": "cfog"})
            rows.append({"pair": sid, **classify(casc.gdf, cfog.gdf, errors)})
            print(json.dumps({"pair": sid, **{c: len(rows[-1][c]) for c in CLASSES}}), flush=True)
    return rows


def _cell(errs) -> str:
    e = np.asarray(errs, float)
    return f"{len(e)} / {np.median(e):.2f} / {int((e < 1).sum())}" if len(e) else "0 / – / 0"


def render(out: dict) -> str:
    rows = out["rows"]
    keys = (*CLASSES, "other peak, cfog's position")
    lines = ["# Where the default cascade's points differ from CFOG's (`benchmarks/cascade_gain.py`)", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "", f"Weights: `{out['weights']}`. Command: "
             f"`{out['command']}`.", "", "Cells: points / median error px / under 1 px.", "",
             "| pair | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {r['pair']} | " + " | ".join(_cell(r[k]) for k in keys) + " |" for r in rows]
    lines.append("| **all** | " + " | ".join(_cell([e for r in rows for e in r[k]]) for k in keys) + " |")
    casc = [e for r in rows for k in CLASSES[:4] for e in r[k]]
    cfog = [e for r in rows for k in ("same", "other peak, cfog's position", "cfog only") for e in r[k]]
    lines += ["", f"Totals: cascade {_cell(casc)}; CFOG {_cell(cfog)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--with-3mos", type=int, default=12, metavar="N")
    ap.add_argument("--out", default=str(HERE / "cascade_gain.json"))
    args = ap.parse_args()
    command = ("OMP_NUM_THREADS=1 python benchmarks/cascade_gain.py "
               f"--weights {args.weights} --with-3mos {args.with_3mos}")
    out = {"weights": args.weights, "command": command, "rows": collect(args.weights, args.with_3mos)}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    md = render(out)
    Path(args.out).with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
