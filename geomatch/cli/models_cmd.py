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
@json_opt
def package(checkpoint, tag, card_path, description, pair_types, test_scenes, out_dir, as_json):
    """Ship CHECKPOINT as weights TAG: pruned, float16 where scores allow, sha256 in the index."""
    from pathlib import Path

    from geomatch.models.package import package_weights

    extra = {"test_scenes": list(test_scenes)} if test_scenes else {}
    entry = package_weights(checkpoint, tag, out_dir, description=description, pair_types=list(pair_types),
                            card=Path(card_path).read_text(), extra=extra)
    if as_json:
        emit_json(entry)
    else:
        click.echo(f"{tag}: {entry['file']} {entry['dtype']} sha256 {entry['sha256']} (max score change "
                   f"{entry['max_score_change']:.1e})")
