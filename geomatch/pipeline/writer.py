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

from geomatch import __version__
from geomatch.fileio import atomic_output, check_writable  # noqa: F401  (re-exported until callers move)
from geomatch.pipeline.schema import SCHEMA_VERSION

RUN_FIELDS = ("run_id", "started", "finished", "geomatch_version", "schema_version", "pipeline_toml",
              "inputs_json", "versions_json", "timings_json", "summary_json")


def _json(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {}, sort_keys=True, default=str)


def runs_record(run_info: dict) -> dict:
    """One row of the ``runs`` table from a run-info dict (dict values become JSON text)."""
    return {
        "run_id": str(run_info.get("run_id", "")),
        "started": str(run_info.get("started", "")),
        "finished": str(run_info.get("finished", "")),
        "geomatch_version": str(run_info.get("geomatch_version", __version__)),
        "schema_version": str(run_info.get("schema_version", SCHEMA_VERSION)),
        "pipeline_toml": str(run_info.get("pipeline_toml", "")),
        "inputs_json": _json(run_info.get("inputs_json", run_info.get("inputs"))),
        "versions_json": _json(run_info.get("versions_json", run_info.get("versions"))),
        "timings_json": _json(run_info.get("timings_json", run_info.get("timings"))),
        "summary_json": _json(run_info.get("summary_json", run_info.get("summary"))),
    }


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
