"""``geomatch dataset``."""

import click

from geomatch.errors import GeomatchError


@click.command("dataset")
def dataset():
    """Not yet available in this build."""
    raise GeomatchError("geomatch dataset is not yet available in this build")
