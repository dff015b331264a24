"""Platt scaling of a network's match score, folded into its weights (``geomatch models calibrate``).

A network's sigmoid score is trained to rank pairs, not to be a probability: on sensors it has not seen it
saturates (scores near 1 for true and false peaks alike), and then a score floor or a runner-up ratio
cannot tell them apart. Platt scaling refits the last step, ``p = sigmoid(a * logit + b)``, by minimising
the binary cross-entropy on a validation split. Since the logit is the main head's last ``Linear`` layer,
``a`` and ``b`` fold into it (``w <- a w``, ``bias <- a bias + b``): every engine (eager, ONNX export)
then gives the calibrated score with no runtime code, and the checkpoint says so in its metadata
(``calibration``: method, a, b, data, ECE and Brier score before and after).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geomatch.errors import CheckpointError, InputError
from geomatch.models.layers import Head
from geomatch.training import metrics

log = logging.getLogger(__name__)


def main_linear(model) -> nn.Linear:
    """The Linear layer whose output is the main score's logit (``head_main``'s last), or an InputError."""
    head = getattr(model, "head_main", None)
    if not isinstance(head, Head):
        raise InputError(f"matcher {model.name} has no head_main (a sigmoid Head) to calibrate; only networks "
                         "ending in head_main (the RRL-Net family) can be calibrated")
    return head.mlp[-1]


def main_logits(model, images_batches) -> np.ndarray:
    """The main head's logits (pre-sigmoid, float64) over batches of uint8 pairs (B, 2, P, P).

    Read from the last Linear layer itself, not as logit(score): float32 sigmoid rounds to 1.0 above a
    logit of about 17, exactly where an over-confident network's scores lie.
    """
    linear = main_linear(model)
    got: list[np.ndarray] = []
    hook = linear.register_forward_hook(lambda _m, _i, out: got.append(out.detach().double().reshape(-1).numpy()))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for images in images_batches:
                x = torch.from_numpy(np.asarray(images, np.float32) / np.float32(255.0))
                model(x[:, 0:1], x[:, 1:2])
    finally:
        hook.remove()
        model.train(was_training)
    return np.concatenate(got) if got else np.zeros(0)


def fit_platt(logits, labels, iterations: int = 100) -> tuple[float, float]:
    """(a, b) minimising the BCE of ``sigmoid(a * logit + b)`` against ``labels``: Newton's method with a
    halving line search (the loss is convex, but a full step from (1, 0) overshoots on saturated logits).

    A tiny ridge towards (1, 0) keeps the step defined when the classes are separable (a would grow without
    bound).
    """
    z = np.asarray(logits, np.float64).reshape(-1)
    y = np.asarray(labels, np.float64).reshape(-1)
    if z.shape != y.shape or len(z) < 2 or len(np.unique(y)) != 2:
        raise InputError(f"Platt scaling needs matching and non-matching pairs; got {len(z)} logits, "
                         f"labels {sorted(np.unique(y).tolist())}")
    x = np.stack([z, np.ones_like(z)], axis=1)
    ridge = 1e-6 * len(z)
    prior = np.array([1.0, 0.0])

    def loss(theta):
        t = x @ theta
        return float(np.sum(np.logaddexp(0.0, t) - y * t) + 0.5 * ridge * np.sum((theta - prior) ** 2))

    theta = prior.copy()
    current = loss(theta)
    for _ in range(iterations):
        p = sigmoid(x @ theta)
        grad = x.T @ (p - y) + ridge * (theta - prior)
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-8 and loss(theta - scale * step) > current:
            scale /= 2
        theta = theta - scale * step
        previous, current = current, loss(theta)
        if previous - current <= 1e-12 * max(1.0, abs(current)):
            break
    return float(theta[0]), float(theta[1])


def fold(model, a: float, b: float) -> None:
    """Fold ``logit' = a * logit + b`` into the main head's last Linear layer, in place."""
    linear = main_linear(model)
    with torch.no_grad():
        linear.weight.mul_(a)
        linear.bias.mul_(a).add_(b)


def sigmoid(z) -> np.ndarray:
    from scipy.special import expit

    return expit(np.asarray(z, np.float64))


def calibration_record(logits, labels, a: float, b: float) -> dict:
    """ECE and Brier score of the scores before (``sigmoid(logit)``) and after (``sigmoid(a logit + b)``)."""
    before, after = sigmoid(logits), sigmoid(a * np.asarray(logits) + b)
    return {"ece_before": metrics.ece(labels, before), "ece_after": metrics.ece(labels, after),
            "brier_before": metrics.brier(labels, before), "brier_after": metrics.brier(labels, after)}


def _resolve_checkpoint(spec: str) -> Path:
    """A checkpoint path or shipped tag; a classical matcher's name gets its own refusal."""
    from geomatch import registry
    from geomatch.models.factory import needs_weights
    from geomatch.models.weights import shipped_weights

    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if spec in shipped_weights():
        return _shipped_path(spec)
    if spec in registry.names("matchers") and not needs_weights(spec):
        raise InputError(f"{spec} is a classical matcher (no learned score to calibrate); its thresholds are "
                         "class attributes (min_score, max_ratio) chosen on validation scenes")
    raise InputError(f"{spec}: no such checkpoint file or shipped weights tag; give a .pt file written by "
                     "geomatch train (e.g. runs/train/best.pt)")


def _shipped_path(tag: str) -> Path:
    from geomatch.models.weights import resolve_weights, shipped_weights

    return resolve_weights(shipped_weights()[tag]["matcher"], tag).path


def split_of(dataset, split: str):
    """The PatchSet named ``split``: train, val (split by source), val_data (the seed's), or a test subset."""
    splits = {"train": dataset.train, "val": dataset.clean_val, "val_data": dataset.seed_val, **dataset.tests}
    present = [k for k, v in splits.items() if v is not None]
    if splits.get(split) is None:
        raise InputError(f"{dataset.root}: no {split!r} split (for val: val.npy + val_label.npy, as `geomatch "
                         f"dataset build` writes); give --split with one of: {', '.join(present) or 'none'}")
    return splits[split]


def calibrate(checkpoint: str, dataset: str | os.PathLike, out: str | os.PathLike, *, split: str = "val",
              reliability_png: str | os.PathLike | None = None, max_pairs: int | None = None,
              batch_size: int = 256, seed: int = 0, overwrite: bool = False) -> dict:
    """Fit Platt scaling on ``split`` of ``dataset``, fold it into ``checkpoint``'s weights, write ``out``.

    Returns the ``calibration`` record stored in the new checkpoint's metadata (plus ``out``).
    """
    from geomatch.models.checkpoint import load_checkpoint, save_checkpoint
    from geomatch.models.factory import build_matcher
    from geomatch.training.datasets import load_dataset
    from geomatch.training.evaluate import check_patch_fit

    src = _resolve_checkpoint(str(checkpoint))
    out = Path(out)
    if out.exists() and out.resolve() == src.resolve():
        raise InputError(f"--out {out} is the checkpoint being calibrated; write the calibrated copy elsewhere")
    if out.exists() and not overwrite:
        raise InputError(f"--out {out} exists; give --overwrite or another file")
    _, meta = load_checkpoint(src)
    if meta.get("calibration"):
        c = meta["calibration"]
        raise InputError(f"{src} is already calibrated ({c.get('method')} a={c.get('a'):.4g}, b={c.get('b'):.4g}); "
                         "calibrate the uncalibrated checkpoint it came from")
    model = build_matcher(meta["architecture"], weights=src)
    main_linear(model)  # refuse before reading any data
    patches = split_of(load_dataset(str(dataset), need_train=False), split)
    check_patch_fit(model, patches)
    rows = np.arange(len(patches))
    if max_pairs and max_pairs < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_pairs, replace=False))
    labels = patches.labels[rows]
    logits = main_logits(model, (patches.batch(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)))
    a, b = fit_platt(logits, labels)
    record = {"method": "platt", "a": a, "b": b, "dataset": str(patches.path.parent if patches.path else dataset),
              "split": split, "pairs": int(len(rows)), "positives": int(labels.sum()),
              **calibration_record(logits, labels, a, b)}
    log.info("Platt a=%.4f b=%.4f on %d pairs: ECE %.4f -> %.4f", a, b, len(rows), record["ece_before"],
             record["ece_after"])
    fold(model, a, b)
    keep = {k: v for k, v in meta.items() if k not in ("versions", "dtype")}
    save_checkpoint(model, out, metadata={**keep, "calibration": record})
    _check_folded(out, meta["architecture"], patches, rows[:64], logits[:64], a, b)
    if reliability_png:
        panels = {"before": (labels, sigmoid(logits)),
                  f"after (a={a:.3f}, b={b:.3f})": (labels, sigmoid(a * logits + b))}
        title = f"{src.name} on {patches.name} ({len(rows)} pairs)"
        record["reliability_png"] = str(reliability_diagram(panels, reliability_png, title=title))
    return {**record, "out": str(out)}


def _check_folded(out: Path, name: str, patches, rows, logits, a: float, b: float) -> None:
    """The written file, reloaded, scores sigmoid(a * logit + b): the fold reached the weights on disk."""
    from geomatch.models.factory import build_matcher

    model = build_matcher(name, weights=out)
    x = torch.from_numpy(patches.batch(rows).astype(np.float32) / np.float32(255.0))
    with torch.inference_mode():
        got = model(x[:, 0:1], x[:, 1:2])["score"].double().numpy()
    diff = float(np.abs(got - sigmoid(a * logits + b)).max()) if len(rows) else 0.0
    if not diff <= 1e-4:
        out.unlink()
        raise CheckpointError(f"{out}: the calibrated weights score {diff:.1e} away from the fitted scaling; "
                              "not written")


def reliability_diagram(panels: dict, path: str | os.PathLike, title: str = "") -> Path:
    """One reliability diagram per ``name -> (labels, scores)``: the share of matches in each of 10 score
    bins against the bin's mean score (the diagonal is calibrated), with each bin's count and the ECE."""
    from geomatch.training.plots import _figure, _save

    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    fig, axes = _figure(rows, cols, size=(4.5 * cols, 4.2 * rows))
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    for ax, (name, (labels, scores)) in zip(axes.ravel(), panels.items(), strict=False):
        r = metrics.reliability(labels, scores)
        centres = (np.asarray(r["edges"][:-1]) + np.asarray(r["edges"][1:])) / 2
        freq = np.nan_to_num(np.asarray(r["frequency"], float))
        ax.bar(centres, freq, width=0.1, edgecolor="k", color="tab:blue", alpha=0.7, label="share of matches")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="calibrated")
        ax.plot(r["mean_score"], r["frequency"], "ro", ms=3, label="mean score")
        for c, f, n in zip(centres, freq, r["counts"], strict=True):
            ax.text(c, min(f + 0.02, 0.95), str(n), ha="center", fontsize=6)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="score", ylabel="share of matches",
               title=f"{name}: ECE {metrics.ece(labels, scores):.3f}")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
