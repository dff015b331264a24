"""``geomatch train``: train a patch matcher on a patch dataset (see ``geomatch.training.loop``)."""

from __future__ import annotations

import click

from geomatch.cli.options import device_opt, emit_json, json_opt, overwrite_opt, progress_enabled


def _saved_settings(ctx: click.Context, out_dir: str) -> dict:
    """With --resume, options left at their defaults take the values the run was started with (run.json)."""
    import json
    from pathlib import Path

    from click.core import ParameterSource

    path = Path(out_dir) / "run.json"
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # the loop reports a missing or foreign run folder
    names = {"model_name": "model", "dataset": "dataset", "data_dir": "data_dir", "epochs": "epochs",
             "batch_size": "batch_size", "lr": "lr", "width": "width", "seed": "seed", "selection": "selection",
             "val_fraction": "val_fraction", "vgg19_weights": "vgg19_weights",
             "max_iters_per_epoch": "max_iters_per_epoch"}
    default = lambda param: ctx.get_parameter_source(param) == ParameterSource.DEFAULT
    saved = {key: run[key] for param, key in names.items() if key in run and default(param)}
    if isinstance(run.get("augment"), dict) and default("no_augment") and default("speckle"):
        saved["augment"] = run["augment"]
    return saved


@click.command("train")
@click.option("--model", "model_name", default="rrlnet", show_default=True,
              help="Matcher to train (geomatch models list).")
@click.option("--dataset", default="vis-nir", show_default=True,
              help="vis-nir, os, sen1-2 (published file names) or a folder written by `geomatch dataset build`.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder of a named dataset [default: data/NAME].")
@click.option("--epochs", type=int, default=40, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Learning rate (no schedule, as the seed).")
@click.option("--width", type=float, default=1.0, show_default=True,
              help="Channel multiplier; 1.0 is the published net.")
@device_opt
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/train", show_default=True,
              help="Run folder: best.pt, last.pt, resume.pt, metrics.jsonl, curves.png.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch (a new --epochs "
                   "and --lr apply from there).")
@click.option("--selection", type=click.Choice(["clean", "seed"]), default="clean", show_default=True,
              help="clean: select on a validation split that is not the test set; seed: as the seed does "
                   "(val_data.npy for VIS-NIR, the test file for OS/SEN1-2), for comparison.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Share of training rows used for validation when the dataset has no validation file.")
@click.option("--seed", type=int, default=100, show_default=True)
@click.option("--vgg19-weights", type=click.Path(dir_okay=False),
              help="Local VGG19 state dict (torchvision layout) for RRL-Net's perceptual loss; off without it.")
@click.option("--init-weights", type=click.Path(exists=True, dir_okay=False),
              help="Start from this checkpoint's weights (fine-tuning) instead of a fresh initialisation.")
@click.option("--no-augment", is_flag=True, help="Train without the seed's augmentation.")
@click.option("--speckle", type=float, default=0.0, show_default=True,
              help="Probability of multiplicative gamma speckle on the SAR patch (not in the seed).")
@click.option("--no-amp", is_flag=True, help="Full float32 on CUDA (mixed precision is the default there).")
@click.option("--max-iters-per-epoch", type=int, help="Cap iterations per epoch (quick runs).")
@click.option("--eval-batch-size", type=int, default=256, show_default=True)
@overwrite_opt
@json_opt
@click.pass_context
def train(ctx, model_name, dataset, data_dir, epochs, batch_size, lr, width, device, out_dir, resume, selection,
          val_fraction, seed, vgg19_weights, init_weights, no_augment, speckle, no_amp, max_iters_per_epoch,
          eval_batch_size, overwrite, as_json):
    """Train a matcher with the seed's losses, optimiser, sampling and augmentation.

    \b
    Examples:
      geomatch train --model rrlnet --dataset vis-nir --data-dir data/vis-nir --epochs 40
      geomatch train --model rrlnet --dataset data/vis-nir-patches --width 0.25 --device cuda --out runs/rrl
      geomatch train --out runs/rrl --resume --epochs 60
      geomatch evaluate --weights runs/rrl/best.pt --dataset data/vis-nir-patches
    """
    from pathlib import Path

    from geomatch import preflight

    # Before torch is imported: a run folder that cannot be created answers in a second, not after the data.
    existing = next(p for p in (Path(out_dir).absolute(), *Path(out_dir).absolute().parents) if p.exists())
    preflight.check_folder_writable(existing)

    from geomatch.training.augment import AugmentConfig
    from geomatch.training.loop import TrainConfig
    from geomatch.training.loop import train as run_training

    if resume:
        saved = _saved_settings(ctx, out_dir)
        model_name = saved.get("model", model_name)
        dataset = saved.get("dataset", dataset)
        data_dir = saved.get("data_dir", data_dir)
        epochs, batch_size, lr = saved.get("epochs", epochs), saved.get("batch_size", batch_size), saved.get("lr", lr)
        width, seed = saved.get("width", width), saved.get("seed", seed)
        selection, val_fraction = saved.get("selection", selection), saved.get("val_fraction", val_fraction)
        vgg19_weights = saved.get("vgg19_weights", vgg19_weights)
        max_iters_per_epoch = saved.get("max_iters_per_epoch", max_iters_per_epoch)
    augment = AugmentConfig(photometric=not no_augment, geometric=not no_augment, speckle_prob=speckle)
    if resume and "augment" in saved:
        augment = AugmentConfig(**saved["augment"])
    cfg = TrainConfig(model=model_name, dataset=dataset, data_dir=data_dir, out_dir=out_dir, epochs=epochs,
                      batch_size=batch_size, lr=lr, width=width, device=device, seed=seed, selection=selection,
                      val_fraction=val_fraction, max_iters_per_epoch=max_iters_per_epoch,
                      eval_batch_size=eval_batch_size, vgg19_weights=vgg19_weights, init_weights=init_weights,
                      augment=augment,
                      amp=not no_amp, resume=resume, overwrite=overwrite, progress=progress_enabled())
    result = run_training(model_name, dataset, config=cfg)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"best epoch {result.best_epoch}: validation FPR95 {100 * result.best_val_fpr95:.2f} % "
               f"({result.best_path}); last: {result.last_path}")
