import json

import numpy as np
from patch_factories import write_published
from test_build import save_png, texture, to_sar

from geomatch.cli.main import cli


def test_train_with_a_missing_dataset_file_exits_2_naming_it(runner, tmp_path):
    (tmp_path / "os").mkdir()
    np.save(tmp_path / "os" / "os_train_image.npy", np.zeros((4, 2, 32, 32), np.uint8))
    res = runner.invoke(cli, ["train", "--dataset", "os", "--data-dir", str(tmp_path / "os"), "--out",
                              str(tmp_path / "run"), "--device", "cpu"])
    assert res.exit_code == 2, res.output
    assert "os_train_label.npy" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["evaluate", "--model", "ncc", "--dataset", "sen1-2", "--data-dir", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--data-dir" in res.output


def test_train_then_resume_then_evaluate_from_the_command_line(runner, tmp_path):
    root = write_published(tmp_path / "ds", "dir", n_train=64, n_test=32, tests=("a",))
    out = tmp_path / "run"
    base = ["train", "--model", "rrlnet", "--width", "0.125", "--dataset", str(root), "--out", str(out),
            "--batch-size", "16", "--max-iters-per-epoch", "1", "--device", "cpu"]
    res = runner.invoke(cli, [*base, "--epochs", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["epochs_done"] == 1
    res = runner.invoke(cli, [*base, "--epochs", "1"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    # --resume takes the run's settings from run.json; only the new epoch count is given.
    res = runner.invoke(cli, ["train", "--out", str(out), "--resume", "--epochs", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    res = runner.invoke(cli, ["evaluate", "--weights", str(out / "last.pt"), "--dataset", str(root), "--json",
                              "--device", "cpu", "--roc", str(tmp_path / "roc.png")])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["model"] == "rrlnet" and list(report["subsets"]) == ["a"] and (tmp_path / "roc.png").is_file()
    res = runner.invoke(cli, ["evaluate", "--weights", str(tmp_path / "missing.pt"), "--dataset", str(root)])
    assert res.exit_code == 2, res.output


def test_dataset_build_command(runner, tmp_path):
    opt = texture(seed=1)
    o, s = save_png(tmp_path / "o.png", opt), save_png(tmp_path / "s.png", to_sar(opt))
    args = ["dataset", "build", "--pair", str(o), str(s), "--out", str(tmp_path / "out"), "--max-points", "20"]
    res = runner.invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    manifest = json.loads(res.stdout)
    assert manifest["splits"]["train"]["pairs"] == 2 * manifest["sources"][0]["keypoints"] > 0
    assert runner.invoke(cli, args).exit_code == 2
    res = runner.invoke(cli, [*args, "--overwrite"])
    assert res.exit_code == 0 and "train" in res.output
    res = runner.invoke(cli, ["dataset", "build", "--preset", "vis-nir", "--out", str(tmp_path / "v")])
    assert res.exit_code == 2 and "--source" in res.output


def test_evaluate_passes_matcher_params(runner, tmp_path):
    from patch_factories import write_split

    # Positives whose second patch is the first inverted (SAR-like contrast reversal); negatives unrelated.
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 32, 32), dtype=np.uint8)
    b = np.where(np.arange(40)[:, None, None] < 20, 255 - a, rng.integers(0, 256, (40, 32, 32), dtype=np.uint8))
    labels = (np.arange(40) < 20).astype(np.uint8)
    write_split(tmp_path, "sne_test_image.npy", "sne_test_label.npy", np.stack([a, b], 1).astype(np.uint8), labels)
    base = ["evaluate", "--model", "ncc", "--dataset", "sen1-2", "--data-dir", str(tmp_path), "--json"]
    signed = json.loads(runner.invoke(cli, base).stdout)["subsets"]["sne_test"]
    res = runner.invoke(cli, [*base, "--param", "absolute=true"])
    assert res.exit_code == 0, res.output
    absolute = json.loads(res.stdout)["subsets"]["sne_test"]
    assert signed["fpr95"] > 0.9 and absolute["fpr95"] < 0.05, (signed, absolute)
    res = runner.invoke(cli, [*base, "--param", "absolute"])
    assert res.exit_code == 2 and "--param 'absolute'" in res.output
