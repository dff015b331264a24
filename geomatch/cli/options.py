"""Reusable click options and helpers shared by the commands.

=================  ==========================================
option             used by
=================  ==========================================
json_opt           plugins list, pipelines show, models, run, demo, evaluate, dataset build
overwrite_opt      run, demo, train, dataset build
device_opt         run, train, evaluate
output_opt         run, demo
=================  ==========================================
"""

from __future__ import annotations

import json
import sys

import click

json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace existing output files.")
device_opt = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu or cuda[:N] (auto picks CUDA when present)."
)
output_opt = click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file.")


def emit_json(obj) -> None:
    """Write one JSON document to stdout (the only thing commands print to stdout with --json)."""
    click.echo(json.dumps(obj, indent=2, default=str))


def progress_enabled(ctx: click.Context | None = None) -> bool:
    ctx = ctx or click.get_current_context(silent=True)
    verbosity = (ctx.find_root().obj or {}).get("verbosity", 0) if ctx else 0
    return verbosity >= 0 and sys.stderr.isatty()
