"""``geomatch train``."""

import click

from geomatch.errors import GeomatchError


@click.command("train")
def train():
    """Not yet available in this build."""
    raise GeomatchError("geomatch train is not yet available in this build")
