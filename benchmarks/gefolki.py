"""Tie-point accuracy on the GeFolki Sentinel-2 / warped Sentinel-1 pair (exact ground truth everywhere).

    python benchmarks/gefolki.py --matcher ncc
    python benchmarks/gefolki.py --matcher rrlnet --weights optical-sar

Prints (and with --json writes) kept points, median error, RMSE and the shares within 1 and 3 px of the kept
points against the reference displacement field; see gefolki_fixture.py for how the pair is built.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from gefolki_fixture import build_gefolki, error_stats, gefolki_errors

from geomatch import config, config_text
from geomatch.pipeline.run import run_pipeline

DATA = Path(os.environ.get("GEOMATCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def evaluate(matcher: str, weights: str = "auto", pipeline: str = "default", sets: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        fix = build_gefolki(DATA, Path(tmp))
        cfg = config.load(pipeline, {"match.plugin": matcher, "match.weights": weights, "write.plot": False,
                                     **(sets or {})})
        t = time.perf_counter()
        res = run_pipeline(fix.optical, fix.sar, cfg)
        seconds = time.perf_counter() - t
    gdf = res.gdf
    kept = gdf[gdf["outlier"] == 0]
    err = gefolki_errors(fix, kept["ref_col"], kept["ref_row"], kept["tgt_col"], kept["tgt_row"])
    all_err = gefolki_errors(fix, gdf["ref_col"], gdf["ref_row"], gdf["tgt_col"], gdf["tgt_row"])
    return {"matcher": matcher, "weights": res.gdf["weights"].iloc[0] if len(gdf) else weights,
            "found": int(len(gdf)), **error_stats(err), "all_points_median_px": error_stats(all_err)["median_px"],
            "seconds": round(seconds, 1), "coarse": res.summary["coarse"]["method"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--matcher", default="ncc")
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--pipeline", default="default")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="STAGE.KEY=VALUE")
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args()
    out = evaluate(a.matcher, a.weights, a.pipeline, config_text.parse_set_options(a.sets))
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
