"""The batch manifest: which pairs to run, where to write them, and each pair's resolved pipeline.

A manifest is a CSV file with a header row, or a JSON file (a list of objects, or ``{"pairs": [...]}``):

- ``optical``, ``sar``, ``output`` (required): paths; relative ones are taken from the manifest's folder,
  so a manifest and its rasters can move together;
- ``id`` (optional): the pair's name in the summary, default its 1-based row number;
- ``pipeline`` (optional): a shipped pipeline name or a .toml file, default the batch's ``--pipeline``;
- per-pair overrides: in CSV, a column named ``STAGE.KEY`` (an empty cell leaves the value alone; values
  are read as ``--set`` values); in JSON, a ``set`` object ``{"STAGE.KEY": value}``.

Everything a manifest can get wrong (a missing column, an unknown key, an out-of-range value, two pairs
writing one file) is an InputError naming the manifest and the row, raised before any pair runs. A pair whose
rasters turn out to be unreadable is not a manifest error: it fails on its own and the others go on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from geomatch import config, config_text
from geomatch.errors import GeomatchError, InputError

REQUIRED = ("optical", "sar", "output")
OPTIONAL = ("id", "pipeline", "set")
# Pipeline values that name files: made absolute here, as the rasters are, before a task leaves the client.
# match.weights names a file only when it looks like one (a shipped tag such as optical-sar does not).
PATH_KEYS = (("pair", "optical_mask"), ("pair", "sar_mask"))
WEIGHTS_KEY = ("match", "weights")


class ManifestError(InputError):
    """A manifest that cannot be run as written."""


@dataclass(frozen=True)
class BatchPair:
    """One pair, ready to run anywhere: absolute paths and the fully resolved pipeline."""

    pair_id: str
    optical: Path
    sar: Path
    output: Path
    cfg: config.PipelineConfig

    @property
    def pipeline_toml(self) -> str:
        return config_text.to_toml(self.cfg)


def _rows(path: Path) -> list[tuple[str, dict]]:
    """(where, raw row) for each pair: ``where`` is how an error names the row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"manifest {path}: cannot be read ({exc.strerror or exc}); give an existing CSV or "
                            "JSON file") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest {path}: not valid JSON ({exc}); fix the file") from exc
        pairs = data.get("pairs") if isinstance(data, dict) else data
        if not isinstance(pairs, list) or not all(isinstance(p, dict) for p in pairs):
            raise ManifestError(f"manifest {path}: expected a list of pair objects or {{\"pairs\": [...]}}")
        return [(f"{path} pair {i}", dict(p)) for i, p in enumerate(pairs, 1)]
    if path.suffix.lower() != ".csv":
        raise ManifestError(f"manifest {path}: unknown kind '{path.suffix or '(no suffix)'}'; use a .csv or .json "
                            "file")
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "set" in header:
        raise ManifestError(f"manifest {path}: a CSV gives overrides as STAGE.KEY columns, not a 'set' column")
    rows = []
    for line, raw in enumerate(reader, 2):
        if None in raw:
            raise ManifestError(f"manifest {path} line {line}: more cells than header columns")
        cells = {k.strip(): (v or "").strip() for k, v in raw.items()}
        # A column without a dot is a field (unknown ones are reported below); one with a dot is an override.
        row = {k: v for k, v in cells.items() if "." not in k and v}
        dotted = {k: v for k, v in cells.items() if "." in k and v}
        row["set"] = config_text.parse_set_options([f"{k}={v}" for k, v in dotted.items()])
        rows.append((f"{path} line {line}", row))
    return rows


def _absolute(value, base: Path) -> Path:
    path = Path(str(value)).expanduser()
    return (path if path.is_absolute() else base / path).absolute()


def _file_or_name(value: str, suffix: str, base: Path) -> str:
    """A value that looks like a file (it ends in ``suffix`` or holds a separator) made absolute from ``base``;
    a name (a shipped pipeline, a weights tag) left as it is."""
    return str(_absolute(value, base)) if value.endswith(suffix) or "/" in value else value


def _overrides(where: str, sets, base: Path) -> dict:
    """Overrides with their file values made absolute from ``base``."""
    if not isinstance(sets, dict):
        raise ManifestError(f"{where}: 'set' must be an object of STAGE.KEY: value")
    out = {}
    for key, value in sets.items():
        stage_key = tuple(str(key).replace("__", ".").split(".", 1))
        if stage_key in PATH_KEYS and value:
            value = str(_absolute(value, base))
        elif stage_key == WEIGHTS_KEY and isinstance(value, str):
            value = _file_or_name(value, ".pt", base)
        out[str(key)] = value
    return out


def read_manifest(path, pipeline: str = "default", overrides: dict | None = None) -> list[BatchPair]:
    """Every pair of the manifest at ``path``, resolved: ``pipeline`` and ``overrides`` (``--set``) are the
    batch's defaults, which a pair's own ``pipeline`` column and overrides beat."""
    path = Path(path)
    base = path.parent.absolute()
    # The batch's own options name files from the working folder, a manifest's rows from the manifest's.
    pipeline = _file_or_name(pipeline, ".toml", Path.cwd())
    overrides = _overrides("--set", overrides or {}, Path.cwd())
    pairs: list[BatchPair] = []
    seen_ids: dict[str, str] = {}
    seen_outputs: dict[Path, str] = {}
    for number, (where, row) in enumerate(_rows(path), 1):
        unknown = sorted(k for k in row if k not in REQUIRED + OPTIONAL)
        if unknown:
            raise ManifestError(f"{where}: unknown field(s) {', '.join(unknown)}; fields: "
                                f"{', '.join(REQUIRED + OPTIONAL)}")
        missing = [k for k in REQUIRED if not str(row.get(k) or "").strip()]
        if missing:
            raise ManifestError(f"{where}: no {', '.join(missing)}; every pair needs {', '.join(REQUIRED)}")
        pair_id = str(row.get("id") or number)
        if pair_id in seen_ids:
            raise ManifestError(f"{where}: id '{pair_id}' is used twice (also {seen_ids[pair_id]}); ids must differ")
        seen_ids[pair_id] = where
        try:
            row_pipeline = _file_or_name(str(row["pipeline"]), ".toml", base) if row.get("pipeline") else pipeline
            cfg = config.load(row_pipeline, {**overrides, **_overrides(where, row.get("set") or {}, base)})
        except GeomatchError as exc:
            raise ManifestError(f"{where}: {exc}") from exc
        item = BatchPair(pair_id, _absolute(row["optical"], base), _absolute(row["sar"], base),
                         _absolute(row["output"], base), cfg)
        if item.output in seen_outputs:
            raise ManifestError(f"{where}: output {item.output} is also written by {seen_outputs[item.output]}; "
                                "give every pair its own output")
        seen_outputs[item.output] = where
        pairs.append(item)
    inputs = {p: q.pair_id for q in pairs for p in (q.optical, q.sar)}
    for item in pairs:
        if item.output in inputs:
            raise ManifestError(f"manifest {path}: pair {item.pair_id} writes {item.output}, an input of pair "
                                f"{inputs[item.output]}; choose another output")
    if not pairs:
        raise ManifestError(f"manifest {path}: no pairs; add rows with {', '.join(REQUIRED)}")
    return pairs
