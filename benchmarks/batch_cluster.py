"""`geomatch batch` over the shared real pairs on a loopback cluster, with a worker killed mid-run.

    python benchmarks/batch_cluster.py --out benchmarks/batch_cluster.json [--matcher ncc]

Writes a manifest of 12 real pairs from ../shared/data (GEOMATCH_DATA) at 224² to 1024², plus one broken pair
(its SAR is a truncated copy of a GeoTIFF), starts a `dask scheduler` and two one-thread `dask worker`
processes on 127.0.0.1, runs `geomatch batch --scheduler` and SIGKILLs worker w1 while it runs a pair, then
runs the same batch again. Records both runs' wall time, status counts and summary rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from loopback import loopback_cluster, wait_for

DATA = Path(os.environ.get("GEOMATCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
UAVSAR = "gefolki/lngley_05521_09059_000_090813_L090_CX_01_pauli_x016_y020"
TERRAMIND = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0", "637U_59R_1_3")
# (id, optical, SAR, per-pair overrides): paths under DATA.
PAIRS = [
    *[(f"terramind-{n}", f"s1s2/terramind/S2RGB/{n}.tif", f"s1s2/terramind/S1RTC/{n}.tif", {}) for n in TERRAMIND],
    ("sen1floods11", "s1s2/sen1floods11/Spain_7370579_S2Hand.tif", "s1s2/sen1floods11/Spain_7370579_S1Hand.tif",
     {"pair.optical_bands": "[4, 3, 2]"}),
    ("gefolki-s2-s1", "gefolki/S2_patch11.tif", "gefolki/S1_patch11.tif", {}),
    ("uavsar", f"{UAVSAR}_optique.tif", f"{UAVSAR}_radar.tif", {}),
    ("rift-sar-optical", "rift/sar-optical_pair2.jpg", "rift/sar-optical_pair1.jpg", {}),
    ("rift-infrared-optical", "rift/infrared-optical_pair2.jpg", "rift/infrared-optical_pair1.jpg", {}),
    ("volkov-004", "volkov-s1s2/opt/004.png", "volkov-s1s2/sar/004.png", {}),
    ("volkov-014", "volkov-s1s2/opt/014.png", "volkov-s1s2/sar/014.png", {}),
]


def write_manifest(folder: Path) -> Path:
    broken = folder / "truncated_S1.tif"
    broken.write_bytes((DATA / "gefolki/S1_patch11.tif").read_bytes()[:4096])
    keys = sorted({k for *_, sets in PAIRS for k in sets})
    rows = [["id", "optical", "sar", "output", *keys]]
    for pid, optical, sar, sets in PAIRS:
        rows.append([pid, str(DATA / optical), str(DATA / sar), f"out/{pid}.gpkg", *[sets.get(k, "") for k in keys]])
    rows.append(["broken", str(DATA / "gefolki/S2_patch11.tif"), str(broken), "out/broken.gpkg", *[""] * len(keys)])
    (folder / "out").mkdir()
    manifest = folder / "pairs.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return manifest


def run_batch(cmd: list[str]) -> dict:
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    report = json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr[-3000:]}
    return {"exit_code": done.returncode, "wall_s": round(time.perf_counter() - t, 1), **report}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matcher", default="ncc")
    ap.add_argument("--out", help="write the JSON here")
    a = ap.parse_args()
    exe = Path(sys.executable).with_name("geomatch")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = write_manifest(tmp)
        (tmp / "workers").mkdir()
        with loopback_cluster(tmp / "cluster", cwd=tmp / "workers") as (address, workers):
            import distributed

            cmd = [str(exe), "batch", str(manifest), "--scheduler", address, "--matcher", a.matcher, "--json"]
            if a.matcher == "ncc":
                cmd += ["--set", "match.params={absolute=true}"]  # SAR edges often invert the optical contrast
            first: dict = {}
            runner = threading.Thread(target=lambda: first.update(run_batch(cmd)))
            runner.start()
            with distributed.Client(address, timeout=30) as client:
                names = {addr: w["name"] for addr, w in client.scheduler_info()["workers"].items()}

                def w1_busy():
                    return any(names.get(addr) == "w1" and any("geomatch-pair" in str(k) for k in keys)
                               for addr, keys in client.processing().items())

                wait_for(w1_busy, 600, "a pair on worker w1")
                killed_at = time.strftime("%H:%M:%S")
                workers["w1"].kill()
            runner.join()
            second = run_batch(cmd)
    result = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
              "matcher": a.matcher, "command": " ".join(["geomatch", *cmd[1:]]).replace(address, "ADDRESS"),
              "workers": "2 x `dask worker --nthreads 1`, w1 SIGKILLed while running a pair",
              "killed_at": killed_at, "first_run": first, "rerun": second}
    # Machine-specific folders out of the record: the shared data folder and the run's temporary folder.
    text = (json.dumps(result, indent=2, default=str) + "\n").replace(str(DATA), "$GEOMATCH_DATA")
    text = text.replace(str(tmp), "$TMP")
    print(text, end="")
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
