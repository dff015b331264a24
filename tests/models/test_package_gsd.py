"""The ground sampling distance weights were trained at: package -> checkpoint + index -> scorer."""

from __future__ import annotations

import json

import pytest
import torch

from geomatch.cli.main import cli
from geomatch.errors import InputError
from geomatch.models.checkpoint import load_checkpoint, save_checkpoint
from geomatch.models.factory import build_matcher
from geomatch.models.package import package_weights
from geomatch.models.runtime import build_scorer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(build_matcher("rrlnet", width=0.125), path, metadata={"training": {"dataset": "unit-test"}})
    return path


def _package(checkpoint, out, **kw):
    return package_weights(checkpoint, "demo", out, description="d", pair_types=["optical-sar"], card="# c\n", **kw)


def test_gsd_round_trips_through_package_into_the_scorer(checkpoint, tmp_path):
    entry = _package(checkpoint, tmp_path, gsd_m=3.0, gsd_range_m=(2.5, 3.5))
    assert json.loads((tmp_path / "index.json").read_text())["demo"] == entry
    assert entry["gsd_m"] == 3.0 and entry["gsd_range_m"] == [2.5, 3.5]
    meta = load_checkpoint(tmp_path / entry["file"])[1]
    assert meta["gsd_m"] == 3.0 and meta["gsd_range_m"] == [2.5, 3.5]
    # A checkpoint path (no index): the scorer reads its metadata.
    scorer = build_scorer("rrlnet", str(tmp_path / entry["file"]), device="cpu")
    assert scorer.gsd_m == 3.0 and scorer.gsd_range_m == (2.5, 3.5)
    # Repackaged without --gsd, the weights keep the GSD they record.
    again = _package(tmp_path / entry["file"], tmp_path / "again")
    assert again["gsd_m"] == 3.0 and again["gsd_range_m"] == [2.5, 3.5]


def test_weights_without_a_gsd_record_none(checkpoint, tmp_path):
    entry = _package(checkpoint, tmp_path)
    assert "gsd_m" not in entry and "gsd_m" not in load_checkpoint(tmp_path / entry["file"])[1]
    assert build_scorer("rrlnet", str(tmp_path / entry["file"]), device="cpu").gsd_m is None
    alone = _package(checkpoint, tmp_path / "alone", gsd_m=10.0)
    assert alone["gsd_range_m"] == [10.0, 10.0]


@pytest.mark.parametrize("gsd, rng, message", [
    (None, (1.0, 2.0), "--gsd-range needs --gsd"),
    (3.0, (3.5, 4.0), "LO <= GSD <= HI"),
    (-1.0, None, "positive metres"),
])
def test_bad_gsd_is_refused_before_anything_is_written(checkpoint, tmp_path, gsd, rng, message):
    with pytest.raises(InputError, match=message):
        _package(checkpoint, tmp_path, gsd_m=gsd, gsd_range_m=rng)
    assert not (tmp_path / "index.json").exists()


def test_models_package_cli_takes_gsd_options(checkpoint, tmp_path, runner):
    card = tmp_path / "card.md"
    card.write_text("# c\n")
    out = tmp_path / "w"
    args = ["models", "package", str(checkpoint), "--tag", "t", "--card", str(card), "--description", "d",
            "--out", str(out), "--gsd", "10", "--gsd-range", "9.5", "10.5", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "index.json").read_text())["t"]["gsd_range_m"] == [9.5, 10.5]
    bad = runner.invoke(cli, args[:-6] + ["--gsd-range", "1", "2"])
    assert bad.exit_code == 2 and "--gsd-range needs --gsd" in bad.output
