"""Reusable click options and helpers shared by the commands.

=================  ==========================================
option             used by
=================  ==========================================
json_opt           plugins list, pipelines show, models, run, demo, evaluate, dataset build
overwrite_opt      run, demo, train, dataset build
device_opt         run, train, evaluate
output_opt         run, demo
progress_opt       run, register
RegistryChoice     run --format (any registered writer)
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
progress_opt = click.option("--progress/--no-progress", "progress", default=None,
                            help="Progress bars on stderr; default: on when stderr is a terminal (not with -q).")


class RegistryChoice(click.Choice):
    """A choice among the registered plugins of one kind, read when the option is used, not hard-coded:
    a writer installed by another distribution is a valid ``--format`` as soon as it is registered."""

    def __init__(self, kind: str):
        self.kind = kind
        super().__init__([])

    @property
    def choices(self):
        from geomatch import registry

        return tuple(registry.names(self.kind))

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ assigns it; the registry is the only source
        pass


def emit_json(obj) -> None:
    """Write one JSON document to stdout (the only thing commands print to stdout with --json)."""
    click.echo(json.dumps(obj, indent=2, default=str))


def progress_enabled(ctx: click.Context | None = None, flag: bool | None = None) -> bool:
    """``--progress``/``--no-progress`` when given (``flag``), else on for a terminal unless quietened."""
    if flag is not None:
        return flag
    ctx = ctx or click.get_current_context(silent=True)
    verbosity = (ctx.find_root().obj or {}).get("verbosity", 0) if ctx else 0
    return verbosity >= 0 and sys.stderr.isatty()
