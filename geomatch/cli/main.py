"""The ``geomatch`` group. Commands, ours included, are loaded from the ``geomatch.commands``
entry-point group only when used, so ``geomatch --help`` stays fast and a broken plugin command shows
up as broken instead of breaking the CLI.

Plugin authors: add ``[options.entry_points] geomatch.commands = NAME = pkg.module:command``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import click

from geomatch import __version__, log, registry
from geomatch.errors import GeomatchError

logger = logging.getLogger("geomatch")


class BrokenCommand(click.Command):
    """Stands in for a command whose module failed to import."""

    def __init__(self, name: str, error: str):
        super().__init__(name, help=f"(broken) {error}", short_help="(broken plugin command)")
        self.error = error

    def invoke(self, ctx):
        raise click.ClickException(self.error)


class PluginGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(set(registry.names("commands")) | set(self.commands))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        if name not in registry.names("commands"):
            return None
        try:
            return registry.load("commands", name)
        except GeomatchError as exc:
            return BrokenCommand(name, str(exc))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GeomatchError as exc:
            verbosity = (ctx.obj or {}).get("verbosity", 0)
            if verbosity > 0:
                logger.exception("%s", exc)
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            # By now the unwinding has deleted the run's temporary files and released its claims; every
            # output is written through a temporary file, so nothing the user had was touched.
            click.echo("Interrupted: stopped; no output was written or changed.", err=True)
            _exit_now(INTERRUPTED)


INTERRUPTED = 130  # what shells report for SIGINT


def _exit_now(code: int) -> None:
    """Exit with ``code`` without waiting for worker threads.

    A tile already running in a dask worker thread cannot be stopped from outside and would hold the
    interpreter's exit until its last batch is scored; the process ends instead. Without such threads
    the exit is the ordinary one.
    """
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geomatch")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for more); shows tracebacks.")
@click.option("-q", "--quiet", count=True, help="Less log output (repeat for less).")
@click.pass_context
def cli(ctx, verbose, quiet):
    """Find tie points between co-located optical and SAR rasters with learned patch matchers.

    \b
    Quick start:
      geomatch demo                      # simulated pair, no arguments
      geomatch run --optical S2.tif --sar S1.tif -o tiepoints.gpkg
      geomatch plugins list
    """
    verbosity = verbose - quiet
    ctx.ensure_object(dict)["verbosity"] = verbosity
    log.configure(verbosity)


def main() -> None:  # pragma: no cover - console entry
    cli(prog_name="geomatch")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
