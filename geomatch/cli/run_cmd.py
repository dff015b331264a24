"""``geomatch run``."""

import click

from geomatch.errors import GeomatchError


@click.command("run")
def run():
    """Not yet available in this build."""
    raise GeomatchError("geomatch run is not yet available in this build")
