"""``geomatch run``: tie points between an optical and a SAR raster."""

from __future__ import annotations

import logging

import click

from geomatch import config, config_text
from geomatch.cli.options import (
    RegistryChoice,
    device_opt,
    emit_json,
    json_opt,
    overwrite_opt,
    progress_enabled,
    progress_opt,
)

log = logging.getLogger(__name__)

# Flags that set a pipeline value: (stage, key). A range error then names the flag, not the key.
FLAG_KEYS = {
    "optical_nodata": ("pair", "optical_nodata"), "sar_nodata": ("pair", "sar_nodata"),
    "optical_mask": ("pair", "optical_mask"), "sar_mask": ("pair", "sar_mask"),
    "search_radius": ("match", "search_radius"), "search_units": ("match", "search_units"),
    "max_shift": ("coarse", "max_shift_px"), "tile_size": ("tiles", "size"), "matcher": ("match", "plugin"),
    "max_points": ("detect", "max_points"),
    "weights": ("match", "weights"),
}


def _bands(value: str | None):
    if not value:
        return None
    try:
        return [int(b) for b in value.split(",")]
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: give 1-based band numbers separated by commas, e.g. 4,3,2") from exc


@click.command("run")
@click.argument("pipeline", default="default")
@click.option("--optical", required=True, type=click.Path(dir_okay=False), help="Reference (optical) raster.")
@click.option("--sar", required=True, type=click.Path(dir_okay=False), help="Target (SAR) raster.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output file; its suffix picks the writer (.gpkg, .csv, .vrt, .points...).")
@click.option("--format", "fmt", type=RegistryChoice("writers"), help="Writer; default: the one for the suffix.")
@click.option("--optical-bands", help="1-based bands averaged to grey, e.g. 4,3,2.")
@click.option("--sar-bands", help="1-based SAR band(s), e.g. 1 (VV).")
@click.option("--optical-nodata", type=float, help="Override the optical nodata value.")
@click.option("--sar-nodata", type=float, help="Override the SAR nodata value.")
@click.option("--optical-mask", type=click.Path(dir_okay=False), help="Valid-data mask (nonzero = valid).")
@click.option("--sar-mask", type=click.Path(dir_okay=False), help="Valid-data mask (nonzero = valid).")
@click.option("--search-radius", type=float, help="Expected misregistration after the coarse stage.")
@click.option("--search-units", type=click.Choice(["px", "m"]), help="Units of --search-radius.")
@click.option("--max-shift", type=float, help="Coarse stage: largest shift searched, optical pixels.")
@click.option("--tile-size", type=int, help="Core tile size in optical pixels (memory is bounded by it).")
@click.option("--max-points", type=int,
              help="Keypoints matched in the whole run, spread over the scene (0: all); sets the run's cost.")
@click.option("--matcher", help="Matcher plugin (see `geomatch plugins list --kind matchers`).")
@click.option("--weights", help="Weights: auto, a shipped tag, or a checkpoint path.")
@device_opt
@click.option("--scheduler", help="dask.distributed scheduler address; default: local threads.")
@click.option("--set", "sets", multiple=True, metavar="STAGE.KEY=VALUE", help="Override any pipeline value.")
@click.option("--no-plot", is_flag=True, help="Skip the shift-vector PNG.")
@progress_opt
@overwrite_opt
@json_opt
def run(pipeline, optical, sar, output, fmt, optical_bands, sar_bands, optical_nodata, sar_nodata, optical_mask,
        sar_mask, search_radius, search_units, max_shift, tile_size, max_points, matcher, weights, device, scheduler,
        sets, no_plot, progress, overwrite, as_json):
    """Find tie points between OPTICAL and SAR and write them to OUTPUT.

    PIPELINE is a shipped pipeline name or a .toml file (default: default). Flags beat the file.

    \b
    Examples:
      geomatch run --optical S2.tif --sar S1.tif -o tiepoints.gpkg
      geomatch run --optical S2.tif --sar S1.tif -o tp.gpkg --search-radius 30 --search-units m
      geomatch run visnir --optical rgb.tif --sar nir.tif -o tp.gpkg --matcher rrlnet --weights vis-nir
    """
    given = {"optical_nodata": optical_nodata, "sar_nodata": sar_nodata, "optical_mask": optical_mask,
             "sar_mask": sar_mask, "search_radius": search_radius, "search_units": search_units,
             "max_shift": max_shift, "tile_size": tile_size, "max_points": max_points, "matcher": matcher,
             "weights": weights}
    overrides = {}
    for name, value in given.items():
        if value is not None:
            stage, key = FLAG_KEYS[name]
            config.check_range(stage, key, value, label="--" + name.replace("_", "-"))
            overrides[f"{stage}.{key}"] = value
    for key, value in (("pair.optical_bands", _bands(optical_bands)), ("pair.sar_bands", _bands(sar_bands)),
                       ("match.device", None if device == "auto" else device)):
        if value is not None:
            overrides[key] = value
    overrides.update(config_text.parse_set_options(sets))
    cfg = config.load(pipeline, overrides)
    from geomatch import preflight  # after the config: a bad value answers before even pandas is imported

    plan = preflight.check_run(optical, sar, cfg, output, fmt=fmt, plot=False if no_plot else None,
                               overwrite=overwrite, scheduler=scheduler)
    with preflight.claim_run(plan):
        from geomatch.pipeline.run import run_pipeline  # torch and dask: only once the run can succeed

        result = run_pipeline(optical, sar, cfg, plan.table, scheduler=scheduler, overwrite=overwrite,
                              progress=progress_enabled(flag=progress), plot=plan.plot is not None,
                              fmt=plan.writer)
    if report(result, as_json) != "registered":
        from geomatch.pipeline.verdict import EXIT_NOT_REGISTERED

        raise click.exceptions.Exit(EXIT_NOT_REGISTERED)  # batch jobs act on it; README: exit codes


def report(result, as_json: bool) -> str:
    """Summary at the end: points found and kept, model RMSE, time per stage, the verdict; returns its status."""
    from geomatch.pipeline.verdict import warning_line

    s = result.summary
    verdict = s.get("verdict", {})
    line = warning_line(verdict)
    if line:
        log.warning("%s", line)
    if as_json:
        emit_json({**s, "outputs": result.outputs})
        return verdict.get("status", "registered")
    model = s.get("model", {})
    rmse = model.get("rmse_px")
    log.info("tie points: %d found, %d kept%s", s["points_found"], s["points_kept"],
             f", model RMSE {rmse:.2f} px" if isinstance(rmse, (int, float)) else "")
    log.info("time per stage: %s", ", ".join(f"{k} {v:.1f}s" for k, v in s["timings_s"].items()))
    if s.get("message"):
        log.warning("%s", s["message"])
    for kind, path in result.outputs.items():
        log.info("%s: %s", kind, path)
    return verdict.get("status", "registered")
