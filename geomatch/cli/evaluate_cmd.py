"""``geomatch evaluate``: FPR95 (as the seed computes it), accuracy and AUC on a dataset's test subsets."""

from __future__ import annotations

import click

from geomatch.cli.options import device_opt, emit_json, json_opt, progress_enabled


@click.command("evaluate")
@click.option("--model", "model_name", help="Matcher name; read from the checkpoint when --weights is a file.")
@click.option("--weights", help="Checkpoint (e.g. runs/train/best.pt) or shipped tag; none for parameter-free ncc.")
@click.option("--dataset", default="vis-nir", show_default=True,
              help="vis-nir, os, sen1-2 (published file names) or a folder written by `geomatch dataset build`.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder of a named dataset [default: data/NAME].")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A matcher option, as a pipeline's match.params (repeatable), e.g. --param absolute=true for ncc.")
@click.option("--subset", "subsets", multiple=True, help="Only this test subset (repeatable).")
@click.option("--batch-size", type=int, default=256, show_default=True)
@device_opt
@click.option("--roc", "roc_png", type=click.Path(dir_okay=False), help="Write the ROC curves to this PNG.")
@click.option("--reliability", "reliability_png", type=click.Path(dir_okay=False),
              help="Write a reliability diagram per subset (10 bins, with counts and ECE) to this PNG.")
@json_opt
def evaluate(model_name, weights, dataset, data_dir, params, subsets, batch_size, device, roc_png, reliability_png,
             as_json):
    """Score every test subset of a patch dataset: FPR95 (ROC curve, FPR interpolated at TPR = 0.95),
    the unweighted VIS-NIR mean, accuracy at 0.5, ROC AUC and the calibration error (ECE) of the scores.

    \b
    Examples:
      geomatch evaluate --weights runs/train/best.pt --dataset vis-nir --data-dir data/vis-nir --roc roc.png
      geomatch evaluate --model ncc --dataset data/vis-nir-patches --json
    """
    from geomatch.config_text import parse_set_options
    from geomatch.training.evaluate import evaluate as run_evaluation
    from geomatch.training.evaluate import format_table

    if weights is not None and weights.lower() == "none":
        weights = None
    report = run_evaluation(model_name, weights=weights, dataset=dataset, data_dir=data_dir, batch_size=batch_size,
                            device=device, subsets=subsets or None, roc_png=roc_png, reliability_png=reliability_png,
                            params=parse_set_options(params, "--param", "KEY=VALUE, e.g. --param absolute=true"),
                            progress=progress_enabled())
    if as_json:
        emit_json(report)
    else:
        click.echo(format_table(report))
