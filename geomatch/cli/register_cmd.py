"""``geomatch register``: put the SAR raster onto the optical raster's grid."""

from __future__ import annotations

import logging

import click

from geomatch.cli.options import device_opt, emit_json, json_opt, overwrite_opt, progress_enabled, progress_opt

log = logging.getLogger(__name__)


@click.command("register")
@click.option("--optical", required=True, type=click.Path(dir_okay=False),
              help="Reference (optical) raster: its grid is the output's.")
@click.option("--sar", required=True, type=click.Path(dir_okay=False), help="SAR raster to resample.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Registered SAR (.tif, a Cloud-Optimised GeoTIFF).")
@click.option("--tiepoints", type=click.Path(dir_okay=False),
              help="Tie points from `geomatch run` (.gpkg or .csv); default: run the pipeline first.")
@click.option("--order", type=click.Choice(["1", "2", "3", "tps", "auto"]), default="1", show_default=True,
              help="Model: polynomial order (1 = affine) or thin-plate spline; auto keeps the lowest "
                   "block cross-validation median.")
@click.option("--resampling", type=click.Choice(["nearest", "bilinear", "cubic"]), default="bilinear",
              show_default=True)
@click.option("--dst-nodata", type=float, help="Output nodata; default: the SAR's, else NaN (float) or 0 (integer).")
@click.option("--compress", type=click.Choice(["deflate", "lzw", "zstd", "none"]), default="deflate",
              show_default=True)
@click.option("--field-step", type=click.IntRange(min=1), default=32, show_default=True,
              help="Shift-field grid spacing, optical pixels.")
@click.option("--no-shift-field", is_flag=True, help="Skip NAME_shifts.tif.")
@click.option("--no-plot", is_flag=True, help="Skip NAME_register.png.")
@click.option("--pipeline", default="default", show_default=True, help="Pipeline used when --tiepoints is not given.")
@click.option("--set", "sets", multiple=True, metavar="STAGE.KEY=VALUE", help="Override a pipeline value.")
@device_opt
@progress_opt
@overwrite_opt
@json_opt
def register(optical, sar, output, tiepoints, order, resampling, dst_nodata, compress, field_step, no_shift_field,
             no_plot, pipeline, sets, device, progress, overwrite, as_json):
    """Resample SAR onto OPTICAL's grid (same CRS, transform and size) through a model fitted to tie points.

    Writes OUTPUT, OUTPUT's _shifts.tif (2-band shift field in map units on a coarse grid) and _register.png
    (before/after); with no --tiepoints, also _tiepoints.gpkg from the pipeline run. Reports the model's
    residuals at the kept points, by leave-one-out (each point predicted by a model fitted without it) and by
    block cross-validation (each of 5 areas of points predicted from the others).

    \b
    Examples:
      geomatch register --optical S2.tif --sar S1.tif -o S1_on_S2.tif
      geomatch register --optical S2.tif --sar S1.tif --tiepoints tp.gpkg --order 2 -o S1_on_S2.tif
    """
    from geomatch import config, config_text
    from geomatch.pipeline.register import register as do_register

    cfg = None
    if tiepoints is None:
        overrides = config_text.parse_set_options(sets)
        if device != "auto":
            overrides["match.device"] = device
        cfg = config.load(pipeline, overrides)
    result = do_register(optical, sar, output, tiepoints=tiepoints, order=order, resampling=resampling,
                         dst_nodata=dst_nodata, compress=compress, field_step=field_step,
                         shift_field=not no_shift_field, plot=not no_plot, cfg=cfg, overwrite=overwrite,
                         progress=progress_enabled(flag=progress))
    if as_json:
        emit_json({**result.summary, "outputs": result.outputs})
        return
    m = result.summary["model"]
    log.info("model %s from %d kept tie points", m["order"], m["points"])
    log.info("residuals at the points: median %.2f px, RMSE %.2f px, max %.2f px", m["fit"]["median_px"],
             m["fit"]["rmse_px"], m["fit"]["max_px"])
    log.info("leave-one-out check:     median %.2f px, RMSE %.2f px, max %.2f px", m["check"]["median_px"],
             m["check"]["rmse_px"], m["check"]["max_px"])
    log.info("block cross-validation:  median %.2f px, RMSE %.2f px (each of 5 areas predicted from the others)",
             m["blocks"]["median_px"], m["blocks"]["rmse_px"])
    if len(result.summary["candidates"]) > 1:
        log.info("auto: block cross-validation median per order: %s", ", ".join(
            f"{k} {v['median_px']:.2f} px" for k, v in result.summary["candidates"].items()))
    for kind, path in result.outputs.items():
        log.info("%s: %s", kind, path)
