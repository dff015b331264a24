"""How fast ``geomatch run`` answers a run that cannot succeed, and how fast Ctrl-C stops one that is matching.

Each preflight fault runs ``geomatch run`` as a fresh process (the console script, as a user types it) and
takes the wall time to its exit; the target is under 2 s for a missing input (it took 10-19 s while the
message waited for torch). The interrupt case starts a real run on a 480 x 480 pair, sends SIGINT once the
matching stage has begun and times the exit (it took 65 s and exited 1).

    python benchmarks/startup.py --repeat 5 --json benchmarks/startup.json   # markdown table on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.factories import make_pair  # noqa: E402

NCC = ["--matcher", "ncc", "--set", "match.params={absolute=true}"]


def geomatch_cmd() -> list[str]:
    exe = shutil.which("geomatch", path=str(Path(sys.executable).parent)) or shutil.which("geomatch")
    return [exe] if exe else [sys.executable, "-m", "geomatch"]


def faults(d: Path) -> dict[str, list[str]]:
    base = ["run", "--optical", str(d / "optical.tif"), "--sar", str(d / "sar.tif"), *NCC]
    return {
        "missing input file": ["run", "--optical", str(d / "nope.tif"), "--sar", str(d / "sar.tif"), "-o",
                               str(d / "tp.gpkg")],
        "--tile-size 0": [*base, "-o", str(d / "tp.gpkg"), "--tile-size", "0"],
        "output exists": [*base, "-o", str(d / "exists.gpkg")],
        "-o out.png --format gpkg": [*base, "-o", str(d / "out.png"), "--format", "gpkg", "--overwrite"],
        "unknown suffix .xyz": [*base, "-o", str(d / "tp.xyz")],
        "--scheduler tcp://127.0.0.1:1": [*base, "-o", str(d / "tp.gpkg"), "--scheduler", "tcp://127.0.0.1:1"],
        "read-only folder (/sys)": [*base, "-o", "/sys/tp.gpkg"],
        "truncated TIFF": ["run", "--optical", str(d / "optical.tif"), "--sar", str(d / "truncated.tif"), "-o",
                           str(d / "tp.gpkg"), *NCC],
    }


def time_fault(args: list[str], repeat: int) -> tuple[list[float], int, str]:
    times, rc, line = [], 0, ""
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(geomatch_cmd() + args, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        rc, line = proc.returncode, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    return times, rc, line


def time_interrupt(d: Path) -> dict:
    big = d / "big"
    big.mkdir()
    make_pair(big, shift=(2.3, -1.4), size=(480, 480), seed=3)
    args = ["run", "--optical", str(big / "optical.tif"), "--sar", str(big / "sar.tif"), "-o", str(big / "tp.gpkg"),
            *NCC, "--tile-size", "480", "--search-radius", "30", "--no-plot"]  # one tile, running when signalled
    proc = subprocess.Popen(geomatch_cmd() + args, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "coarse transform" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    t = time.perf_counter()
    tail = proc.stderr.read()
    rc = proc.wait()
    return {"stop_s": time.perf_counter() - t, "rc": rc, "last_line": tail.strip().splitlines()[-1],
            "left_in_folder": sorted(p.name for p in big.iterdir() if p.suffix != ".tif")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_pair(d, shift=(2.3, -1.4), size=(96, 112), seed=3)
        (d / "exists.gpkg").write_bytes(b"x")
        data = (d / "sar.tif").read_bytes()
        (d / "truncated.tif").write_bytes(data[: len(data) // 2])
        rows = {}
        for name, fault_args in faults(d).items():
            times, rc, line = time_fault(fault_args, args.repeat)
            rows[name] = {"median_s": statistics.median(times), "max_s": max(times), "rc": rc, "message": line}
        interrupt = time_interrupt(d)
    load = os.getloadavg()
    print(f"{platform.node()} {platform.python_version()}, load average {load[0]:.1f}, "
          f"{args.repeat} runs each\n")
    print("| fault | exit | median s | max s |\n|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['rc']} | {r['median_s']:.2f} | {r['max_s']:.2f} |")
    print(f"\nSIGINT during matching: exit {interrupt['rc']} after {interrupt['stop_s']:.2f} s; "
          f"left in the folder: {interrupt['left_in_folder'] or 'nothing'}")
    if args.json:
        args.json.write_text(json.dumps({"faults": rows, "interrupt": interrupt, "load_average": load,
                                         "repeat": args.repeat}, indent=2) + "\n")


if __name__ == "__main__":
    main()
