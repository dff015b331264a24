"""PNG figures of training and evaluation (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from geomatch.fileio import write_atomic


def _figure(rows: int = 1, cols: int = 1, size=(10, 4)):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot) is not registered globally, so nothing leaks between calls or threads.
    fig = Figure(figsize=size, dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    write_atomic(path, buf.getvalue())
    return Path(path)


def training_curves(history: Sequence[Mapping], path: str | Path, title: str = "") -> Path:
    """Loss per head (left) and validation FPR95 in % (right) per epoch; the best epoch is marked."""
    fig, axes = _figure(1, 2)
    ax_loss, ax_val = axes[0]
    epochs = [h["epoch"] for h in history if h.get("epoch", 0) > 0]
    trained = [h for h in history if h.get("epoch", 0) > 0]
    if trained:
        ax_loss.plot(epochs, [h["train_loss"] for h in trained], "k-o", label="total", ms=3)
        for head in trained[-1].get("head_losses", {}):
            ax_loss.plot(epochs, [h.get("head_losses", {}).get(head, np.nan) for h in trained], "-", lw=1, label=head)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(fontsize=7)
    ax_loss.grid(alpha=0.3)
    val_epochs = [h["epoch"] for h in history if h.get("val_fpr95") is not None]
    val = [100 * h["val_fpr95"] for h in history if h.get("val_fpr95") is not None]
    ax_val.plot(val_epochs, val, "b-o", ms=3, label="validation FPR95")
    best = [h for h in history if h.get("best")]
    if best:
        ax_val.plot([best[-1]["epoch"]], [100 * best[-1]["val_fpr95"]], "r*", ms=12, label="best")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("FPR95 (%)")
    ax_val.legend(fontsize=7)
    ax_val.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str = "") -> Path:
    """ROC curves ``name -> (fpr, tpr, fpr95)``: full range (left) and the TPR >= 0.8 region (right)."""
    fig, axes = _figure(1, 2)
    for ax, zoom in zip(axes[0], (False, True), strict=True):
        for name, (fpr, tpr, f95) in curves.items():
            ax.plot(fpr, tpr, lw=1.2, label=f"{name} (FPR95 {100 * f95:.2f} %)")
            ax.plot([f95], [0.95], "k.", ms=4)
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.grid(alpha=0.3)
        if zoom:
            worst = max((f95 for _, _, f95 in curves.values()), default=0.1)
            ax.set_xlim(0, min(1.0, max(0.02, 2.5 * worst)))
            ax.set_ylim(0.8, 1.001)
        else:
            ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
