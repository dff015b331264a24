"""geomatch: tie points between optical and SAR rasters with learned cross-spectral patch matchers."""

__version__ = "0.1.0"

__all__ = ["__version__", "match"]


def match(optical, sar, pipeline="default", **overrides):
    """Match an optical and a SAR raster; return the tie points as a GeoDataFrame.

    ``overrides`` are ``stage__key=value`` pairs (e.g. ``match__search_radius=24``) applied over the
    pipeline file, the same precedence the CLI uses.
    """
    from geomatch.pipeline.api import match as _match

    return _match(optical, sar, pipeline=pipeline, **overrides)
