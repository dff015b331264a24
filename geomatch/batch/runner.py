"""Run a batch: skip the pairs already done, run the rest, and write the summary table of every pair.

A pair is done when its output exists and the ``runs`` record inside it (the GeoPackage's ``runs`` table, or
a CSV's ``.csv.json`` sidecar) names the same resolved pipeline and the same sha256 for every input (rasters
and masks). Such a pair is skipped: nothing is computed or written, and its counts come from that record. An
output that exists but was made from something else is replaced only with ``overwrite``; without it, the pair
fails with a message saying so, and nothing the user had is touched.

Each pair runs on its own through :func:`run_pair`, exactly as ``geomatch run`` would run it (the same
preflight, output claim and pipeline); a pair that fails is reported and the others go on. Without a scheduler
the pairs run one after another in this process, each with its tiles on the local threaded scheduler; with a
dask.distributed ``scheduler`` address every pair is one task, so the cluster spreads pairs over workers, and
a worker that dies has its pair rerun elsewhere. Either way a matcher's model is loaded once per process and
then served from ``geomatch.models.runtime``'s scorer cache for every later pair and tile.

The summary table (one row per pair: status, counts, model RMSE, verdict, seconds, error; CSV or GeoPackage) is
the batch's own report and is rewritten by every run of the batch, atomically. A file at that path that a
batch did not write is a user's file: it is replaced only with ``overwrite``. ``seconds`` is the pair's wall
time in this run, or for a skipped pair the stage times recorded by the run that made its output.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from geomatch import process_limits
from geomatch.batch.manifest import BatchPair
from geomatch.errors import GeomatchError, InputError, OutputExistsError
from geomatch.fileio import atomic_output, check_writable, sha256_file, write_atomic

log = logging.getLogger(__name__)

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
COLUMNS = ("pair_id", "status", "optical", "sar", "output", "points_found", "points_kept", "rmse_px", "verdict",
           "seconds", "error")
SUMMARY_LAYER = "batch"  # the GeoPackage summary table's name
SUMMARY_SUFFIXES = (".csv", ".gpkg")


def _runs_record(output: Path) -> dict | None:
    """The ``runs`` record an earlier run left in ``output``, or None when there is none to read."""
    try:
        if output.suffix.lower() == ".gpkg":
            import pyogrio

            runs = pyogrio.read_dataframe(output, layer="runs", read_geometry=False)
            return runs.iloc[-1].to_dict() if len(runs) else None
        if output.suffix.lower() == ".csv":
            sidecar = output.with_name(output.name + ".json")
            return json.loads(sidecar.read_text(encoding="utf-8"))["runs_record"]
    except Exception:  # unreadable, truncated, another kind of file: not a record of a finished run
        return None
    return None


def _inputs_match(record: dict, pair: BatchPair) -> bool:
    try:
        inputs = json.loads(record["inputs_json"])
    except (KeyError, TypeError, ValueError):
        return False
    expected = {"optical": pair.optical, "sar": pair.sar}
    for role, path in expected.items():
        side = inputs.get(role) or {}
        if side.get("sha256") != sha256_file(path):
            return False
        mask_path = getattr(pair.cfg.pair, f"{role}_mask")
        mask = side.get("mask") or {}
        if bool(mask_path) != bool(mask):
            return False
        if mask_path and mask.get("sha256") != sha256_file(mask_path):
            return False
    return True


def previous_run(pair: BatchPair) -> dict | None:
    """The record of an earlier run of exactly this pair (same inputs, same resolved pipeline), or None."""
    if not (pair.output.is_file() and pair.optical.is_file() and pair.sar.is_file()):
        return None
    record = _runs_record(pair.output)
    if record is None or record.get("pipeline_toml") != pair.pipeline_toml:
        return None
    return record if _inputs_match(record, pair) else None


def _row(pair: BatchPair, status: str, summary: dict | None = None, seconds: float | None = None,
         error: str = "") -> dict:
    summary = summary or {}
    rmse = (summary.get("model") or {}).get("rmse_px")
    return {"pair_id": pair.pair_id, "status": status, "optical": str(pair.optical), "sar": str(pair.sar),
            "output": str(pair.output), "points_found": summary.get("points_found"),
            "points_kept": summary.get("points_kept"), "rmse_px": None if rmse is None else float(rmse),
            "verdict": (summary.get("verdict") or {}).get("status"),
            "seconds": None if seconds is None else round(seconds, 2), "error": error}


def skipped_row(pair: BatchPair, record: dict) -> dict:
    try:
        summary = json.loads(record.get("summary_json") or "{}")
        timings = json.loads(record.get("timings_json") or "{}")
    except ValueError:
        summary, timings = {}, {}
    # Nothing ran now: the time reported is what the stages of the run that made the output took.
    seconds = sum(v for v in timings.values() if isinstance(v, (int, float))) or None
    return _row(pair, SKIPPED, summary, seconds)


def run_pair(pair: BatchPair, overwrite: bool = False) -> dict:
    """Run one pair as ``geomatch run`` would and return its summary row; a failure is returned, not raised,
    so one bad pair never stops the batch (an interrupt still stops it)."""
    from geomatch import preflight

    t = time.perf_counter()
    try:
        # Checked again here: a task rerun after its worker died may find its output already finished.
        record = previous_run(pair)
        if record is not None:
            return skipped_row(pair, record)
        if pair.output.exists() and not overwrite:
            raise GeomatchError(f"output {pair.output} exists and was not made from these inputs with this "
                                "pipeline; pass --overwrite to replace it")
        plan = preflight.check_run(pair.optical, pair.sar, pair.cfg, pair.output, overwrite=overwrite)
        with preflight.claim_run(plan):
            from geomatch.pipeline.run import run_pipeline

            result = run_pipeline(pair.optical, pair.sar, pair.cfg, plan.table, overwrite=overwrite,
                                  plot=plan.plot is not None, fmt=plan.writer)
    except GeomatchError as exc:
        return _row(pair, FAILED, seconds=time.perf_counter() - t, error=str(exc))
    except Exception as exc:  # a bug or an unexpected library error in one pair must not end the others
        log.debug("pair %s", pair.pair_id, exc_info=True)
        return _row(pair, FAILED, seconds=time.perf_counter() - t, error=f"{type(exc).__name__}: {exc}")
    return _row(pair, DONE, result.summary, time.perf_counter() - t)


def _run_local(todo: list[BatchPair], overwrite: bool, report: Callable[[dict], None]) -> None:
    for pair in todo:
        report(run_pair(pair, overwrite))


def _run_distributed(todo: list[BatchPair], overwrite: bool, scheduler: str,
                     report: Callable[[dict], None]) -> None:
    from distributed import Client, as_completed

    with Client(scheduler) as client:
        resources = process_limits.scoring_resources(client)
        if resources:
            log.info("batch: pairs routed to the cluster's GPU workers (%s)", resources)
        futures = {client.submit(run_pair, pair, overwrite, key=f"geomatch-pair-{i}-{pair.pair_id}", pure=False,
                                 resources=resources): pair
                   for i, pair in enumerate(todo)}
        try:
            for fut in as_completed(futures):
                try:
                    report(fut.result())
                except Exception as exc:  # the task itself was lost, e.g. its workers kept dying
                    pair = futures[fut]
                    report(_row(pair, FAILED, error=f"{type(exc).__name__}: {exc}"))
        except BaseException:
            # Ctrl-C: the cluster must not go on running pairs nobody will collect.
            client.cancel(list(futures))
            raise


def run_batch(pairs: list[BatchPair], *, scheduler: str | None = None, overwrite: bool = False,
              progress: bool = False) -> list[dict]:
    """One summary row per pair, in manifest order (see the module docstring for what each status means)."""
    from tqdm import tqdm

    rows: dict[str, dict] = {}
    todo = []
    for pair in pairs:
        record = previous_run(pair)
        if record is not None:
            rows[pair.pair_id] = skipped_row(pair, record)
        else:
            todo.append(pair)
    log.info("batch: %d pairs, %d already done, %d to run%s", len(pairs), len(pairs) - len(todo), len(todo),
             f" on {scheduler}" if scheduler else "")
    bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="pairs", unit="pair", disable=not progress)

    def report(row: dict) -> None:
        rows[row["pair_id"]] = row
        bar.update(1)
        if row["status"] == FAILED:
            log.warning("pair %s failed: %s", row["pair_id"], row["error"])
        else:
            log.info("pair %s: %s tie points kept of %s", row["pair_id"], row["points_kept"], row["points_found"])

    try:
        if scheduler:
            _run_distributed(todo, overwrite, scheduler, report)
        else:
            _run_local(todo, overwrite, report)
    finally:
        bar.close()
    return [rows[p.pair_id] for p in pairs]


def default_summary_path(manifest) -> Path:
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + "-summary.csv")


def _written_by_batch(path: Path) -> bool:
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return f.readline().strip() == ",".join(COLUMNS)
    try:
        import pyogrio

        return SUMMARY_LAYER in {name for name, _ in pyogrio.list_layers(path)}
    except Exception:  # not a GeoPackage at all
        return False


def check_summary(path, overwrite: bool) -> Path:
    """Fail before any pair runs when the summary cannot be written there."""
    path = Path(path)
    if path.suffix.lower() not in SUMMARY_SUFFIXES:
        raise InputError(f"--summary {path}: the summary is a .csv or .gpkg file; choose one of those")
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
        pyogrio.write_dataframe(frame, tmp, layer=SUMMARY_LAYER, driver="GPKG",
                                layer_options={"DESCRIPTION": "geomatch batch: one row per pair"})
    return path
