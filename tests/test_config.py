"""Pipeline config: validation messages, precedence, shipped pipelines."""

import pytest

from geomatch import config, config_text
from geomatch.errors import ConfigError


def test_defaults_and_shipped_default_pipeline():
    cfg = config.load("default")
    assert cfg.name == "default"
    assert cfg.detect.plugin == "harris"
    assert "default" in config.shipped_pipelines()


def test_precedence_defaults_file_overrides(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[match]\nsearch_radius = 20\n[tiles]\nsize = 300\n')
    cfg = config.load(str(path), {"match.search_radius": 7})
    assert cfg.match.search_radius == 7.0  # override beats file
    assert cfg.tiles.size == 300  # file beats default
    assert cfg.filter.model == config.FilterConfig().model  # default kept


@pytest.mark.parametrize(
    "toml, expected",
    [
        ("[matching]\nx = 1\n", "unknown stage [matching]; valid stages: pair, tiles, coarse, detect, match"),
        ("[match]\nradius = 3\n", "unknown key 'radius' in stage [match]; valid keys: plugin, weights, search_radius"),
        ('[match]\nplugin = "superglue"\n', "[match] plugin = 'superglue' is not an installed matcher; valid choices:"),
        ('[detect]\nplugin = "sift"\n', "[detect] plugin = 'sift' is not an installed detector; valid choices:"),
        ('[match]\nsearch_radius = "far"\n', "[match] search_radius: expected float, got 'far'"),
        ("[tiles]\nsize = 1.5\n", "[tiles] size: expected int, got 1.5"),
        ('[filter]\nmodel = "tps"\n', "[filter] model = 'tps' is not valid; choose one of: affine, poly2"),
        ("[coarse]\nenabled = 1\n", "[coarse] enabled: expected true or false, got 1"),
        ("[pair]\noptical_bands = 2\n", "[pair] optical_bands: expected a list, got 2"),
        ("[tiles\nsize = 1\n", "not valid TOML"),
    ],
)
def test_validation_messages(tmp_path, toml, expected):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        config.load(str(path))
    assert expected in str(exc.value)
    assert exc.value.exit_code == 2


def test_plugin_error_lists_valid_choices(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[match]\nplugin = "superglue"\n')
    with pytest.raises(ConfigError) as exc:
        config.load(str(path))
    for name in ("rrlnet", "ncc", "scfdm"):
        assert name in str(exc.value)


def test_unknown_pipeline_name_lists_shipped():
    with pytest.raises(ConfigError) as exc:
        config.load("nosuchpipeline")
    assert "shipped pipelines: " in str(exc.value) and "default" in str(exc.value)


def test_missing_toml_file():
    with pytest.raises(ConfigError, match="pipeline file .*missing.toml not found"):
        config.load("missing.toml")


def test_set_options_parse_toml_values():
    parsed = config_text.parse_set_options(["match.search_radius=24", "detect.plugin=shi-tomasi", "pair.sar_bands=[2]"])
    assert parsed == {"match.search_radius": 24, "detect.plugin": "shi-tomasi", "pair.sar_bands": [2]}
    with pytest.raises(ConfigError, match="expected STAGE.KEY=VALUE"):
        config_text.parse_set_options(["nonsense"])
    with pytest.raises(ConfigError, match="must look like STAGE.KEY"):
        config.build({}, {"radius": 3})


def test_config_is_frozen_and_round_trips_through_toml(tmp_path):
    cfg = config.load("default", {"match.search_radius": 9.5, "pair.sar_bands": [2]})
    with pytest.raises(AttributeError):
        cfg.match.search_radius = 3  # type: ignore[misc]
    path = tmp_path / "resolved.toml"
    path.write_text(config_text.to_toml(cfg))
    assert config.load(str(path)) == cfg
