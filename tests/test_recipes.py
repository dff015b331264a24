"""The training recipes in recipes/ use only commands and options the CLI has, so they cannot drift from it."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest

from geomatch.cli.main import cli

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.sh"))


def _commands(script: Path) -> list[list[str]]:
    lines = [line for line in script.read_text().splitlines() if line.startswith("geomatch ")]
    return [shlex.split(line)[1:] for line in lines]


def _parse(cmd: click.Command, name: str, args: list[str], parent=None) -> click.Context:
    ctx = cmd.make_context(name, args, parent=parent)
    if isinstance(cmd, click.Group):
        sub_name, sub, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        return _parse(sub, sub_name, rest, ctx)
    return ctx


def test_there_are_recipes_for_both_shipped_weight_sets():
    names = {p.stem for p in RECIPES}
    assert {"rrlnet-vis-nir", "rrlnet-optical-sar", "rrlnet-full-width-gpu"} <= names


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: p.stem)
def test_recipe_commands_parse(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths the recipe creates as it goes do not exist yet; make them
    commands = _commands(script)
    assert commands, script
    for args in commands:
        args = [a.replace("$DATA", "data").replace("$PATCHES", "patches").replace("$VGG19", "vgg19.pth")
                .replace('"', "") for a in args]
        for a in args:
            if "/" in a and not a.startswith("-"):
                target = tmp_path / a
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.suffix:
                    target.touch()
                else:
                    target.mkdir(exist_ok=True)
        ctx = _parse(cli, "geomatch", args)
        assert ctx.command.name in {"build", "train", "evaluate", "package", "calibrate"}, args
