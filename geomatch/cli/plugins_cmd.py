"""``geomatch plugins``: what is installed, from which distribution, and whether it loads."""

import click

from geomatch import registry
from geomatch.cli.options import emit_json, json_opt


@click.group()
def plugins():
    """Inspect installed matcher, detector, writer and command plugins."""


@plugins.command("list")
@click.option("--kind", type=click.Choice(sorted(registry.GROUPS)), help="Only this kind.")
@click.option("--check", is_flag=True, help="Import every plugin to find errors inside modules (imports torch).")
@json_opt
def list_(kind, check, as_json):
    """List plugins without importing them (add --check to import each one).

    \b
    Example:
      geomatch plugins list --kind matchers --json
    """
    infos = registry.list_plugins(kind, check=check)
    if as_json:
        emit_json([i.as_dict() for i in infos])
        return
    for i in infos:
        mark = {"ok": "", "unchecked": "", "broken": "  BROKEN"}[i.status]
        click.echo(f"{i.kind:<10} {i.name:<12} {i.value:<48} [{i.dist}]{mark}")
        if i.error:
            click.echo(f"{'':<11}{i.error}")
