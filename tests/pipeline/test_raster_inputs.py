"""Bad inputs to RasterPair: each is a one-line RasterError (exit code 2) naming the file, raised at open.

Also the rules for inputs that are usable but unusual: complex SAR is read as its amplitude, and a mask
that covers only part of the overlap is named in a warning (an error when it covers almost nothing).
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from factories import OPTICAL_CRS, make_pair, optical_transform, write_raster
from rasterio.transform import from_origin
from rasterio.windows import Window

from geomatch.config import PairConfig
from geomatch.errors import RasterError
from geomatch.pipeline import normalise
from geomatch.pipeline.raster import RasterPair, check_readable
from geomatch.pipeline.raster import sources as raster_sources


def _one_line_error(info, name: str) -> None:
    assert info.value.exit_code == 2
    text = str(info.value)
    assert "\n" not in text and name in text


@pytest.mark.parametrize(
    "case, message",
    [
        ("far", "do not overlap"),
        ("tiny", "overlap by only 40x120 optical pixels, less than pair.min_overlap_px = 96"),
        ("all_nodata", "has no valid pixel in the overlap"),
        ("band", "has 1 band\\(s\\) but pair.sar_bands asks for \\[2\\]"),
        ("missing", "file not found"),
        ("garbage", "cannot be read as a raster"),
        ("no_crs", "has no CRS but optical raster .* has EPSG:32631; assign the CRS"),
        ("gcps", "georeferenced by GCPs/RPCs only"),
    ],
)
def test_pairing_errors_are_one_line_raster_errors(tmp_path, case, message):
    t = optical_transform()
    rng = np.random.default_rng(0)
    opt = write_raster(tmp_path / "o.tif", rng.uniform(0, 1, (120, 120)).astype(np.float32), t, OPTICAL_CRS)
    data = rng.uniform(0.01, 1, (120, 120)).astype(np.float32)
    cfg = PairConfig()
    sar = tmp_path / "s.tif"
    if case == "far":
        write_raster(sar, data, from_origin(500000, 5100000, 10, 10), OPTICAL_CRS)
    elif case == "tiny":
        write_raster(sar, data, from_origin(400000 + 80 * 10, 5100000, 10, 10), OPTICAL_CRS)
    elif case == "all_nodata":
        write_raster(sar, np.full((120, 120), -1, np.float32), t, OPTICAL_CRS, nodata=-1)
    elif case == "band":
        write_raster(sar, data, t, OPTICAL_CRS)
        cfg = PairConfig(sar_bands=(2,))
    elif case == "garbage":
        sar.write_text("not a raster")
    elif case == "no_crs":
        write_raster(sar, data, None, None)
    elif case == "gcps":
        from rasterio.control import GroundControlPoint

        gcps = [GroundControlPoint(r, c, 400000 + c * 10, 5100000 - r * 10) for r, c in [(0, 0), (0, 119), (119, 0)]]
        with rasterio.open(sar, "w", driver="GTiff", width=120, height=120, count=1, dtype="float32") as dst:
            dst.write(data, 1)
            dst.gcps = (gcps, rasterio.crs.CRS.from_user_input(OPTICAL_CRS))
    with pytest.raises(RasterError, match=message) as info:
        RasterPair(opt, sar, cfg)
    _one_line_error(info, "s.tif")


def _truncated(tmp_path, keep: float = 0.6):
    """A real GeoTIFF (300 x 400, one strip per few rows) cut to ``keep`` of its bytes, as a failed copy leaves it."""
    rng = np.random.default_rng(7)
    full = write_raster(tmp_path / "s_full.tif", rng.uniform(0.01, 1, (400, 300)).astype(np.float32),
                        optical_transform(), OPTICAL_CRS)
    data = full.read_bytes()
    cut = tmp_path / "s_cut.tif"
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


def test_a_truncated_tiff_fails_when_opened_naming_the_file(tmp_path):
    cut = _truncated(tmp_path)
    with rasterio.open(cut) as ds:  # GDAL opens it from the header: only reading the lost blocks fails
        assert ds.width == 300
    opt = write_raster(tmp_path / "o.tif", np.random.default_rng(0).uniform(0, 1, (400, 300)).astype(np.float32),
                       optical_transform(), OPTICAL_CRS)
    with pytest.raises(RasterError, match="sar raster .*s_cut.tif: its pixels cannot be read .*truncated") as info:
        RasterPair(opt, cut)
    _one_line_error(info, "s_cut.tif")
    # Found by the open-time probe, before the decimated statistics read of the whole overlap.
    with pytest.raises(RasterError, match="truncated"):
        raster_sources.inspect("sar", str(cut), (), None, normalise.sar_bands)
    with pytest.raises(RasterError, match="optical raster .*s_cut.tif: its pixels cannot be read"):
        check_readable(cut, "optical")
    assert check_readable(opt, "optical") is None


def test_a_truncated_sar_is_exit_2_in_one_line_from_the_cli(tmp_path, runner):
    from geomatch.cli.main import cli

    syn = make_pair(tmp_path)
    cut = _truncated(tmp_path)
    out = tmp_path / "out.gpkg"
    result = runner.invoke(cli, ["run", "--optical", str(syn.optical), "--sar", str(cut), "-o", str(out),
                                 "--matcher", "ncc"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "s_cut.tif" in errors[0] and "truncated" in errors[0]
    assert not out.exists()


def test_check_readable_imports_no_torch(tmp_path):
    cut = _truncated(tmp_path)
    code = (
        "import sys\n"
        "from geomatch.errors import RasterError\n"
        "from geomatch.pipeline.raster import check_readable\n"
        f"try:\n    check_readable({str(cut)!r}, 'sar')\nexcept RasterError as exc:\n    print(exc)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.splitlines()
    assert "s_cut.tif" in lines[0] and lines[-1] == "False"


def _complex_twin(tmp_path, src_path, dtype: str, seed: int = 3):
    """The SAR as a complex file of the same amplitude with random phase, and a float32 file of its exact |z|."""
    with rasterio.open(src_path) as src:
        amp, profile = src.read(1).astype(np.float64), src.profile
    phase = np.random.default_rng(seed).uniform(-np.pi, np.pi, amp.shape)
    z = amp * np.exp(1j * phase) * (1000.0 if dtype == "complex_int16" else 1.0)
    profile.update(dtype=dtype, count=1)
    cplx = tmp_path / f"slc_{dtype}.tif"
    with rasterio.open(cplx, "w", **profile) as dst:
        dst.write(z.astype(np.complex64)[None])
    with rasterio.open(cplx) as src:
        stored = src.read(1)  # what the file holds after its own rounding
    profile.update(dtype="float32")
    expected = tmp_path / f"amp_{dtype}.tif"
    with rasterio.open(expected, "w", **profile) as dst:
        dst.write(np.abs(stored).astype(np.float32)[None])
    return cplx, expected


@pytest.mark.parametrize("dtype, sar_crs", [("complex64", None), ("complex_int16", "EPSG:4326")])
def test_complex_sar_is_read_as_its_amplitude_and_says_so(tmp_path, caplog, dtype, sar_crs):
    syn = make_pair(tmp_path, sar_crs=sar_crs, sar_margin=4 if sar_crs else 0)
    cplx, expected = _complex_twin(tmp_path, syn.sar, dtype)
    with caplog.at_level(logging.INFO, logger="geomatch"):
        pair = RasterPair(syn.optical, cplx)
    assert f"slc_{dtype}.tif is complex ({dtype}): using its amplitude |z|" in caplog.text
    ref = RasterPair(syn.optical, expected)
    assert pair.sar_scale == ref.sar_scale == "linear"
    assert pair.sar_stretch.lo == pytest.approx(ref.sar_stretch.lo, abs=1e-4)
    assert pair.sar_stretch.hi == pytest.approx(ref.sar_stretch.hi, abs=1e-4)
    win = Window(8, 8, 120, 96)  # warped bilinearly when sar_crs is set: amplitude is interpolated, not z
    img, valid = pair.read_sar(win)
    ref_img, ref_valid = ref.read_sar(win)
    np.testing.assert_array_equal(valid, ref_valid)
    np.testing.assert_allclose(img, ref_img, atol=1e-4)
    ov, ref_ov = pair.read_overview(40), ref.read_overview(40)  # average resampling of amplitudes
    np.testing.assert_allclose(ov.sar, ref_ov.sar, atol=1e-4)
    assert pair.describe()["sar"]["complex_rule"] == "amplitude"
    assert pair.describe()["sar"]["dtype"] == dtype


@pytest.mark.parametrize("side", ["optical", "sar"])
def test_a_mask_on_part_of_the_overlap_is_named_with_its_coverage(tmp_path, caplog, side):
    syn = make_pair(tmp_path, size=(100, 120))
    # The left 48 of 120 columns at the optical grid's own 10 m: 40 % of the overlap.
    part = write_raster(tmp_path / "m_part.tif", np.ones((100, 48), np.uint8), optical_transform(), OPTICAL_CRS)
    with caplog.at_level(logging.WARNING, logger="geomatch"):
        pair = RasterPair(syn.optical, syn.sar, PairConfig(**{f"{side}_mask": str(part)}))
    assert f"{side} mask {part} covers only 40.0 % of the overlap" in caplog.text
    _, valid = (pair.read_optical if side == "optical" else pair.read_sar)(Window(0, 0, 120, 100))
    assert valid[:, :48].all() and not valid[:, 48:].any()

    caplog.clear()
    # The whole extent, its invalid part written as declared nodata (as many masks are): full coverage.
    m = np.ones((100, 120), np.uint8)
    m[:, :30] = 0
    full = write_raster(tmp_path / "m_full.tif", m, optical_transform(), OPTICAL_CRS, nodata=0)
    with caplog.at_level(logging.WARNING, logger="geomatch"):
        pair = RasterPair(syn.optical, syn.sar, PairConfig(**{f"{side}_mask": str(full)}))
    assert "covers only" not in caplog.text
    _, valid = (pair.read_optical if side == "optical" else pair.read_sar)(Window(0, 0, 120, 100))
    assert valid[:, 30:].all() and not valid[:, :30].any()

    far = write_raster(tmp_path / "m_far.tif", np.ones((100, 120), np.uint8), from_origin(600000, 5100000, 10, 10),
                       OPTICAL_CRS)
    with pytest.raises(RasterError, match=f"{side} mask .*m_far.tif covers only 0.0 % of the overlap") as info:
        RasterPair(syn.optical, syn.sar, PairConfig(**{f"{side}_mask": str(far)}))
    _one_line_error(info, "m_far.tif")
