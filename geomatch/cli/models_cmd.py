"""``geomatch models``."""

import click

from geomatch.errors import GeomatchError


@click.command("models")
def models():
    """Not yet available in this build."""
    raise GeomatchError("geomatch models is not yet available in this build")
