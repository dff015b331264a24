"""``geomatch models list`` and ``geomatch models info``."""

from __future__ import annotations

import json

import pytest

from geomatch import registry
from geomatch.cli.main import cli
from geomatch.models.base import Matcher, keras_param_count
from geomatch.models.factory import build_matcher


def test_list_json_covers_the_registry_without_building_models(runner, monkeypatch):
    def no_build(self, *a, **k):
        raise AssertionError("models list must not build a model")

    monkeypatch.setattr(Matcher, "__init__", no_build)
    result = runner.invoke(cli, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == registry.names("matchers")
    assert all(r["status"] == "ok" and r["paper"] for r in rows)
    assert {r["name"]: r["optimizer"] for r in rows}["mfdnet"] == "adam"


def test_list_text(runner):
    result = runner.invoke(cli, ["models", "list"])
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == len(registry.names("matchers"))
    assert "rrlnet" in result.stdout and "weights:" in result.stdout


def test_info_json_counts_match_the_built_model(runner):
    result = runner.invoke(cli, ["models", "info", "rrlnet", "--width", "0.125", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    model = build_matcher("rrlnet", width=0.125)
    assert d["parameters_training"] == keras_param_count(model)
    assert d["parameters_inference"] == keras_param_count(model.prune()) < d["parameters_training"]
    assert d["width"] == 0.125 and d["patch_size"] == 64 and d["optimizer"] == "nadam"
    assert 0 < d["multiply_adds_per_pair"] < 627e6 / 16  # the width-1.0 figure shrinks about as width squared
    assert d["needs_weights"] is True and "recon_sar" in d["heads"]


def test_info_text_and_parameter_free(runner):
    result = runner.invoke(cli, ["models", "info", "ncc"])
    assert result.exit_code == 0
    assert "n/a (parameter-free)" in result.stdout and "none needed" in result.stdout
    assert "multiply-adds" in result.stdout


@pytest.mark.parametrize("args", [["models", "info", "nosuch"], ["models", "info", "scfdm", "--width", "0"]])
def test_info_bad_input_exits_2(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_unknown_matcher_names_the_choices(runner):
    result = runner.invoke(cli, ["models", "info", "nosuch"])
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "unknown matcher 'nosuch'" in err[0] and "rrlnet" in err[0]
