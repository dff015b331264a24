"""Platt scaling folded into the main head (``geomatch models calibrate``) and the ECE it is judged by."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from geomatch.cli.main import cli
from geomatch.errors import InputError
from geomatch.models import calibration
from geomatch.models.checkpoint import load_checkpoint, save_checkpoint
from geomatch.models.factory import build_matcher
from geomatch.models.package import package_weights
from geomatch.training import metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from patch_factories import learnable_pairs, write_split  # noqa: E402


def _tiny_rrlnet(patch_size: int = 64):
    torch.manual_seed(0)
    return build_matcher("rrlnet", width=0.125, patch_size=patch_size).prune()


def test_folding_gives_the_scaled_sigmoid_exactly():
    model = _tiny_rrlnet()
    with torch.no_grad():
        calibration.main_linear(model).bias.fill_(0.8)  # a trained head's bias is not the initial zero
    images = np.random.default_rng(1).integers(0, 256, (16, 2, 64, 64), dtype=np.uint8)
    logits = calibration.main_logits(model, [images])
    a, b = 0.37, -1.2
    calibration.fold(model, a, b)
    x = torch.from_numpy(images.astype(np.float32) / 255)
    with torch.no_grad():
        got = model(x[:, 0:1], x[:, 1:2])["score"].double().numpy()
    np.testing.assert_allclose(got, calibration.sigmoid(a * logits + b), atol=1e-6)
    assert np.abs(got - calibration.sigmoid(logits)).max() > 1e-3  # the fold did change the scores


def _overconfident(n: int = 4000, seed: int = 0):
    """Labels drawn from p = sigmoid(z), scores sigmoid(4 z + 1): right ranking, far too sure."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < calibration.sigmoid(z)).astype(int)
    return 4 * z + 1, labels


def test_platt_scaling_repairs_an_overconfident_score():
    logits, labels = _overconfident()
    a, b = calibration.fit_platt(logits, labels)
    assert a == pytest.approx(0.25, abs=0.04) and b == pytest.approx(-0.25, abs=0.1)
    rec = calibration.calibration_record(logits, labels, a, b)
    assert rec["ece_after"] < rec["ece_before"] / 3 and rec["ece_after"] < 0.03
    assert rec["brier_after"] < rec["brier_before"]


def test_ece_and_reliability_by_hand():
    # Ten pairs at 0.05, two of them matches: share 0.2 against a mean score 0.05 in bin 0; one at 1.0 (last bin).
    labels, scores = [1, 1] + [0] * 8 + [1], [0.05] * 10 + [1.0]
    r = metrics.reliability(labels, scores)
    assert r["counts"][0] == 10 and r["counts"][9] == 1 and sum(r["counts"]) == 11
    assert metrics.ece(labels, scores) == pytest.approx(10 / 11 * 0.15)
    assert metrics.brier([1, 0], [0.5, 0.5]) == pytest.approx(0.25)


def _dataset(root: Path, n: int = 96, size: int = 32, val: bool = True) -> Path:
    write_split(root, "train.npy", "train_label.npy", *learnable_pairs(n, size, 1))
    write_split(root, "test_os.npy", "test_os_label.npy", *learnable_pairs(n, size, 2))
    if val:
        write_split(root, "val.npy", "val_label.npy", *learnable_pairs(n, size, 3))
    return root


def _one_line_exit_2(result, *words):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.output


def test_calibrate_refuses_classical_matchers_and_missing_splits(tmp_path):
    runner = CliRunner()
    data = _dataset(tmp_path / "data", val=False)
    out = str(tmp_path / "cal.pt")
    res = runner.invoke(cli, ["models", "calibrate", "ncc", "--dataset", str(data), "--out", out])
    _one_line_exit_2(res, "ncc", "classical")
    ckpt = tmp_path / "net.pt"
    save_checkpoint(_tiny_rrlnet(32), ckpt, metadata={})
    res = runner.invoke(cli, ["models", "calibrate", str(ckpt), "--dataset", str(data), "--out", out])
    _one_line_exit_2(res, "'val'", "val.npy", "--split")
    assert not Path(out).exists()


def test_calibrate_refuses_a_network_without_head_main(tmp_path):
    model = build_matcher("efrnet", width=0.125, patch_size=32).prune()
    with pytest.raises(InputError, match="no head_main"):
        calibration.main_linear(model)
    ckpt = tmp_path / "efr.pt"
    save_checkpoint(model, ckpt, metadata={})
    res = CliRunner().invoke(cli, ["models", "calibrate", str(ckpt), "--dataset", str(_dataset(tmp_path / "d")),
                                   "--out", str(tmp_path / "o.pt")])
    _one_line_exit_2(res, "head_main")


def test_calibrated_checkpoint_records_itself_and_packaging_keeps_it(tmp_path):
    data = _dataset(tmp_path / "data")
    ckpt, out, png = tmp_path / "net.pt", tmp_path / "cal.pt", tmp_path / "rel.png"
    save_checkpoint(_tiny_rrlnet(32), ckpt, metadata={"training": {"dataset": "unit"}})
    res = CliRunner().invoke(cli, ["models", "calibrate", str(ckpt), "--dataset", str(data), "--out", str(out),
                                   "--reliability", str(png), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    _, meta = load_checkpoint(out)
    cal = meta["calibration"]
    assert cal["method"] == "platt" and cal["split"] == "val" and cal["pairs"] == 96
    assert {"a", "b", "dataset", "ece_before", "ece_after", "brier_before", "brier_after"} <= set(cal)
    assert cal["a"] == pytest.approx(rec["a"]) and all(0 <= cal[k] <= 1 for k in ("ece_before", "ece_after"))
    assert meta["training"] == {"dataset": "unit"} and png.stat().st_size > 0
    again = CliRunner().invoke(cli, ["models", "calibrate", str(out), "--dataset", str(data),
                                     "--out", str(tmp_path / "twice.pt")])
    _one_line_exit_2(again, "already calibrated")
    entry = package_weights(out, "demo", tmp_path / "weights", description="d", pair_types=["optical-sar"],
                            card="# card\n")
    assert entry["calibrated"] is True and entry["ece"] == pytest.approx(cal["ece_after"])
    assert load_checkpoint(tmp_path / "weights" / entry["file"])[1]["calibration"] == cal
    plain = package_weights(ckpt, "plain", tmp_path / "weights", description="d", pair_types=[], card="#\n")
    assert plain["calibrated"] is False and "ece" not in plain
