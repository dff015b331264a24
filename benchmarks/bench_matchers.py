"""Inference speed of every registered matcher beside a roofline probe measured in the same run.

For each matcher's inference form (pruned, eval) at each width: Keras-counted parameters, multiply-adds per
pair (geomatch.models.flops), and pairs/s through ``geomatch.models.runtime.build_scorer`` (the path the
tie-point pipeline uses: numpy in, numpy out) for every CPU runtime. The roofline is the best of a large fp32
matmul and a 3x3 64->64 convolution (default layout, channels-last, ONNX Runtime), all timed in this run, so
the share of roofline (2 * MACs * pairs/s / roofline) stays meaningful on a shared, noisy machine.

    python benchmarks/bench_matchers.py --json benchmarks/matchers.json   # markdown table on stdout
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import platform
import sys
import time
import warnings

import numpy as np
import torch

from geomatch import registry
from geomatch.models import engines, runtime
from geomatch.models.base import keras_param_count
from geomatch.models.factory import build_matcher, needs_weights
from geomatch.models.flops import multiply_adds


def rate(fn, work: float, min_time: float, min_reps: int = 2) -> float:
    """Work units per second of ``fn`` after one warm-up call, over at least ``min_time`` s and ``min_reps``."""
    fn()
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if reps >= min_reps and elapsed >= min_time:
            return reps * work / elapsed


def roofline_probes(min_time: float) -> dict[str, float]:
    """GFLOP/s of a 2048^3 fp32 matmul and of a 3x3 64->64 conv on 16 x 64 x 64 x 64 inputs."""
    import onnxruntime as ort

    out = {}
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    out["matmul 2048 fp32"] = rate(lambda: torch.mm(a, b), 2 * n**3, min_time) / 1e9

    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().requires_grad_(False)
    x = torch.randn(16, 64, 64, 64)
    flops = 2 * 16 * 64 * 64 * 64 * 64 * 9
    with torch.inference_mode():
        out["conv3x3 64->64 eager"] = rate(lambda: conv(x), flops, min_time) / 1e9
        conv_cl, x_cl = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        out["conv3x3 64->64 channels-last"] = rate(lambda: conv_cl(x_cl), flops, min_time) / 1e9
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Conv2d(64, 64, 3, padding=1).eval(), (x,), buf, input_names=["x"], dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    out["conv3x3 64->64 onnxruntime"] = rate(lambda: sess.run(None, {"x": xn}), flops, min_time) / 1e9
    return out


def batch_for(macs: int, cap: int) -> int:
    """A power of two up to ``cap`` keeping one call near 100 GFLOP, so a 4-GMAC MFD-Net call stays seconds."""
    if macs <= 0:
        return cap
    return int(max(8, min(cap, 2 ** math.floor(math.log2(max(1.0, 50e9 / macs))))))


def bench_matcher(name: str, width: float | None, cap: int, min_time: float) -> dict:
    model = build_matcher(name, width=width or 1.0)
    pruned = model.prune()
    macs = int(multiply_adds(model))
    batch = batch_for(macs, cap)
    row = {
        "matcher": name,
        "width": width,
        "params_inference": keras_param_count(pruned),
        "macs_per_pair": macs,
        "batch": batch,
        "pairs_per_s": {},
        "parity": {},
    }
    del model, pruned
    rng = np.random.default_rng(0)
    o = rng.random((batch, 64, 64), dtype=np.float32)
    s = rng.random((batch, 64, 64), dtype=np.float32)
    for kind in engines.CPU_RUNTIMES:
        runtime.clear_cache()
        # Fresh initialisation: speed does not depend on the trained values. Built per runtime so each one's
        # parity check against eager is recorded (auto would skip a runtime that fails it).
        scorer = build_scorer_quiet(name, width, kind, batch)
        row["parity"][kind] = scorer.parity
        row["pairs_per_s"][kind] = rate(lambda sc=scorer: sc(o, s), batch, min_time)
        print(f"  {name} w={width} {kind}: {row['pairs_per_s'][kind]:.1f} pairs/s", file=sys.stderr, flush=True)
    runtime.clear_cache()
    # What runtime="auto" picks: the first of its order whose build-time parity check passed (same rule).
    ok = [k for k in engines.AUTO_ORDER_CPU if k == "eager" or row["parity"][k] <= engines.PARITY_TOL]
    row["auto_runtime"] = ok[0]
    return row


def build_scorer_quiet(name, width, kind, batch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("geomatch").setLevel(logging.ERROR)  # "no weights" is the point here, not news
        return runtime.build_scorer(name, weights="none", device="cpu", batch_size=batch, runtime=kind, width=width)


def markdown(rows: list[dict], probes: dict[str, float], roofline: float) -> str:
    lines = ["| probe | GFLOP/s |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in probes.items()]
    lines += ["", f"Roofline (best probe): **{roofline:.1f} GFLOP/s**.", ""]
    kinds = engines.CPU_RUNTIMES
    head = "| matcher | width | params (inference) | MMAC/pair | batch | " + " | ".join(f"{k} pairs/s" for k in kinds)
    head += " | fastest | auto picks | roofline share, eager | roofline share, fastest |"
    lines += [head, "|" + "---|" * (5 + len(kinds) + 4)]
    for r in rows:
        pps = r["pairs_per_s"]
        best = max(pps, key=pps.get)
        macs = r["macs_per_pair"]
        share = lambda v, macs=macs: f"{100 * 2 * macs * v / (roofline * 1e9):.0f} %" if macs else "n/a"
        width = "n/a" if r["width"] is None else f"{r['width']:g}"
        cells = [r["matcher"], width, f"{r['params_inference'] / 1e6:.2f} M", f"{r['macs_per_pair'] / 1e6:,.0f}",
                 str(r["batch"])]
        cells += [f"{pps[k]:,.1f}" for k in kinds]
        cells += [best, r["auto_runtime"], share(pps["eager"]), share(pps[best])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", default="1.0,0.5,0.25", help="comma-separated width multipliers")
    ap.add_argument("--matchers", default="", help="comma-separated names (default: every registered matcher)")
    ap.add_argument("--batch", type=int, default=64, help="largest pairs per scorer call (heavy networks use fewer)")
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds timed per measurement (after warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch / ONNX Runtime threads (default: torch's own)")
    ap.add_argument("--json", default="", help="also write the raw results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.matchers.split(",") if n] or registry.names("matchers")
    widths = [float(w) for w in args.widths.split(",")]

    t0 = time.time()
    load_before = os.getloadavg()
    probes = roofline_probes(args.min_time)
    roofline = max(probes.values())
    rows = []
    for name in names:
        for width in (widths if needs_weights(name) else [None]):
            rows.append(bench_matcher(name, width, args.batch, args.min_time))
    probes_after = roofline_probes(args.min_time)
    meta = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seconds": round(time.time() - t0, 1),
        "probes_after": probes_after,
    }
    print(markdown(rows, probes, roofline))
    print(f"\nProbes repeated at the end: {', '.join(f'{k} {v:.1f}' for k, v in probes_after.items())} GFLOP/s. "
          f"Load average before/after: {load_before[0]:.1f} / {meta['load_average_after'][0]:.1f}. "
          f"{meta['threads']} threads, torch {torch.__version__}, {meta['seconds']:.0f} s in all.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "probes": probes, "roofline": roofline, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
