"""The weights and training rows of the fault matrix (issue 11): damaged or malicious checkpoints, bad
training options, and the ONNX optimiser's chatter that must stay off stderr unless ``-v``."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from geomatch.cli.main import cli
from geomatch.models.checkpoint import save_checkpoint
from tests.cli.fault_cases import NCC, assert_one_line_error, base_pair, expand, run_args, snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from patch_factories import write_published  # noqa: E402


class _Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do, made visible."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (__import__("os").system, (f"touch {self.marker}",))


def user_checkpoint(path: Path) -> Path:
    from geomatch.models.factory import build_matcher

    torch.manual_seed(0)
    model = build_matcher("rrlnet", width=0.125, patch_size=32)
    save_checkpoint(model, path, metadata={"description": "a user's fine-tune"})
    return path


def flip_one_byte(path: Path) -> None:
    """Flip one bit inside the largest tensor's stored bytes (not the zip headers: the content changes)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(path.read_bytes())
    data[offset + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))


def malicious(path: Path, marker: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Payload(marker)}, f)
    return path


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    base_pair(folder)
    return folder


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    return write_published(tmp_path_factory.mktemp("patches"), "dir", n_train=32, n_test=32, tests=("a",))


def _invoke(runner, args, folder):
    before = snapshot(folder)
    result = runner.invoke(cli, args)
    assert snapshot(folder) == before, "a file was changed or added"
    return result


def test_run_with_a_flipped_byte_in_a_user_checkpoint(pair_dir, tmp_path, runner):
    import shutil

    for name in ("optical.tif", "sar.tif"):
        shutil.copy(pair_dir / name, tmp_path / name)
    ckpt = user_checkpoint(tmp_path / "mine.pt")
    flip_one_byte(ckpt)
    args = expand(run_args("{d}/tp.gpkg", "--matcher", "rrlnet", "--weights", str(ckpt)), tmp_path)
    result = _invoke(runner, args, tmp_path)
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr, ("mine.pt",))


def test_evaluate_with_a_flipped_byte_in_a_user_checkpoint(patches, tmp_path, runner):
    ckpt = user_checkpoint(tmp_path / "mine.pt")
    flip_one_byte(ckpt)
    result = _invoke(runner, ["evaluate", "--weights", str(ckpt), "--dataset", str(patches), "--device", "cpu"],
                     tmp_path)
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr, ("mine.pt",))


def test_untouched_user_checkpoint_loads(patches, tmp_path, runner):
    """The counterpart: the same checkpoint, unflipped, evaluates (so the failure above is the flip)."""
    ckpt = user_checkpoint(tmp_path / "mine.pt")
    result = runner.invoke(cli, ["evaluate", "--weights", str(ckpt), "--dataset", str(patches), "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_malicious_weights_never_execute(pair_dir, tmp_path, runner):
    import shutil

    for name in ("optical.tif", "sar.tif"):
        shutil.copy(pair_dir / name, tmp_path / name)
    marker = tmp_path / "pwned"
    evil = malicious(tmp_path / "evil.pt", marker)
    args = expand(run_args("{d}/tp.gpkg", "--matcher", "rrlnet", "--weights", str(evil)), tmp_path)
    result = _invoke(runner, args, tmp_path)
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr, ("evil.pt",))
    assert not marker.exists()
    assert "weights_only=False" not in result.stderr


def test_malicious_resume_state(patches, tmp_path, runner):
    out = tmp_path / "run"
    base = ["train", "--model", "rrlnet", "--width", "0.125", "--dataset", str(patches), "--out", str(out),
            "--batch-size", "16", "--max-iters-per-epoch", "1", "--device", "cpu", "--epochs", "1"]
    assert runner.invoke(cli, base).exit_code == 0
    marker = tmp_path / "pwned"
    malicious(out / "resume.pt", marker)
    result = _invoke(runner, ["train", "--out", str(out), "--resume", "--epochs", "2", "--device", "cpu"], tmp_path)
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr, ("resume.pt",), alone=False)  # after the loop's own log lines
    assert "weights_only=False" not in result.stderr and not marker.exists()


@pytest.mark.parametrize("option, value", [("--epochs", "0"), ("--batch-size", "0"), ("--lr", "-1"),
                                           ("--val-fraction", "1.5"), ("--width", "0")])
def test_train_option_out_of_range(patches, tmp_path, runner, option, value):
    args = ["train", "--dataset", str(patches), "--out", str(tmp_path / "run"), "--device", "cpu", option, value]
    result = _invoke(runner, args, tmp_path)
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr, (option,))


def test_train_into_an_unwritable_folder(patches, tmp_path, runner):
    result = runner.invoke(cli, ["train", "--dataset", str(patches), "--out", "/sys/geomatch-run", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr, ("/sys", "not writable"))


def _stderr_lines(args: list[str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "geomatch", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.slow
def test_no_onnx_optimiser_chatter_unless_verbose(pair_dir, patches, tmp_path):
    """Real stderr of real processes: the optimiser prints from Python and from C++, which CliRunner misses."""
    ckpt = user_checkpoint(tmp_path / "mine.pt")
    quiet = _stderr_lines(["evaluate", "--weights", str(ckpt), "--dataset", str(patches), "--device", "cpu"])
    assert len(quiet) <= 3, "\n".join(quiet)
    run = ["run", "--optical", str(pair_dir / "optical.tif"), "--sar", str(pair_dir / "sar.tif"), "-o",
           str(tmp_path / "tp.gpkg"), *NCC, "--no-plot"]
    lines = _stderr_lines(run)
    # Ours: the scorer, the coarse transform, the summary, the time per stage and the output: nothing else.
    assert len(lines) <= 8, "\n".join(lines)
    assert all("rewrite" not in line.lower() and "optimiz" not in line.lower() for line in lines), "\n".join(lines)
