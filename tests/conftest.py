"""Shared fixtures. Real image pairs come from one setting: GEOMATCH_DATA (default ../shared/data)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GEOMATCH_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder; tests using it are skipped, with the reason, where it is absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not found at {DATA_DIR}: set GEOMATCH_DATA to the shared data folder")
    return DATA_DIR


@pytest.fixture(scope="session")
def data_file(data_dir):
    """``data_file("gefolki/S2_patch11.tif")``: a path in the real-data folder, or a skip naming the missing file
    where the folder is only partly there (a test must not error on a partial copy)."""

    def find(relative: str) -> Path:
        path = data_dir / relative
        if not path.exists():
            pytest.skip(f"real data incomplete: {path} not found; complete the shared data folder at {data_dir}")
        return path

    return find


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on 2 shared cores, small test batches ran 10-40x slower with two."""
    import torch

    torch.set_num_threads(1)
