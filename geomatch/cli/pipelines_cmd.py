"""``geomatch pipelines``: list shipped pipelines and print a resolved one."""

import click

from geomatch import config, config_text
from geomatch.cli.options import emit_json, json_opt


@click.group()
def pipelines():
    """List and show pipeline files."""


@pipelines.command("list")
@json_opt
def list_(as_json):
    """Pipelines shipped with geomatch."""
    shipped = config.shipped_pipelines()
    if as_json:
        emit_json({name: str(path) for name, path in sorted(shipped.items())})
        return
    for name in sorted(shipped):
        desc = config.load(name).description
        click.echo(f"{name:<16} {desc}")


@pipelines.command("show")
@click.argument("name", default="default")
@click.option("--set", "sets", multiple=True, metavar="STAGE.KEY=VALUE", help="Override a value (TOML syntax).")
@json_opt
def show(name, sets, as_json):
    """Print the resolved pipeline NAME (a shipped name or a .toml path) after defaults and overrides."""
    cfg = config.load(name, config_text.parse_set_options(sets))
    if as_json:
        emit_json(cfg.as_dict())
    else:
        click.echo(config_text.to_toml(cfg), nl=False)
