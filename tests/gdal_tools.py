"""GDAL's own tools for the tests that check our outputs as GDAL reads them; absent tools mean a skip with a reason."""

from __future__ import annotations

import shutil
import subprocess


def gdal_sample(name: str) -> list[str] | None:
    """A GDAL sample script (osgeo_utils.samples, Debian's python3-gdal) with a Python that can run it, or None."""
    for python in ("/usr/bin/python3", shutil.which("python3")):
        if python and subprocess.run([python, "-c", f"import osgeo_utils.samples.{name}"],
                                     capture_output=True).returncode == 0:
            return [python, "-m", f"osgeo_utils.samples.{name}"]
    return None
