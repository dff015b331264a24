"""CLI basics: version, module entry, logging levels, exit codes."""

import json
import subprocess
import sys

from geomatch import __version__
from geomatch.cli.main import cli


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "geomatch", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_plugins_list_json_on_stdout(runner):
    result = runner.invoke(cli, ["plugins", "list", "--json", "--kind", "writers"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} >= {"gpkg", "csv", "vrt"}
    assert all(r["kind"] == "writers" for r in rows)


def test_pipelines_show_applies_set_and_json(runner):
    result = runner.invoke(cli, ["pipelines", "show", "default", "--set", "match.search_radius=5", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["match"]["search_radius"] == 5.0


def test_config_error_exit_code_2_one_line_no_traceback(runner, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[match]\nradius = 3\n")
    result = runner.invoke(cli, ["pipelines", "show", str(bad)])
    assert result.exit_code == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and "unknown key 'radius'" in err[0]
    assert "Traceback" not in result.output


def test_verbose_shows_traceback(runner, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[match]\nradius = 3\n")
    result = runner.invoke(cli, ["-v", "pipelines", "show", str(bad)])
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_usage_error_exit_2(runner):
    result = runner.invoke(cli, ["plugins", "list", "--kind", "nonsense"])
    assert result.exit_code == 2


def test_every_command_has_unique_option_names(runner):
    import click

    from geomatch import registry

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])
        else:
            yield path, cmd

    for name in registry.names("commands"):
        top = registry.load("commands", name)
        for path, cmd in walk(top, [name]):
            opts = [o for p in cmd.params for o in getattr(p, "opts", [])]
            assert len(opts) == len(set(opts)), f"duplicate options in {' '.join(path)}: {opts}"


def test_format_choices_come_from_the_registry(runner, monkeypatch):
    from geomatch import registry

    real = registry.names
    monkeypatch.setattr(registry, "names",
                        lambda kind: [*real(kind), "thirdparty"] if kind == "writers" else real(kind))
    result = runner.invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    assert "thirdparty" in result.output and all(name in result.output for name in real("writers"))


def test_ctrl_c_exits_130_with_one_line(runner, monkeypatch, tmp_path):
    from geomatch import preflight

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def exit_without_cleanup(code):  # what the CLI does when worker threads are alive: not in pytest's process
        raise SystemExit(code)

    monkeypatch.setattr(preflight, "check_run", interrupted)
    monkeypatch.setattr("geomatch.cli.main.os._exit", exit_without_cleanup)
    result = runner.invoke(cli, ["run", "--optical", "a.tif", "--sar", "b.tif", "-o", str(tmp_path / "x.gpkg")])
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines() == ["Interrupted: stopped; no output was written or changed."]
