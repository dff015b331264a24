"""``geomatch models``: the installed patch matchers, their size and cost, and their shipped weights."""

from __future__ import annotations

import click

from geomatch import registry
from geomatch.cli.options import emit_json, json_opt
from geomatch.errors import GeomatchError


def _shipped(name: str) -> list[dict]:
    from geomatch.models.weights import shipped_tags, shipped_weights

    index = shipped_weights()
    return [{"tag": t, **{k: index[t].get(k) for k in ("width", "description", "pair_types", "sha256")}}
            for t in shipped_tags(name)]  # fmt: skip


def _summary(name: str) -> dict:
    """What the class says about itself: no model is built, so listing stays cheap."""
    row = {"name": name, "status": "ok", "error": "", "paper": "", "optimizer": "", "heads": [], "weights": []}
    try:
        cls = registry.load("matchers", name)
    except GeomatchError as exc:
        return {**row, "status": "broken", "error": str(exc)}
    row.update(paper=cls.paper, optimizer=cls.optimizer, heads=sorted(cls.HEADS), weights=_shipped(name))
    return row


@click.group()
def models():
    """List the patch matchers and describe one (parameters, cost, shipped weights)."""


@models.command("list")
@json_opt
def list_(as_json):
    """Installed matchers with their paper and shipped weights tags.

    \b
    Example:
      geomatch models list --json
    """
    rows = [_summary(n) for n in registry.names("matchers")]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        if r["status"] != "ok":
            click.echo(f"{r['name']:<10} BROKEN  {r['error']}")
            continue
        tags = ", ".join(w["tag"] for w in r["weights"]) or "-"
        click.echo(f"{r['name']:<10} {r['paper']:<60} weights: {tags}")


def _info(name: str, width: float) -> dict:
    import torch

    from geomatch.models.base import MatcherConfig, keras_param_count
    from geomatch.models.factory import needs_weights
    from geomatch.models.flops import multiply_adds

    row = _summary(name)
    if row["status"] != "ok":
        raise GeomatchError(row["error"])
    cls = registry.load("matchers", name)
    try:
        # Shape-only: counting needs no weight values, and a full-width MFD-Net takes ~18 s to initialise.
        with torch.device("meta"):
            model = cls(MatcherConfig(width=width))
            macs = multiply_adds(model, model.config.patch_size)  # prunes a copy itself
    except Exception:
        model = cls(MatcherConfig(width=width))
        macs = multiply_adds(model, model.config.patch_size)
    pruned = model.prune()
    has_params = needs_weights(name)
    cfg = model.config
    return {
        **row,
        "width": float(cfg.width) if has_params else None,
        "patch_size": int(cfg.patch_size),
        "in_channels": list(cfg.in_channels),
        "normalisation": cfg.normalisation,
        "parameters_training": keras_param_count(model),
        "parameters_inference": keras_param_count(pruned),
        "multiply_adds_per_pair": int(macs),
        "training_only": list(cls.TRAINING_ONLY),
        "needs_weights": has_params,
    }


@models.command("info")
@click.argument("name")
@click.option("--width", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True,
              help="Channel multiplier (1.0 is the published network).")  # fmt: skip
@json_opt
def info(name, width, as_json):
    """Describe matcher NAME: parameters (Keras count, training and inference forms), multiply-adds per
    pair, patch size, optimiser, paper and shipped weights.

    \b
    Example:
      geomatch models info rrlnet --width 0.5
    """
    if name not in registry.names("matchers"):
        registry.load("matchers", name)  # raises UnknownPluginError listing the valid names (exit 2)
    d = _info(name, width)
    if as_json:
        emit_json(d)
        return
    width_text = "n/a (parameter-free)" if d["width"] is None else f"{d['width']:g}"
    lines = [
        f"matcher          {d['name']}",
        f"paper            {d['paper']}",
        f"width            {width_text}",
        f"patch size       {d['patch_size']} x {d['patch_size']}, channels {d['in_channels']}, {d['normalisation']}",
        f"parameters       {d['parameters_training']:,} training / {d['parameters_inference']:,} inference "
        "(Keras count: BN moving statistics included)",
        f"multiply-adds    {d['multiply_adds_per_pair'] / 1e6:,.1f} M per pair (inference form)",
        f"optimiser        {d['optimizer']}",
        f"heads            {', '.join(d['heads'])}",
    ]
    if d["weights"]:
        lines += [f"weights          {w['tag']} (width {w['width']}): {w['description']}" for w in d["weights"]]
    elif d["needs_weights"]:
        lines.append("weights          none shipped: train with geomatch train, or give --weights PATH")
    else:
        lines.append("weights          none needed")
    click.echo("\n".join(lines))


@models.command("package")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--tag", required=True, help="Weights tag, e.g. vis-nir or optical-sar.")
@click.option("--card", "card_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Model card (markdown) shipped beside the weights.")
@click.option("--description", required=True, help="One line for `geomatch models info`.")
@click.option("--pair-type", "pair_types", multiple=True, help="Pair types the weights fit (repeatable).")
@click.option("--test-scene", "test_scenes", multiple=True, help="Scene ids held out for testing (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="plugins/weights", show_default=True)
@click.option("--gsd", "gsd_m", type=click.FloatRange(min=0, min_open=True), metavar="METRES",
              help="Ground sampling distance of the training chips; omit for material that is not georeferenced.")
@click.option("--gsd-range", "gsd_range_m", type=click.FloatRange(min=0, min_open=True), nargs=2,
              metavar="LO HI", default=None, help="GSD range the scale augmentation covered (default: --gsd alone).")
@click.option("--min-score", type=float, default=None,
              help="The filter's score floor on these weights' scale (what filter.min_score = auto takes).")
@click.option("--max-ratio", type=float, default=None,
              help="The filter's ambiguity ceiling on these weights' scale (what filter.max_ratio = auto takes).")
@click.option("--cascade-min-score", type=float, default=None,
              help="The same floor for match.mode = cascade (its combined score); default: the mix of both floors.")
@click.option("--cascade-max-ratio", type=float, default=None,
              help="The same ceiling for match.mode = cascade; default: the mix of both ceilings.")
@json_opt
def package(checkpoint, tag, card_path, description, pair_types, test_scenes, out_dir, gsd_m, gsd_range_m,
            as_json, min_score=None, max_ratio=None, cascade_min_score=None, cascade_max_ratio=None):
    """Ship CHECKPOINT as weights TAG: pruned, float16 where scores allow, sha256 in the index."""
    from pathlib import Path

    from geomatch.models.package import package_weights

    extra = {"test_scenes": list(test_scenes)} if test_scenes else {}
    entry = package_weights(checkpoint, tag, out_dir, description=description, pair_types=list(pair_types),
                            card=Path(card_path).read_text(), extra=extra, gsd_m=gsd_m,
                            gsd_range_m=gsd_range_m or None,
                            thresholds={"min_score": min_score, "max_ratio": max_ratio,
                                        "cascade": {"min_score": cascade_min_score,
                                                    "max_ratio": cascade_max_ratio}})
    if as_json:
        emit_json(entry)
    else:
        click.echo(f"{tag}: {entry['file']} {entry['dtype']} sha256 {entry['sha256']} (max score change "
                   f"{entry['max_score_change']:.1e})")


@models.command("calibrate")
@click.argument("checkpoint")
@click.option("--dataset", required=True, help="A patch-set folder written by `geomatch dataset build`.")
@click.option("--split", default="val", show_default=True,
              help="The split to fit on: val (split by source), val_data, train or a test subset's name.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The calibrated checkpoint to write.")
@click.option("--reliability", "reliability_png", type=click.Path(dir_okay=False),
              help="Write reliability diagrams (before / after, 10 bins) to this PNG.")
@click.option("--max-pairs", type=click.IntRange(min=2), help="Fit on a seeded random subset of this many pairs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@json_opt
def calibrate(checkpoint, dataset, split, out, reliability_png, max_pairs, batch_size, overwrite, as_json):
    """Platt-scale CHECKPOINT's score (a path or shipped tag) on a validation split and fold the scaling
    into its main head, so every engine gives calibrated match probabilities; the metadata records it.

    \b
    Example:
      geomatch models calibrate runs/train/best.pt --dataset data/osar2 --out runs/calibrated.pt \\
          --reliability runs/reliability.png
    """
    from geomatch.models.calibration import calibrate as run_calibration

    rec = run_calibration(checkpoint, dataset, out, split=split, reliability_png=reliability_png,
                          max_pairs=max_pairs, batch_size=batch_size, overwrite=overwrite)
    if as_json:
        emit_json(rec)
        return
    click.echo(f"{rec['out']}: Platt a={rec['a']:.4f} b={rec['b']:.4f} on {rec['pairs']} {rec['split']} pairs; "
               f"ECE {rec['ece_before']:.4f} -> {rec['ece_after']:.4f}, Brier {rec['brier_before']:.4f} -> "
               f"{rec['brier_after']:.4f}")
