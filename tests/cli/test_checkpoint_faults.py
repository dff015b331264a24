"""Checkpoints a real ``geomatch train`` writes: each carries its checksum; an unsafe resume file never
brings torch's unsafe-load advice, not even under -v; the ONNX optimiser speaks only at DEBUG.

One tiny training run (RRL-Net at width 0.125, one iteration) provides real best.pt, last.pt and resume.pt.
The one-line cases of the fault matrix (issue 11) are in test_fault_matrix_models.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch

from geomatch.cli.main import cli

OPTIMISER_CHATTER = ("Skipping constant folding", "ValueInfoProto", "The value 'step'")


def _write_dataset(root, n=64, size=32, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for split in ("train", "val", "test_a"):
        np.save(root / f"{split}.npy", rng.integers(0, 256, (n, 2, size, size), dtype=np.uint8))
        np.save(root / f"{split}_label.npy", np.tile(np.array([0, 1], np.int64), n // 2))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from click.testing import CliRunner

    base = tmp_path_factory.mktemp("faults")
    data = _write_dataset(base / "ds")
    out = base / "run"
    res = CliRunner().invoke(cli, ["train", "--model", "rrlnet", "--width", "0.125", "--dataset", str(data),
                                   "--out", str(out), "--batch-size", "16", "--max-iters-per-epoch", "1",
                                   "--epochs", "1", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    return data, out


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the training run, for a test to damage."""
    return trained[0], shutil.copytree(trained[1], tmp_path / "run")


def _flip_tensor_byte(path):
    """Flip one bit in the middle of the file's largest tensor: torch's zip container does not notice."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x04
    path.write_bytes(bytes(data))


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _one_line(result) -> str:
    """The error: one line, the last; earlier INFO lines (the run's own progress) may precede it."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert errors == lines[-1:], result.stderr
    assert "Traceback" not in result.output
    return errors[0]


@pytest.mark.parametrize("name", ["best.pt", "last.pt", "resume.pt"])
def test_every_checkpoint_train_writes_carries_a_checksum(runner, run_copy, name):
    """A flipped tensor byte in any of the three files fails with exit 2 and one line naming the file, and
    nothing in the run folder changes."""
    data, run = run_copy
    _flip_tensor_byte(run / name)
    before = _digests(run)
    if name == "resume.pt":
        args = ["train", "--out", str(run), "--resume", "--epochs", "2", "--device", "cpu"]
    else:
        args = ["evaluate", "--weights", str(run / name), "--dataset", str(data), "--device", "cpu"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 2, res.output
    line = _one_line(res)
    assert str(run / name) in line and "checksum" in line
    assert _digests(run) == before


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_an_unsafe_resume_file_never_suggests_the_unsafe_load_even_with_v(runner, run_copy, capfd):
    """The one-line case is in test_fault_matrix_models; under -v the traceback is shown, and it must not
    carry torch's advice to load with weights_only=False either."""
    _, run = run_copy
    buf = io.BytesIO()
    torch.save({"epoch": 1, "model": Evil()}, buf)
    (run / "resume.pt").write_bytes(buf.getvalue())
    res = runner.invoke(cli, ["-v", "train", "--out", str(run), "--resume", "--epochs", "2", "--device", "cpu"])
    assert res.exit_code == 2, res.output
    assert f"{run / 'resume.pt'} is not a loadable training state (it refers to print" in res.stderr
    assert "weights_only" not in res.output and "pwned" not in res.output + capfd.readouterr().out


def test_onnx_optimiser_output_is_debug_only(runner, trained):
    data, _ = trained
    args = ["evaluate", "--model", "ncc", "--dataset", str(data), "--device", "cpu", "--json"]
    quiet = runner.invoke(cli, args)
    assert quiet.exit_code == 0, quiet.output
    assert not [line for line in quiet.stderr.splitlines() if any(c in line for c in OPTIMISER_CHATTER)]
    loud = runner.invoke(cli, ["-v", *args])
    assert loud.exit_code == 0, loud.output
    debug = [line for line in loud.stderr.splitlines() if line.startswith("DEBUG geomatch.models.export")]
    assert debug and any(c in line for line in debug for c in OPTIMISER_CHATTER), loud.stderr[-2000:]
