"""The Python API behind ``geomatch.match``."""

from __future__ import annotations

from geomatch import config


def match(optical, sar, pipeline: str = "default", output=None, *, scheduler: str | None = None,
          overwrite: bool = False, **overrides):
    """Match ``optical`` against ``sar`` and return the tie points as a GeoDataFrame.

    ``overrides`` use ``stage__key=value`` (``match__search_radius=24``) and beat the pipeline file.
    Pass ``output`` to also write the GeoPackage (or the pipeline's writer format).
    """
    from geomatch.pipeline.run import run_pipeline

    cfg = config.load(pipeline, overrides)
    return run_pipeline(optical, sar, cfg, output, scheduler=scheduler, overwrite=overwrite).gdf
