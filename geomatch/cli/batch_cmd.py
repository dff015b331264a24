"""``geomatch batch``: every pair of a manifest as one resumable job, locally or on a dask.distributed cluster."""

from __future__ import annotations

import logging
from collections import Counter

import click

from geomatch.cli.options import emit_json, json_opt, overwrite_opt, progress_enabled

log = logging.getLogger(__name__)


@click.command("batch")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--pipeline", default="default", show_default=True,
              help="Pipeline for pairs whose manifest row names none (a shipped name or a .toml file).")
@click.option("--set", "sets", multiple=True, metavar="STAGE.KEY=VALUE",
              help="Override a pipeline value for every pair (a pair's own overrides beat it).")
@click.option("--matcher", help="Matcher plugin for every pair (as --set match.plugin=NAME).")
@click.option("--scheduler", help="dask.distributed scheduler address: one task per pair; default: this process.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False),
              help="Summary table, .csv or .gpkg [default: MANIFEST's name + -summary.csv, beside it].")
@overwrite_opt
@json_opt
def batch(manifest, pipeline, sets, matcher, scheduler, summary_path, overwrite, as_json):
    """Find tie points for every pair listed in MANIFEST (CSV or JSON: optical, sar, output, optional id,
    pipeline and per-pair overrides; relative paths are read from the manifest's folder).

    A pair whose output already holds a run of the same inputs (sha256) with the same resolved pipeline is
    skipped, so an interrupted batch is resumed by running it again. A failed pair is reported in the
    summary and the others go on; the exit code is 1 when any pair failed. With --overwrite, outputs made
    from other inputs or another pipeline are replaced; without it those pairs fail and keep their files.

    \b
    Examples:
      geomatch batch pairs.csv
      geomatch batch pairs.json --matcher ncc --summary report.gpkg
      geomatch batch pairs.csv --scheduler tcp://10.0.0.5:8786
    """
    from geomatch import config_text, preflight
    from geomatch.batch.manifest import read_manifest
    from geomatch.batch.runner import FAILED, check_summary, default_summary_path, run_batch, write_summary

    overrides = config_text.parse_set_options(sets)
    if matcher:
        overrides["match.plugin"] = matcher
    pairs = read_manifest(manifest, pipeline, overrides)
    summary = check_summary(summary_path or default_summary_path(manifest), overwrite)
    if scheduler:
        preflight.check_scheduler(scheduler)
    rows = run_batch(pairs, scheduler=scheduler, overwrite=overwrite, progress=progress_enabled())
    write_summary(rows, summary)
    counts = Counter(row["status"] for row in rows)
    if as_json:
        emit_json({"summary": str(summary), "counts": dict(counts), "pairs": rows})
    else:
        log.info("batch: %s; summary: %s", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), summary)
    if counts.get(FAILED):
        raise click.exceptions.Exit(1)
