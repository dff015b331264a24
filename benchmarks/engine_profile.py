"""Where the shipped matcher's ONNX Runtime engine spends its time: a per-op-type profile of one session.

Builds the inference form of the shipped weights (default: ``optical-sar``, RRL-Net w0.25), exports it the
way the engine does (``geomatch.models.export.onnx_bytes``, onnxscript optimiser included), opens an ONNX
Runtime session with the engine's thread settings and ``enable_profiling``, runs ``--calls`` batches of
``--batch`` random pairs (the pipeline's default batch is 256) after a warm-up, and sums the profiler's node
events by op type. Fused nodes are reported under the op type ONNX Runtime ran (e.g. ``FusedConv``).

    python benchmarks/engine_profile.py --batch 256 --calls 20 > benchmarks/engine_profile.md
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

from geomatch.models.export import onnx_bytes
from geomatch.models.factory import build_matcher
from geomatch.models.weights import resolve_weights


def session(data: bytes, threads: int, profile_prefix: str | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def op_shares(trace_path: str, calls: int) -> tuple[dict[str, tuple[float, int]], float]:
    """{op type: (microseconds per call, nodes)} from the profiler's kernel events, and the run time per call."""
    with open(trace_path) as f:
        events = json.load(f)
    per_op: dict[str, float] = collections.defaultdict(float)
    nodes: dict[str, set] = collections.defaultdict(set)
    runs = []
    for ev in events:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            op = ev["args"].get("op_name", "?")
            per_op[op] += ev["dur"]
            nodes[op].add(ev["name"])
        elif ev.get("cat") == "Session" and ev["name"] == "model_run":
            runs.append(ev["dur"])
    # The first model_run is the warm-up: drop its kernel time in proportion (all runs have the same nodes).
    timed = runs[-calls:]
    scale = calls / max(1, len(runs))
    return ({op: (t * scale / calls, len(nodes[op])) for op, t in per_op.items()},
            float(np.mean(timed)) if timed else 0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="optical-sar", help="a shipped weights tag")
    ap.add_argument("--batch", type=int, default=256, help="pairs per session.run (the pipeline's default)")
    ap.add_argument("--calls", type=int, default=20, help="timed calls after one warm-up")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (default: torch's own)")
    args = ap.parse_args(argv)
    threads = args.threads or torch.get_num_threads()

    resolved = resolve_weights("rrlnet", args.weights)
    model = build_matcher("rrlnet", weights=resolved.path, expected_sha256=resolved.sha256).prune().eval()
    p = model.config.patch_size
    rng = np.random.default_rng(0)
    feeds = {"optical": rng.random((args.batch, 1, p, p), dtype=np.float32),
             "sar": rng.random((args.batch, 1, p, p), dtype=np.float32)}  # fmt: skip
    data = onnx_bytes(model)

    with tempfile.TemporaryDirectory() as tmp:
        sess = session(data, threads, os.path.join(tmp, "ort"))
        for _ in range(args.calls + 1):
            sess.run(None, feeds)
        trace = sess.end_profiling()
        shares, run_us = op_shares(trace, args.calls)
    # Wall pairs/s without the profiler's own overhead, same session settings.
    plain = session(data, threads, None)
    plain.run(None, feeds)
    t0 = time.perf_counter()
    for _ in range(args.calls):
        plain.run(None, feeds)
    pairs_s = args.calls * args.batch / (time.perf_counter() - t0)

    total = sum(t for t, _ in shares.values())
    print(f"RRL-Net weights `{args.weights}` (width {model.config.width:g}), batch {args.batch}, "
          f"{threads} intra-op threads, {args.calls} calls: {run_us / 1e3:.1f} ms per call in the profiler "
          f"(kernels {total / 1e3:.1f} ms), {pairs_s:.1f} pairs/s without it.\n")
    print("| op type | nodes | ms per call | share of kernel time |")
    print("|---|---:|---:|---:|")
    for op, (t, n) in sorted(shares.items(), key=lambda kv: -kv[1][0]):
        print(f"| {op} | {n} | {t / 1e3:.2f} | {100 * t / total:.1f} % |")
    print(f"\nCommand: `python {' '.join(sys.argv)}`; onnxruntime {__import__('onnxruntime').__version__}, "
          f"torch {torch.__version__}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
