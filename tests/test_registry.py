"""Plugin registry: lazy listing, broken plugins reported with their distribution."""

import subprocess
import sys
import textwrap

import pytest

from geomatch import registry
from geomatch.cli.main import cli
from geomatch.errors import BrokenPluginError, UnknownPluginError


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """Install a fake distribution on sys.path whose entry points are broken in three ways."""
    (tmp_path / "fake_broken_mod.py").write_text("raise ImportError('needs libfoo, which is missing')\n")
    # Imports fine, but names objects that do not fit their groups' contracts.
    (tmp_path / "fake_wrong_mod.py").write_text(textwrap.dedent(
        """
        class Corners:
            def detect(self, image, valid, max_points):
                return []

        def cmd():
            pass
        """
    ))
    info = tmp_path / "fakegeo-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakegeo\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [geomatch.matchers]
            ghostnet = fake_missing_module:Ghost
            crashnet = fake_broken_mod:Crash
            wrongnet = fake_wrong_mod:Corners
            [geomatch.detectors]
            wrongdet = fake_wrong_mod:Corners
            [geomatch.commands]
            crashcmd = fake_broken_mod:cmd
            wrongcmd = fake_wrong_mod:cmd
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield
    registry.refresh()


def test_own_plugins_registered_through_entry_points():
    assert {"scfdm", "afdnet", "mfdnet", "efrnet", "filnet", "rrlnet", "ncc"} <= set(registry.names("matchers"))
    assert {"harris", "shi-tomasi"} <= set(registry.names("detectors"))
    assert {"gpkg", "csv", "vrt"} <= set(registry.names("writers"))
    infos = {i.name: i for i in registry.list_plugins("matchers")}
    assert infos["rrlnet"].dist.startswith("geomatch ")
    assert infos["rrlnet"].value == "geomatch_plugins.matchers.rrlnet:RRLNet"


def test_listing_does_not_import_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from geomatch.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['plugins', 'list', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_module_listed_as_broken_without_import(fake_dist):
    infos = {i.name: i for i in registry.list_plugins("matchers")}
    assert infos["ghostnet"].status == "broken"
    assert "fake_missing_module" in infos["ghostnet"].error
    assert infos["ghostnet"].dist == "fakegeo 1.2"
    # Without --check a module that exists but fails inside is not executed, so it is 'unchecked'.
    assert infos["crashnet"].status == "unchecked"


def test_check_imports_and_reports_error_inside_module(fake_dist):
    infos = {i.name: i for i in registry.list_plugins("matchers", check=True)}
    assert infos["crashnet"].status == "broken"
    assert "needs libfoo" in infos["crashnet"].error


def test_using_broken_plugin_names_plugin_and_distribution(fake_dist):
    with pytest.raises(BrokenPluginError) as exc:
        registry.load("matchers", "crashnet")
    msg = str(exc.value)
    assert "crashnet" in msg and "fakegeo 1.2" in msg and "needs libfoo" in msg
    assert exc.value.exit_code == 1


@pytest.mark.parametrize("kind, name, contract", [
    ("detectors", "wrongdet", "geomatch.pipeline.detector.Detector"),
    ("matchers", "wrongnet", "geomatch.models.base.Matcher"),
    ("commands", "wrongcmd", "click.core.Command"),
])
def test_plugin_that_does_not_fit_its_contract_is_broken(fake_dist, kind, name, contract):
    with pytest.raises(BrokenPluginError) as exc:
        registry.load(kind, name)
    msg = str(exc.value)
    assert name in msg and "fakegeo 1.2" in msg and contract in msg
    assert exc.value.exit_code == 1
    infos = {i.name: i for i in registry.list_plugins(kind, check=True)}
    assert infos[name].status == "broken" and contract in infos[name].error


def test_own_plugins_fit_their_contracts():
    from geomatch.pipeline.detector import Detector
    from geomatch.pipeline.writer import Writer

    for kind in ("detectors", "writers", "commands"):
        infos = registry.list_plugins(kind, check=True)
        assert infos and all(i.status == "ok" for i in infos), [i for i in infos if i.status != "ok"]
    assert all(issubclass(registry.load("detectors", n), Detector) for n in registry.names("detectors"))
    assert all(issubclass(registry.load("writers", n), Writer) for n in registry.names("writers"))


def test_unknown_plugin_lists_choices():
    with pytest.raises(UnknownPluginError) as exc:
        registry.load("matchers", "nosuchnet")
    assert "rrlnet" in str(exc.value) and exc.value.exit_code == 2


def test_cli_lists_broken_plugin_and_broken_command_does_not_break_cli(fake_dist, runner):
    result = runner.invoke(cli, ["plugins", "list", "--kind", "matchers"])
    assert result.exit_code == 0
    assert "ghostnet" in result.output and "BROKEN" in result.output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "crashcmd" in result.output
    result = runner.invoke(cli, ["crashcmd"])
    assert result.exit_code == 1
    assert "fakegeo 1.2" in result.output
