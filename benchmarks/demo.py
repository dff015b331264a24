"""The README's demo figure, reproduced through the command a user types.

    python benchmarks/demo.py --out benchmarks/demo.json

Runs ``geomatch demo --json`` with the default pipeline and with ``--matcher ncc`` (each in a fresh temporary
folder), and writes both JSON documents plus the command lines, wall time and the Python/platform they ran on.
The demo pair is a real photograph against a SIMULATED SAR twin with a known displacement, so the errors are
exact; see geomatch/demo.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {"default": [], "ncc": ["--matcher", "ncc"]}


def run_demo(extra: list[str]) -> dict:
    exe = shutil.which("geomatch")
    if exe is None:
        sys.exit("geomatch is not on PATH: pip install -e . first")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [exe, "demo", "--out", str(Path(tmp) / "demo"), "--json", *extra]
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    stats = json.loads(done.stdout)
    stats.pop("outputs", None)  # temporary paths, gone once the run is over
    return {"command": " ".join(["geomatch", "demo", "--json", *extra]), "wall_s": round(seconds, 1), **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the JSON here (e.g. benchmarks/demo.json)")
    a = ap.parse_args()
    result = {"python": platform.python_version(), "machine": platform.machine(),
              "runs": {name: run_demo(extra) for name, extra in RUNS.items()}}
    text = json.dumps(result, indent=2) + "\n"
    print(text, end="")
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
