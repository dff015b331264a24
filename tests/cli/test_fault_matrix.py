"""The bad-input matrix of ``geomatch run`` (issue 11): each fault gives its exit code and one line naming
the file or option, and leaves every file that was there untouched, with nothing added.

Cases that must succeed (a registered writer for the suffix, a complex SAR read as amplitude, a partial
mask, a killed run's leftovers) are at the end, with what they must write.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from geomatch.cli.main import cli
from geomatch.fileio import claim_output
from tests.cli.fault_cases import (
    Case,
    assert_one_line_error,
    base_pair,
    complex_sar,
    copy_pair,
    expand,
    gcps_only,
    mask_like,
    mkdir,
    move_far,
    rewrite,
    run_args,
    snapshot,
    truncate,
    write_file,
)

CONFIG = [
    Case("tile-size-0", run_args("{d}/tp.gpkg", "--tile-size", "0"), 2, ("--tile-size", ">= 8")),
    Case("search-radius-negative", run_args("{d}/tp.gpkg", "--search-radius", "-5"), 2, ("--search-radius", "> 0")),
    Case("max-shift-negative", run_args("{d}/tp.gpkg", "--max-shift", "-1"), 2, ("--max-shift", ">= 0")),
    Case("set-tiles-size-0", run_args("{d}/tp.gpkg", "--set", "tiles.size=0"), 2, ("[tiles] size", ">= 8")),
    Case("set-max-ratio-above-1", run_args("{d}/tp.gpkg", "--set", "filter.max_ratio=1.5"), 2,
         ("[filter] max_ratio", "(0, 1]")),
    Case("set-batch-size-0", run_args("{d}/tp.gpkg", "--set", "match.batch_size=0"), 2, ("[match] batch_size",)),
    Case("set-scale-negative", run_args("{d}/tp.gpkg", "--set", "coarse.scale_range=[0.9, -1.0]"), 2,
         ("[coarse] scale_range",)),
    Case("set-min-score-nan", run_args("{d}/tp.gpkg", "--set", "filter.min_score=nan"), 2, ("[filter] min_score",)),
    Case("toml-cell-size-0", run_args("{d}/tp.gpkg", "{d}/p.toml"), 2, ("[detect] cell_size", ">= 1"),
         write_file("p.toml", b"[detect]\ncell_size = 0\n")),
    Case("set-unknown-key", run_args("{d}/tp.gpkg", "--set", "match.radius=3"), 2, ("unknown key 'radius'",)),
    Case("set-unknown-stage", run_args("{d}/tp.gpkg", "--set", "foo.bar=1"), 2, ("unknown stage",)),
    Case("toml-not-toml", run_args("{d}/tp.gpkg", "{d}/p.toml"), 2, ("not valid toml",),
         write_file("p.toml", b"[match\n")),
    Case("unknown-pipeline", run_args("{d}/tp.gpkg", "nosuchpipeline"), 2, ("unknown pipeline",)),
    Case("unknown-matcher", run_args("{d}/tp.gpkg", "--matcher", "nope"), 2, ("nope", "valid choices")),
    Case("unknown-format", run_args("{d}/tp.gpkg", "--format", "nope"), 2, ("'nope' is not one of", "points"),
         usage=True),
    Case("bad-band-list", run_args("{d}/tp.gpkg", "--optical-bands", "a,b"), 2, ("band numbers",), usage=True),
    Case("bad-search-units", run_args("{d}/tp.gpkg", "--search-units", "km"), 2, ("--search-units",), usage=True),
]

OUTPUTS = [
    Case("png-output-overwrite-plot-collides", run_args("{d}/out.png", "--format", "gpkg", "--overwrite"), 2,
         ("out.png", "tie-point table", "shift plot")),
    Case("only-png-sidecar-exists", run_args(), 2, ("tp.png", "--overwrite"), write_file("tp.png")),
    Case("table-exists", run_args(), 2, ("tp.gpkg", "--overwrite"), write_file("tp.gpkg")),
    Case("csv-json-sidecar-exists", run_args("{d}/tp.csv", "--no-plot"), 2, ("tp.csv.json", "--overwrite"),
         write_file("tp.csv.json")),
    Case("output-is-the-optical-input", run_args("{d}/optical.tif", "--format", "gpkg", "--overwrite"), 2,
         ("optical.tif", "optical input")),
    Case("output-is-the-mask", run_args("{d}/m.tif", "--format", "gpkg", "--overwrite", "--sar-mask", "{d}/m.tif"),
         2, ("m.tif", "sar mask input"), mask_like("m.tif", "sar.tif")),
    Case("suffix-xyz", run_args("{d}/tp.xyz"), 2,
         ("'.xyz'", ".csv (csv)", ".gpkg (gpkg)", ".points (points)", ".vrt (vrt)", "--format")),
    Case("suffix-shp", run_args("{d}/tp.shp"), 2, ("'.shp'", ".gpkg (gpkg)")),
    Case("no-suffix", run_args("{d}/tp"), 2, ("(none)", ".gpkg (gpkg)")),
    Case("output-is-a-folder", run_args(), 2, ("tp.gpkg", "directory"), mkdir("tp.gpkg"), usage=True),
    Case("output-folder-missing", run_args("{d}/missing/tp.gpkg"), 2, ("missing", "does not exist")),
    Case("scheduler-refuses", run_args("{d}/tp.gpkg", "--scheduler", "tcp://127.0.0.1:1"), 2,
         ("tcp://127.0.0.1:1", "cannot be reached")),
    Case("scheduler-not-an-address", run_args("{d}/tp.gpkg", "--scheduler", "tcp://127.0.0.1:port"), 2,
         ("tcp://127.0.0.1:port", "not an address")),
]

INPUTS = [
    Case("missing-optical", ["run", "--optical", "{d}/nope.tif", "--sar", "{d}/sar.tif", "-o", "{d}/tp.gpkg"], 2,
         ("nope.tif", "not found")),
    Case("missing-sar", run_args("{d}/tp.gpkg", "--sar", "{d}/nope.tif"), 2, ("sar raster", "nope.tif", "not found")),
    Case("missing-mask", run_args("{d}/tp.gpkg", "--optical-mask", "{d}/nope.tif"), 2, ("optical mask", "nope.tif")),
    Case("not-a-raster", run_args("{d}/tp.gpkg", "--sar", "{d}/junk.tif"), 2, ("junk.tif",),
         write_file("junk.tif", b"not a tiff at all")),
    Case("truncated-tiff", run_args(), 2, ("sar raster", "sar.tif"), truncate("sar.tif")),
    Case("no-crs-on-one-side", run_args(), 2, ("crs",), rewrite("optical.tif", crs=None)),
    Case("no-overlap", run_args(), 2, ("overlap",), move_far("sar.tif")),
    Case("all-nodata-sar", run_args(), 2, ("sar.tif", "no valid pixel"),
         rewrite("sar.tif", data=lambda a: np.zeros_like(a), nodata=0)),
    Case("band-out-of-range", run_args("{d}/tp.gpkg", "--sar-bands", "3"), 2, ("sar.tif", "band")),
    Case("gcps-only", run_args(), 2, ("sar.tif", "gcps"), rewrite("sar.tif", gcps=gcps_only)),
    Case("mask-of-wrong-extent", run_args("{d}/tp.gpkg", "--sar-mask", "{d}/m.tif"), 2,
         ("m.tif", "covers only 0.0 %"), mask_like("m.tif", "sar.tif", shift_px=(5000, 0))),
    Case("weights-file-missing", run_args("{d}/tp.gpkg", "--matcher", "rrlnet", "--weights", "{d}/mine.pt"), 2,
         ("mine.pt", "not found")),
    Case("weights-for-another-architecture", run_args("{d}/tp.gpkg", "--matcher", "scfdm", "--weights", "vis-nir"),
         2, ("vis-nir", "rrlnet")),
    Case("verbose-shows-traceback", ["-v", *run_args("{d}/tp.gpkg", "--tile-size", "0")], 2, ()),
]
SUCCEEDS = [
    Case("points-suffix-uses-its-writer", run_args("{d}/tp.points", "--no-plot"), 0, creates=("tp.points",)),
    Case("complex-sar-read-as-amplitude", run_args("{d}/tp.gpkg", "--no-plot"), 0, ("amplitude",), complex_sar,
         creates=("tp.gpkg",)),
    Case("mask-covering-part-warns", run_args("{d}/tp.gpkg", "--no-plot", "--sar-mask", "{d}/m.tif"), 0,
         ("m.tif", "covers only"), mask_like("m.tif", "sar.tif", shift_px=(40, 0)), creates=("tp.gpkg",)),
]

FAILS = CONFIG + OUTPUTS + INPUTS


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    base_pair(folder)
    return folder


def _prepare(case, pair_dir, tmp_path):
    copy_pair(pair_dir, tmp_path)
    if case.setup is not None:
        case.setup(tmp_path)
    return expand(case.args, tmp_path)


@pytest.mark.parametrize("case", FAILS, ids=[c.id for c in FAILS])
def test_fault_fails_in_one_line_and_touches_nothing(case, pair_dir, tmp_path, runner):
    args = _prepare(case, pair_dir, tmp_path)
    before = snapshot(tmp_path)
    result = runner.invoke(cli, args)
    assert result.exit_code == case.code, result.output
    if case.id == "verbose-shows-traceback":
        assert "Traceback" in result.stderr and "--tile-size" in result.stderr
    else:
        assert_one_line_error(result.stderr, case.says, alone=not case.usage)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", SUCCEEDS, ids=[c.id for c in SUCCEEDS])
def test_fault_handled_run_succeeds(case, pair_dir, tmp_path, runner):
    args = _prepare(case, pair_dir, tmp_path)
    before = snapshot(tmp_path)
    result = runner.invoke(cli, args)
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.stderr
    for piece in case.says:
        assert piece.lower() in result.stderr.lower(), result.stderr
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == set(case.creates)


def test_points_suffix_writes_qgis_points(pair_dir, tmp_path, runner):
    args = _prepare(SUCCEEDS[0], pair_dir, tmp_path)
    assert runner.invoke(cli, args).exit_code == 0
    text = (tmp_path / "tp.points").read_text()
    assert "mapX,mapY,sourceX,sourceY,enable,dX,dY,residual" in text and not text.startswith("SQLite")


def test_stale_partials_of_a_killed_run_are_removed(pair_dir, tmp_path, runner):
    """SIGKILL between the temporary file appearing and the rename leaves `.tp.gpkg.<token>.partial.gpkg`."""
    copy_pair(pair_dir, tmp_path)
    (tmp_path / "tp.gpkg").write_bytes(b"old result")
    stale = [tmp_path / ".tp.gpkg.0badf00d.partial.gpkg", tmp_path / ".tp.gpkg.0badf00d.partial.gpkg-journal",
             tmp_path / ".tp.png.1badf00d.partial.png"]
    for p in stale:
        p.write_bytes(b"")
    result = runner.invoke(cli, expand(run_args("{d}/tp.gpkg", "--overwrite"), tmp_path))
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale)
    assert (tmp_path / "tp.gpkg").read_bytes()[:15] == b"SQLite format 3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optical.tif", "sar.tif", "tp.gpkg", "tp.png"]


def test_output_claimed_by_another_run_fails_at_once(pair_dir, tmp_path, runner):
    copy_pair(pair_dir, tmp_path)
    with claim_output(tmp_path / "tp.gpkg"):
        before = snapshot(tmp_path)
        result = runner.invoke(cli, expand(run_args(), tmp_path))
        assert snapshot(tmp_path) == before
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, ("tp.gpkg", "another geomatch run"))
    assert not (tmp_path / "tp.gpkg").exists()


def _probe_writable(folder) -> bool:
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def test_unwritable_folder_even_for_root(pair_dir, tmp_path, runner):
    """/sys takes no new files, not even from root: the check holds where chmod cannot be tested."""
    if _probe_writable("/sys"):
        pytest.skip("/sys accepts new files on this machine: no read-only folder to test against")
    copy_pair(pair_dir, tmp_path)
    before = snapshot(tmp_path)
    result = runner.invoke(cli, expand(run_args("/sys/tp.gpkg"), tmp_path))
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, ("/sys", "not writable"))
    assert snapshot(tmp_path) == before


def test_read_only_folder_non_root(pair_dir, tmp_path, runner):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod does not stop root's writes (see test_unwritable_folder_even_for_root)")
    copy_pair(pair_dir, tmp_path)
    out_dir = tmp_path / "ro"
    out_dir.mkdir(mode=0o555)
    try:
        before = snapshot(tmp_path)
        result = runner.invoke(cli, expand(run_args("{d}/ro/tp.gpkg"), tmp_path))
        assert snapshot(tmp_path) == before
    finally:
        out_dir.chmod(0o755)
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, ("ro", "not writable"))
