"""``geomatch evaluate``."""

import click

from geomatch.errors import GeomatchError


@click.command("evaluate")
def evaluate():
    """Not yet available in this build."""
    raise GeomatchError("geomatch evaluate is not yet available in this build")
