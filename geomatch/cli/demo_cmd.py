"""``geomatch demo``."""

import click

from geomatch.errors import GeomatchError


@click.command("demo")
def demo():
    """Not yet available in this build."""
    raise GeomatchError("geomatch demo is not yet available in this build")
