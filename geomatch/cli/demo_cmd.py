"""``geomatch demo``: the default pipeline on a built-in pair with a SIMULATED SAR side."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from geomatch.cli.options import emit_json, json_opt, progress_enabled
from geomatch.errors import OutputExistsError

log = logging.getLogger(__name__)
MARKER = ".geomatch-demo"


@click.command("demo")
@click.option("--out", "out_dir", default="geomatch-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo inputs and outputs (a previous demo folder is replaced).")
@click.option("--matcher", help="Matcher plugin to use instead of the pipeline's.")
@click.option("--weights", help="Weights tag or checkpoint path for the matcher.")
@json_opt
def demo(out_dir, matcher, weights, as_json):
    """Run the default pipeline on a real optical photo and a SIMULATED SAR twin with a known displacement.

    Writes the inputs, tiepoints.gpkg and tiepoints.png into --out and prints the error of the kept tie
    points against the known displacement.
    """
    import numpy as np

    from geomatch import config
    from geomatch.demo import errors_against_truth, make_demo_pair
    from geomatch.pipeline.run import run_pipeline

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise OutputExistsError(f"{out} exists and is not a geomatch demo folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by geomatch demo; safe to delete\n")
    pair = make_demo_pair(out)
    overrides = {"tiles.size": 256}  # small tiles so the demo exercises the seams
    if matcher:
        overrides["match.plugin"] = matcher
    if weights:
        overrides["match.weights"] = weights
    cfg = config.load("default", overrides)
    log.info("demo: optical = real photograph; SAR = SIMULATED with a known displacement (%s)", pair.sar.name)
    result = run_pipeline(pair.optical, pair.sar, cfg, out / "tiepoints.gpkg", overwrite=True,
                          progress=progress_enabled())
    gdf = result.gdf
    kept = gdf[gdf["outlier"] == 0]
    import rasterio

    with rasterio.open(pair.optical) as src:
        shape = (src.height, src.width)
    err = errors_against_truth(kept, shape) if len(kept) else np.array([])
    stats = {
        "simulated": True,
        "verdict": result.summary["verdict"]["status"],  # the run's own judgement, before the known truth is used
        "points_found": int(len(gdf)),
        "points_kept": int(len(kept)),
        "median_error_px": float(np.median(err)) if err.size else None,
        "rmse_px": float(np.sqrt(np.mean(err**2))) if err.size else None,
        "within_1px": float(np.mean(err < 1)) if err.size else None,
        "outputs": result.outputs,
        "timings_s": result.summary["timings_s"],
    }
    if as_json:
        emit_json(stats)
        return
    click.echo(f"geomatch demo (SIMULATED SAR, known displacement): {stats['points_kept']} of "
               f"{stats['points_found']} tie points kept")
    if err.size:
        click.echo(f"error vs known displacement: median {stats['median_error_px']:.2f} px, "
                   f"RMSE {stats['rmse_px']:.2f} px, {100 * stats['within_1px']:.0f}% within 1 px")
    for kind, path in result.outputs.items():
        click.echo(f"{kind}: {path}")
