"""Writers' base class and the atomic-output rule every output file goes through.

An output is written to a temporary file in the destination's directory and renamed over the
destination only when complete: an interrupted run never leaves a half-written file where a good one
was, and an existing file is replaced only with ``overwrite`` (``--overwrite`` on the CLI).

Plugin authors: subclass ``Writer``, set ``name`` and ``suffix``, implement ``_write(gdf, run_info,
path)`` writing to the (temporary) ``path`` given, and register the class under the
``geomatch.writers`` entry-point group.
"""

from __future__ import annotations

import json
from pathlib import Path

from geomatch import __version__, registry
from geomatch.errors import InputError
from geomatch.fileio import atomic_output, check_writable  # noqa: F401  (re-exported until callers move)
from geomatch.pipeline.schema import SCHEMA_VERSION

RUN_FIELDS = ("run_id", "started", "finished", "geomatch_version", "schema_version", "matcher", "weights",
              "weights_sha256", "runtime", "device", "gdal_version", "proj_version", "torch_version",
              "onnxruntime_version", "pipeline_toml", "scorer_json", "inputs_json", "versions_json", "timings_json",
              "summary_json")
# The scorer as it actually ran (the pipeline file may say weights = "auto", device = "auto").
_SCORER_FIELDS = ("matcher", "weights", "weights_sha256", "runtime", "device")
_VERSION_FIELDS = {"gdal_version": "gdal", "proj_version": "proj", "torch_version": "torch",
                   "onnxruntime_version": "onnxruntime"}


def _json(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {}, sort_keys=True, default=str)


def _timestamp(value):
    """An ISO-8601 text or epoch value -> a UTC pandas Timestamp (a GeoPackage DateTime); NaT when absent."""
    import pandas as pd

    if value in (None, ""):
        return pd.NaT
    ts = pd.Timestamp(value, unit="s") if isinstance(value, (int, float)) else pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _text(value) -> str | None:
    return None if value is None else str(value)


def runs_record(run_info: dict, write_s: float | None = None) -> dict:
    """One row of the ``runs`` table from a run-info dict (dict values become JSON text).

    ``started``/``finished`` are UTC Timestamps (DateTime fields). The scorer's resolved identity
    (``run_info["scorer"]``, from ``Scorer.describe()``) and the GDAL/PROJ/torch/ONNX Runtime versions
    (``run_info["versions"]``) get columns of their own; ``write_s`` is the time spent writing the tie-point
    table, added to the timings as ``write``.
    """
    scorer = run_info.get("scorer") or {}
    versions = run_info.get("versions") or {}
    timings = dict(run_info.get("timings") or {})
    if write_s is not None:
        timings["write"] = write_s
    record = {
        "run_id": str(run_info.get("run_id", "")),
        "started": _timestamp(run_info.get("started")),
        "finished": _timestamp(run_info.get("finished")),
        "geomatch_version": str(run_info.get("geomatch_version", __version__)),
        "schema_version": str(run_info.get("schema_version", SCHEMA_VERSION)),
        **{name: _text(scorer.get(name)) for name in _SCORER_FIELDS},
        **{col: _text(versions.get(key)) for col, key in _VERSION_FIELDS.items()},
        "pipeline_toml": str(run_info.get("pipeline_toml", "")),
        "scorer_json": _json(scorer),
        "inputs_json": _json(run_info.get("inputs_json", run_info.get("inputs"))),
        "versions_json": _json(run_info.get("versions_json", versions)),
        "timings_json": _json(run_info.get("timings_json", timings)),
        "summary_json": _json(run_info.get("summary_json", run_info.get("summary"))),
    }
    return {name: record[name] for name in RUN_FIELDS}


def writer_suffixes() -> dict[str, str]:
    """Each registered writer's file suffix (lower case, with the dot) -> writer name."""
    out: dict[str, str] = {}
    for name in registry.names("writers"):
        suffix = str(getattr(registry.load("writers", name), "suffix", "")).lower()
        if suffix:
            out.setdefault(suffix, name)
    return out


def writer_for(path, fmt: str | None = None) -> str:
    """The registered writer that writes ``path``: ``fmt`` when given, else the one owning its suffix.

    Raises InputError (exit 2) for an unknown writer name or a suffix no registered writer owns, naming
    the known ones, so ``-o y.shp`` never silently becomes a GeoPackage under a wrong name.
    """
    if fmt:
        if fmt not in registry.names("writers"):
            known = ", ".join(registry.names("writers"))
            raise InputError(f"--format {fmt}: unknown writer; registered writers: {known}")
        return fmt
    suffixes = writer_suffixes()
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes:
        known = ", ".join(f"{s} ({n})" for s, n in sorted(suffixes.items()))
        raise InputError(f"output {path}: no writer for the suffix '{suffix or '(none)'}'; use one of {known} "
                         "or pass --format")
    return suffixes[suffix]


class Writer:
    """Base of the tie-point writers (``geomatch.writers`` entry points)."""

    name = "base"
    suffix = ""

    def outputs(self, path) -> list[Path]:
        """Every file a write to ``path`` creates (sidecars included), for the overwrite check."""
        return [Path(path)]

    def check(self, path, overwrite: bool = False) -> None:
        for p in self.outputs(path):
            check_writable(p, overwrite)

    def write(self, gdf, run_info: dict, path, overwrite: bool = False) -> Path:
        """Write ``gdf`` and the run's metadata to ``path`` atomically; returns ``path``."""
        self.check(path, overwrite)
        with atomic_output(path, overwrite) as tmp:
            self._write(gdf, run_info, tmp)
        return Path(path)

    def _write(self, gdf, run_info: dict, path: Path) -> None:
        raise NotImplementedError(f"writer {self.name} does not implement _write")
