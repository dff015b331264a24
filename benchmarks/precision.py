"""Reduced-precision scoring (``match.precision``): speed beside the conv probe, score error, and tie points.

    cd benchmarks
    python precision.py --errors-only --json errors.json                  # score errors (minutes at w1.0)
    python precision.py --threads 2 --no-errors --json speed.json         # interleaved speed, every cell
    python precision.py --gefolki --precisions fp32,int8 --json tie.json  # tie points, one run per precision

Speed: RRL-Net at width 0.25 (the shipped ``optical-sar`` weights) and 1.0 (fresh initialisation), each engine
built through ``build_scorer`` (the pipeline's path: numpy in, numpy out) at batches 32, 128 and 256, 2 threads.
The machine is shared, so the engines are timed interleaved: every round times each engine once (in an order
rotated per round) and the conv probe of ``bench_matchers.roofline_probes`` once; the report gives each engine's
median pairs/s, its median per-round ratio to fp32 ONNX Runtime, and its share of the same round's probe
(``2 * MACs * pairs/s / probe``). Score error: max |score - fp32 eager score| of each precision on real GeFolki
patch pairs (Sentinel-2 against warped Sentinel-1 at Harris points, and the same points shifted 8 px) and on
the demo pairs the build-time check uses. ``--gefolki``: the whole pipeline on the GeFolki pair, once per precision.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_matchers import roofline_probes

from geomatch.models import precision, runtime
from geomatch.models.factory import build_matcher
from geomatch.models.flops import multiply_adds

DATA = Path(os.environ.get("GEOMATCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
# (label, runtime, precision): every engine the precision setting can give, fp32 ONNX Runtime first (the default).
ENGINES = (("fp32 onnxruntime", "onnxruntime", "fp32"), ("fp32 eager", "eager", "fp32"),
           ("fp32 channels-last", "channels-last", "fp32"), ("bf16 eager", "eager", "bf16"),
           ("bf16 channels-last", "channels-last", "bf16"), ("int8 onnxruntime", "onnxruntime", "int8"))  # fmt: skip
WEIGHTS = {0.25: "optical-sar", 1.0: "none"}


def build(width: float, kind: str, prec: str, batch: int):
    torch.manual_seed(0)  # at w1.0 every engine gets the same fresh initialisation, so score errors compare
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runtime.build_scorer("rrlnet", WEIGHTS[width], "cpu", batch, kind, None if width == 0.25 else width,
                                    precision=prec)


def timed(fn, pairs: int, min_time: float) -> float:
    """pairs/s of ``fn`` over at least one call and ``min_time`` seconds (the engine is already warm)."""
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return reps * pairs / elapsed


def gefolki_pairs(n: int = 64, offset: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Real pairs: S2 at Harris points against the warped S1 at the true correspondence (even) or 8 px off (odd)."""
    from gefolki_fixture import _bilinear, _fixed_point_target, build_gefolki

    from geomatch.pipeline.patches import sample_patches
    from geomatch.pipeline.raster.pair import RasterPair
    from geomatch_plugins.detectors.corners import Harris

    with tempfile.TemporaryDirectory() as tmp:
        fix = build_gefolki(DATA, Path(tmp))
        with RasterPair(fix.optical, fix.sar) as pair:
            ov = pair.read_overview(max_size=1 << 14)
    assert ov.scale == 1.0, ov.scale
    kps = Harris().detect(ov.optical, ov.optical_valid, max_points=n, cell_size=32, min_contrast=0.03, border=48)
    x, y = kps.x, kps.y
    qx, qy = _fixed_point_target(x, y, lambda a, b: (_bilinear(fix.flow[..., 0], a, b),
                                                     _bilinear(fix.flow[..., 1], a, b)))  # fmt: skip
    angle = np.random.default_rng(0).uniform(0, 2 * np.pi, len(x))
    odd = np.arange(len(x)) % 2 == 1
    qx, qy = qx + odd * offset * np.cos(angle), qy + odd * offset * np.sin(angle)
    o = sample_patches(ov.optical, np.stack([x, y], 1))
    s = sample_patches(np.nan_to_num(ov.sar), np.stack([qx, qy], 1))
    return o[:, None], s[:, None]


def score_errors(width: float) -> dict:
    sets = {"demo check pairs": precision.sample_pairs(precision.CHECK_PAIRS, seed=3),
            "demo pairs (other seed)": precision.sample_pairs(256, seed=99)}
    try:
        sets["GeFolki S2/S1 pairs"] = gefolki_pairs()
    except (OSError, ImportError) as exc:
        print(f"GeFolki pairs unavailable: {exc}", file=sys.stderr)
    fp32 = build(width, "eager", "fp32", 256)
    ref = {name: fp32(o, s) for name, (o, s) in sets.items()}
    out = {}
    for label, kind, prec in ENGINES:
        sc = build(width, kind, prec, 256)
        out[label] = {"precision_used": sc.precision, "runtime_used": sc.runtime,
                      **{name: float(np.max(np.abs(sc(o, s) - ref[name]))) for name, (o, s) in sets.items()},
                      "pairs": {name: len(o) for name, (o, s) in sets.items()}}
        print(f"w{width:g} {label}: {out[label]}", file=sys.stderr, flush=True)
    return out


def speed(cells, min_time: float, save=None) -> dict:
    results = {}
    for width, batch, rounds in cells:
        macs = int(multiply_adds(build_matcher("rrlnet", width=width)))
        # Engines are built once per width (the scorer cache keeps them; batch_size is the Scorer's own).
        o, s = precision.sample_pairs(batch, seed=5)
        scorers = {label: build(width, kind, prec, batch) for label, kind, prec in ENGINES}
        for sc in scorers.values():
            sc(o, s)  # warm-up (and the one-off oneDNN / ONNX Runtime kernel set-up)
        cell = {"macs_per_pair": macs, "pairs_per_s": {k: [] for k in scorers}, "probe_gflops": [],
                "precision_used": {k: sc.precision for k, sc in scorers.items()}}
        labels = list(scorers)
        for r in range(rounds):
            cell["probe_gflops"].append(max(roofline_probes(max(min_time, 0.2)).values()))
            order = labels[r % len(labels):] + labels[:r % len(labels)]
            for label in order:
                call = lambda sc=scorers[label], o=o, s=s: sc(o, s)  # noqa: E731
                cell["pairs_per_s"][label].append(timed(call, batch, min_time))
            print(f"w{width:g} batch {batch} round {r + 1}: " + ", ".join(
                f"{k} {v[-1]:.0f}" for k, v in cell["pairs_per_s"].items()), file=sys.stderr, flush=True)
        results[f"w{width:g} batch {batch}"] = cell
        if save:
            save(results)
    return results


def summarise(cell: dict) -> dict:
    pps = {k: np.asarray(v) for k, v in cell["pairs_per_s"].items()}
    probe = np.asarray(cell["probe_gflops"])
    base = pps[ENGINES[0][0]]
    return {k: {"median_pairs_per_s": float(np.median(v)), "ratio_to_fp32_ort": float(np.median(v / base)),
                "probe_share": float(np.median(2 * cell["macs_per_pair"] * v / (probe * 1e9)))}
            for k, v in pps.items()}  # fmt: skip


def markdown(results: dict, errors: dict) -> str:
    lines = []
    for width, errs in errors.items():
        sets = [k for k in next(iter(errs.values())) if k not in ("precision_used", "runtime_used", "pairs")]
        lines += [f"Score error at {width} (max |score - fp32 eager score|):", "",
                  "| engine | used | " + " | ".join(f"{k} ({next(iter(errs.values()))['pairs'][k]})" for k in sets)
                  + " |", "|---|---|" + "---:|" * len(sets)]
        for label, e in errs.items():
            lines.append(f"| {label} | {e['runtime_used']} {e['precision_used']} | "
                         + " | ".join(f"{e[k]:.2g}" for k in sets) + " |")
        lines.append("")
    labels = [e[0] for e in ENGINES]
    lines += ["| width, batch | probe GFLOP/s | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for key, cell in results.items():
        summ = summarise(cell)
        cells = [f"{summ[k]['median_pairs_per_s']:,.0f} ({summ[k]['ratio_to_fp32_ort']:.2f}x, "
                 f"{100 * summ[k]['probe_share']:.0f} %)" for k in labels]
        lines.append(f"| {key} | {np.median(cell['probe_gflops']):.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gefolki_runs(precisions) -> dict:
    from gefolki import evaluate

    return {p: evaluate("rrlnet", "optical-sar", sets={"match.precision": p}) for p in precisions}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="0.25:32:12,0.25:128:6,0.25:256:4,1:32:5,1:128:3,1:256:3",
                    help="WIDTH:BATCH:ROUNDS,... (interleaved rounds per cell; medians over them)")
    ap.add_argument("--no-errors", action="store_true", help="speed only (the score errors take minutes at w1.0)")
    ap.add_argument("--errors-only", action="store_true", help="score errors at w0.25 and w1.0, no speed")
    ap.add_argument("--min-time", type=float, default=0.0, help="seconds per timing (0: one call, the finest "
                    "interleaving: on a shared machine load changes within seconds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gefolki", action="store_true", help="tie points on the GeFolki pair instead of speed")
    ap.add_argument("--precisions", default="fp32,bf16,int8", help="with --gefolki: the runs, in order")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("geomatch").setLevel(logging.ERROR)  # "no weights" at w1.0 is the point, not news
    t0 = time.time()
    meta = {"command": " ".join(["python", *sys.argv]), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__, "load_average_before": os.getloadavg(),
            "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if args.gefolki:
        out = {"meta": meta, "runs": gefolki_runs(args.precisions.split(","))}
        print(json.dumps(out["runs"], indent=2))
    else:
        cells = [(float(w), int(b), int(r)) for w, b, r in (c.split(":") for c in args.cells.split(","))]
        widths = sorted({w for w, _, _ in cells})
        if args.errors_only:
            cells = []
        errors = {} if args.no_errors else {f"w{w:g}": score_errors(w) for w in widths}

        def save(results):
            if args.json:
                Path(args.json).write_text(json.dumps({"meta": meta, "score_errors": errors, "speed": results},
                                                      indent=2) + "\n")

        results = speed(cells, args.min_time, save)
        out = {"meta": meta, "score_errors": errors, "speed": results,
               "summary": {k: summarise(c) for k, c in results.items()}}
        print(markdown(results, errors))
    meta.update(seconds=round(time.time() - t0, 1), load_average_after=os.getloadavg())
    print(f"\n{meta['threads']} threads, torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, "
          f"{meta['seconds']:.0f} s, load average {meta['load_average_before'][0]:.1f} before, "
          f"{meta['load_average_after'][0]:.1f} after.")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
