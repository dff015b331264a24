"""Cost of a whole scene: wall time, time per megapixel, points, evaluations per keypoint and peak RSS by size.

    nice python benchmarks/scale.py --sizes 1024 2048 4096 --matchers ncc rrlnet --json benchmarks/scale.json
    python benchmarks/scale.py --table benchmarks/scale.json      # the Markdown table of benchmarks/scale.md

Pairs are built from real material: the 1024 px Sentinel-2 / Sentinel-1 (VH) fragments of volkov-s1s2 in the
shared data folder (GEOMATCH_DATA), each SAR fragment first shifted by its measured residual
(alignment_check.csv), laid side by side (mirrored when a size needs more fragments than there are) into an
N x N mosaic, and the SAR mosaic then warped by a known smooth field (a shift of a few pixels that varies
across the scene), so every tie point's true target is known. Each run is its own subprocess: its peak RSS is
its own (``getrusage(RUSAGE_SELF)`` at its end), and a sampler records RSS by stage (what grows).
Written to a temporary folder (``--work``), never into the project: the imagery is not ours to commit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("GEOMATCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FRAGMENT = 1024


def field(x, y, size: int):
    """The known displacement (x, y) in pixels at SAR-mosaic position (x, y): 2-5 px, smooth over the scene."""
    fx = 3.0 + 1.5 * np.sin(2 * np.pi * np.asarray(y, float) / size)
    fy = -2.0 + 1.0 * np.cos(2 * np.pi * np.asarray(x, float) / size)
    return fx, fy


def true_target(x, y, size: int):
    """q with q - f(q) = p: the warped SAR holds at q what the optical shows at p (fixed-point iteration)."""
    qx, qy = np.asarray(x, float).copy(), np.asarray(y, float).copy()
    for _ in range(20):
        fx, fy = field(qx, qy, size)
        qx, qy = x + fx, y + fy
    return qx, qy


def _fragments(data: Path) -> list[tuple[str, float, float]]:
    import csv

    with open(data / "volkov-s1s2" / "alignment_check.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # Fragments whose two shift estimates agree first: their correction is trusted to about a pixel.
    rows.sort(key=lambda r: (-int(r["agree_le_1px"]), r["pair"]))
    return [(r["pair"], float(r["pc_dy"]), float(r["pc_dx"])) for r in rows]


def build_pair(data: Path, size: int, out: Path) -> tuple[Path, Path]:
    """Write the N x N optical (uint8 RGB) and warped SAR (float32, NaN nodata) GeoTIFFs; reused when present."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin
    from scipy import ndimage as ndi

    optical, sar = out / f"scale_{size}_s2.tif", out / f"scale_{size}_s1.tif"
    if optical.exists() and sar.exists():
        return optical, sar
    frags = _fragments(data)
    k = -(-size // FRAGMENT)
    opt = np.zeros((3, k * FRAGMENT, k * FRAGMENT), np.uint8)
    sarc = np.zeros((k * FRAGMENT, k * FRAGMENT), np.float32)
    for n in range(k * k):
        name, dy, dx = frags[n % len(frags)]
        o = np.asarray(Image.open(data / "volkov-s1s2" / "opt" / name).convert("RGB")).transpose(2, 0, 1)
        s = ndi.shift(np.asarray(Image.open(data / "volkov-s1s2" / "sar" / name).convert("L"), np.float32),
                      (dy, dx), order=1, mode="reflect")
        use = n // len(frags)  # a fragment used again is mirrored (left-right, up-down, both): no two blocks alike
        if use % 2:
            o, s = o[:, :, ::-1], s[:, ::-1]
        if use // 2 % 2:
            o, s = o[:, ::-1], s[::-1]
        r, c = divmod(n, k)
        opt[:, r * FRAGMENT:(r + 1) * FRAGMENT, c * FRAGMENT:(c + 1) * FRAGMENT] = o
        sarc[r * FRAGMENT:(r + 1) * FRAGMENT, c * FRAGMENT:(c + 1) * FRAGMENT] = s
    opt, sarc = opt[:, :size, :size], sarc[:size, :size]
    profile = {"driver": "GTiff", "width": size, "height": size, "crs": "EPSG:32611", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "transform": from_origin(400000.0, 3800000.0, 10.0, 10.0)}
    with rasterio.open(optical, "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(opt)
    with rasterio.open(sar, "w", count=1, dtype="float32", nodata=float("nan"), **profile) as dst:
        for r0 in range(0, size, 512):  # strips: coordinate arrays of a whole 8192 px scene are 1 GB
            rows, cols = np.mgrid[r0:min(size, r0 + 512), 0:size].astype(np.float64)
            fx, fy = field(cols + 0.5, rows + 0.5, size)
            strip = ndi.map_coordinates(sarc, [rows - fy, cols - fx], order=1, mode="constant", cval=np.nan)
            dst.write(strip.astype(np.float32)[None], window=((r0, r0 + len(rows)), (0, size)))
    return optical, sar


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(optical: str, sar: str, size: int, matcher: str, sets: dict) -> dict:
    """One run in this process (the parent made it a fresh one): counts, timings, RSS, accuracy against truth."""
    import resource
    import threading

    from geomatch import config, process_limits
    from geomatch.models.runtime import Scorer
    from geomatch.pipeline.run import run_pipeline

    evaluations = [0]
    inner = Scorer.__call__

    def counting(self, opt, sr):
        out = inner(self, opt, sr)
        evaluations[0] += len(out)
        return out

    Scorer.__call__ = counting
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.perf_counter(), _rss_mb()))
            stop.wait(0.25)

    cfg = config.load("default", {"match.plugin": matcher, "write.plot": False, **sets})
    sampler = threading.Thread(target=sample, daemon=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sampler.start()
        res = run_pipeline(optical, sar, cfg, Path(tmp) / "tp.gpkg")
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
    s, gdf = res.summary, res.gdf
    kept = gdf[gdf["outlier"] == 0]
    qx, qy = true_target(kept["ref_col"].to_numpy(), kept["ref_row"].to_numpy(), size)
    err = np.hypot(kept["tgt_col"].to_numpy() - qx, kept["tgt_row"].to_numpy() - qy)
    by_stage, start = {}, t0
    for stage, secs in s["timings_s"].items():  # the run's stages in order; RSS peak within each
        inside = [m for t, m in samples if start <= t <= start + secs]
        by_stage[stage] = round(max(inside), 1) if inside else None
        start += secs
    layout = process_limits.apply()
    return {"size": size, "megapixels": size * size / 1e6, "matcher": matcher, "sets": sets,
            "wall_s": round(wall, 2), "s_per_mpx": round(wall / (size * size / 1e6), 3),
            "timings_s": {k: round(v, 2) for k, v in s["timings_s"].items()}, "tiles": s["tiles"],
            "keypoints": s["keypoints"], "points_found": s["points_found"], "points_kept": s["points_kept"],
            "evaluations": evaluations[0],
            "evaluations_per_keypoint": round(evaluations[0] / max(1, s["keypoints"]["chosen"]), 1),
            "s_per_keypoint": round(s["timings_s"]["match"] / max(1, s["keypoints"]["chosen"]), 4),
            "median_error_px": round(float(np.median(err)), 3) if len(err) else None,
            "within_1px": round(float(np.mean(err <= 1)), 3) if len(err) else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_peak_by_stage_mb": by_stage, "threads": {"tasks": layout.tasks, "engine": layout.engine},
            "gdal_cache_mb": None if layout.gdal_cache_bytes is None else layout.gdal_cache_bytes / 2**20,
            "verdict": s["verdict"].get("status")}


def table(results: list[dict]) -> str:
    head = ("| size | matcher | wall s | s/Mpx | detect s | match s | filter s | keypoints (cand.) | found | kept "
            "| eval/kp | s/kp | median err px | peak RSS MB |\n|" + "---|" * 14)
    lines = [head]
    for r in sorted(results, key=lambda r: (r["matcher"], r["size"])):
        t, kp = r["timings_s"], r["keypoints"]
        lines.append(f"| {r['size']}² | {r['matcher']}{' ' + str(r['sets']) if r['sets'] else ''} | {r['wall_s']:.0f} "
                     f"| {r['s_per_mpx']:.2f} | {t.get('detect', 0):.1f} | {t['match']:.1f} | {t['filter']:.2f} "
                     f"| {kp['chosen']} ({kp['candidates']}) | {r['points_found']} | {r['points_kept']} "
                     f"| {r['evaluations_per_keypoint']} | {r['s_per_keypoint']:.3f} | {r['median_error_px']} "
                     f"| {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--matchers", nargs="+", default=["ncc", "rrlnet"])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="STAGE.KEY=VALUE for every run")
    ap.add_argument("--json", help="results file; new runs are merged in (same size, matcher and sets replaced)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "geomatch_scale"))
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    ap.add_argument("--table", metavar="JSON", help="print the Markdown table of a results file and exit")
    ap.add_argument("--child", nargs=4, metavar=("OPTICAL", "SAR", "SIZE", "MATCHER"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    from geomatch import config_text

    sets = config_text.parse_set_options(a.sets)
    if a.table:
        print(table(json.loads(Path(a.table).read_text())["runs"]))
        return
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], int(a.child[2]), a.child[3], sets)))
        return
    if not (DATA / "volkov-s1s2" / "alignment_check.csv").is_file():
        sys.exit(f"no volkov-s1s2 data under {DATA}: set GEOMATCH_DATA")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    path = Path(a.json) if a.json else None
    doc = json.loads(path.read_text()) if path and path.exists() else {"runs": []}
    for size in a.sizes:
        optical, sar = build_pair(DATA, size, work)
        for matcher in a.matchers:
            cmd = [sys.executable, __file__, "--child", str(optical), str(sar), str(size), matcher,
                   *sum((["--set", s] for s in a.sets), [])]
            load = os.getloadavg()[0]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
            except subprocess.TimeoutExpired:
                print(f"{size} {matcher}: over {a.timeout:.0f} s, not recorded", file=sys.stderr)
                continue
            if out.returncode != 0:
                print(f"{size} {matcher}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
                continue
            run = {**json.loads(out.stdout.strip().splitlines()[-1]), "load_1min_at_start": round(load, 1),
                   "load_1min_at_end": round(os.getloadavg()[0], 1), "cores": os.cpu_count(),
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            print(json.dumps(run), flush=True)
            doc["runs"] = [r for r in doc["runs"]
                           if (r["size"], r["matcher"], r["sets"]) != (size, matcher, sets)] + [run]
            if path:
                path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
