"""A pipeline argument is a path only when it looks like one: a folder named like a shipped pipeline does not
shadow it, and the error says which reading was tried."""

from __future__ import annotations

import json

import pytest

from geomatch import config
from geomatch.cli.main import cli
from geomatch.errors import ConfigError
from tests.factories import make_pair


def test_a_folder_named_visnir_does_not_shadow_the_shipped_pipeline(tmp_path, monkeypatch):
    (tmp_path / "visnir").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = config.load("visnir")
    assert cfg.name == "visnir" and cfg.coarse.max_rotation_deg == 20.0


def test_names_and_paths_say_which_reading_failed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").write_text("[tiles]\nsize = 300\n")
    with pytest.raises(ConfigError, match=r"unknown pipeline 'mine' \(taken as a shipped name\)"):
        config.load("mine")
    assert config.load("./mine").tiles.size == 300  # a separator makes it a path
    with pytest.raises(ConfigError, match=r"nope\.toml not found \(taken as a path"):
        config.load("nope.toml")


def test_geomatch_run_visnir_with_a_visnir_folder_in_the_working_directory(tmp_path, monkeypatch, runner):
    pair = make_pair(tmp_path, shift=(2.0, -1.0), size=(160, 180), seed=3)
    (tmp_path / "visnir").mkdir()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["run", "visnir", "--optical", str(pair.optical), "--sar", str(pair.sar),
                                 "-o", "tp.csv", "--set", "match.params={absolute=true}", "--no-plot", "--json"])
    assert "not found" not in result.output and result.exit_code in (0, 3), result.output
    assert (tmp_path / "tp.csv").exists()
    assert json.loads(result.stdout)["coarse"]["details"]["max_shift_searched_px"] >= 160  # visnir's range, not 48
