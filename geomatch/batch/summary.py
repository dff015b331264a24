"""The batch's summary table: one row per pair (status, counts, model RMSE, time, error), as CSV or GeoPackage.

The table is the batch's own report and is rewritten by every run of the batch (atomically, so an interrupted
run leaves the previous one). A file at that path that a batch did not write is a user's file: it is
replaced only with ``overwrite``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from geomatch.errors import OutputExistsError
from geomatch.fileio import atomic_output, check_writable, write_atomic

COLUMNS = ("pair_id", "status", "optical", "sar", "output", "points_found", "points_kept", "rmse_px", "verdict",
           "seconds", "error")
LAYER = "batch"  # the GeoPackage table's name
SUFFIXES = (".csv", ".gpkg")


def default_path(manifest) -> Path:
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + "-summary.csv")


def _written_by_batch(path: Path) -> bool:
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return f.readline().strip() == ",".join(COLUMNS)
    try:
        import pyogrio

        return LAYER in {name for name, _ in pyogrio.list_layers(path)}
    except Exception:  # not a GeoPackage at all
        return False


def check_summary(path, overwrite: bool) -> Path:
    """Fail before any pair runs when the summary cannot be written there."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise OutputExistsError(f"--summary {path}: the summary is a .csv or .gpkg file; choose one of those")
    if path.is_file() and not overwrite and not _written_by_batch(path):
        raise OutputExistsError(f"--summary {path} exists and is not a geomatch batch summary; pass --overwrite "
                                "to replace it or choose another --summary")
    return check_writable(path, overwrite=True)


def write_summary(rows: list[dict], path) -> Path:
    path = Path(path)
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS} for row in rows)
        write_atomic(path, buf.getvalue().encode("utf-8"))
        return path
    import pandas as pd
    import pyogrio

    frame = pd.DataFrame([{k: row.get(k) for k in COLUMNS} for row in rows], columns=list(COLUMNS))
    for col in ("points_found", "points_kept"):
        frame[col] = frame[col].astype("Int64")
    with atomic_output(path, overwrite=True) as tmp:
        pyogrio.write_dataframe(frame, tmp, layer=LAYER, driver="GPKG",
                                layer_options={"DESCRIPTION": "geomatch batch: one row per pair"})
    return path
