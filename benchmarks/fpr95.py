"""The README's FPR95 table (benchmarks/weights.md has the discussion), as raw JSON.

    python benchmarks/fpr95.py --out benchmarks/fpr95.json [--data-root data]

Runs ``geomatch evaluate ... --json`` for every row whose patch set exists under --data-root and records, for
the others, the command that builds the set. The patch sets are gitignored (they are cut from
../shared/data, whose licences are not ours to re-grant), so build them first:

    geomatch dataset build --preset vis-nir --source ../shared/data/vis-nir --out data/vis-nir-patches
    geomatch dataset build --preset optical-sar --data-dir ../shared/data --out data/optical-sar-patches
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

BUILD = {
    "vis-nir-patches": "geomatch dataset build --preset vis-nir --source ../shared/data/vis-nir "
                       "--out data/vis-nir-patches",
    "optical-sar-patches": "geomatch dataset build --preset optical-sar --data-dir ../shared/data "
                           "--out data/optical-sar-patches",
}
# (row label, patch-set folder, evaluate arguments with {data} for the folder): the README table's rows.
ROWS = [
    ("vis-nir weights on Field and Forest", "vis-nir-patches",
     ["--weights", "vis-nir", "--dataset", "vis-nir", "--data-dir", "{data}"]),
    ("NCC on Field and Forest", "vis-nir-patches",
     ["--model", "ncc", "--dataset", "vis-nir", "--data-dir", "{data}"]),
    ("optical-sar weights on the held-out S1/S2 scenes", "optical-sar-patches",
     ["--weights", "optical-sar", "--dataset", "{data}"]),
    ("vis-nir weights zero-shot on the held-out S1/S2 scenes", "optical-sar-patches",
     ["--weights", "vis-nir", "--dataset", "{data}"]),
    ("signed NCC on the held-out S1/S2 scenes", "optical-sar-patches",
     ["--model", "ncc", "--dataset", "{data}"]),
    ("|NCC| on the held-out S1/S2 scenes", "optical-sar-patches",
     ["--model", "ncc", "--param", "absolute=true", "--dataset", "{data}"]),
]


def run_row(exe: str, args: list[str], folder: Path) -> dict:
    cmd = [exe, "evaluate", *[a.replace("{data}", str(folder)) for a in args], "--json"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    shown = " ".join(["geomatch", *cmd[1:]])
    if done.returncode != 0:
        return {"command": shown, "status": "failed", "exit_code": done.returncode, "stderr": done.stderr[-2000:]}
    return {"command": shown, "status": "done", "wall_s": round(seconds, 1), "report": json.loads(done.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="data", help="folder holding the built patch sets [data]")
    ap.add_argument("--out", help="write the JSON here (e.g. benchmarks/fpr95.json)")
    a = ap.parse_args()
    exe = shutil.which("geomatch")
    if exe is None:
        sys.exit("geomatch is not on PATH: pip install -e . first")
    rows = []
    for label, name, args in ROWS:
        folder = Path(a.data_root) / name
        if folder.is_dir():
            rows.append({"row": label, **run_row(exe, args, folder)})
        else:
            rows.append({"row": label, "status": "missing", "reason": f"{folder} not found; build it with: "
                         f"{BUILD[name]}"})
        print(f"{label}: {rows[-1]['status']}", file=sys.stderr)
    text = json.dumps({"python": platform.python_version(), "machine": platform.machine(), "rows": rows},
                      indent=2) + "\n"
    print(text, end="")
    if a.out:
        Path(a.out).write_text(text)
    if any(r["status"] == "failed" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
