"""Evaluation of a matcher on the test subsets of a patch dataset, as the seed's ``test_model_new.py`` does.

Per subset: FPR95 (``metrics.fpr95``, fraction and x100), accuracy at 0.5, ROC AUC, the expected calibration
error (ECE, 10 bins) and Brier score of the scores read as match probabilities, and counts; for VIS-NIR
the unweighted mean FPR95 over the subsets present (the published protocol averages all eight; missing
ones are listed so a partial mean is never mistaken for the published figure).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_curve

from geomatch.errors import InputError
from geomatch.models.device import parse_device
from geomatch.models.engines import engine_for
from geomatch.training import metrics
from geomatch.training.datasets import PatchDataset, PatchSet, load_dataset

log = logging.getLogger(__name__)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision type on CUDA (bfloat16 where supported, else float16); None elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for ``dtype``, or a no-op context when it is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def check_patch_fit(model, patches: PatchSet) -> None:
    cfg = model.config
    if tuple(cfg.in_channels) != (1, 1):
        raise InputError(f"{model.name}: takes {tuple(cfg.in_channels)} channels; patch files hold one per modality")
    if cfg.patch_size != patches.patch_size:
        raise InputError(
            f"{patches.path}: {patches.patch_size}-pixel patches, but the {model.name} model takes "
            f"{cfg.patch_size}; use weights trained at that size"
        )


def score_pairs(model, patches: PatchSet, batch_size: int = 256, device: torch.device | str = "cpu",
                amp: bool = True, progress: bool = False, desc: str = "", engine=None) -> np.ndarray:
    """Match scores (N,) of every pair of ``patches``, read batch by batch from the memory-mapped file.

    ``engine``: a runtime engine for ``model`` (``geomatch.models.engines.engine_for``) to score through
    instead of eager PyTorch.
    """
    from tqdm import tqdm

    device = torch.device(device)
    check_patch_fit(model, patches)
    dtype = autocast_dtype(device) if amp else None
    was_training = model.training
    model.eval()
    out = np.empty(len(patches), dtype=np.float64)
    starts = range(0, len(patches), batch_size)
    try:
        with torch.inference_mode():
            for start in tqdm(starts, desc=desc or patches.name, unit="batch", disable=not progress, leave=False):
                stop = min(start + batch_size, len(patches))
                x = patches.batch(np.arange(start, stop)).astype(np.float32) / np.float32(255.0)
                if engine is not None:
                    out[start:stop] = engine(np.ascontiguousarray(x[:, 0:1]), np.ascontiguousarray(x[:, 1:2]))
                    continue
                x = torch.from_numpy(x).to(device)
                with autocast(device, dtype):
                    score = model(x[:, 0:1], x[:, 1:2])["score"]
                out[start:stop] = score.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def _load_model(model_name: str | None, weights: str | Path | None, width: float | None, patch_size: int,
                params: dict | None = None):
    from geomatch.fileio import sha256_file
    from geomatch.models.checkpoint import load_checkpoint
    from geomatch.models.factory import build_matcher, needs_weights
    from geomatch.models.weights import resolve_weights, shipped_weights

    if model_name is None and weights is not None and str(weights) in shipped_weights():
        model_name = shipped_weights()[str(weights)]["matcher"]
    if model_name is None:
        if weights is None or not Path(weights).is_file():
            raise InputError("give --model NAME (and --weights PATH for a trained matcher)")
        model_name = load_checkpoint(weights)[1]["architecture"]
    if weights is None and needs_weights(model_name):
        raise InputError(f"--weights: matcher {model_name} has learned parameters; give a checkpoint, e.g. best.pt")
    resolved = resolve_weights(model_name, "none" if weights is None else str(weights))
    if resolved is None:
        # Parameter-free (ncc): built for the dataset's patch size.
        model = build_matcher(model_name, width=width, patch_size=patch_size, params=params)
        return model, {"weights": "none", "weights_sha256": None}
    model = build_matcher(model_name, weights=resolved.path, expected_sha256=resolved.sha256, params=params)
    return model, {"weights": str(resolved.path), "weights_sha256": resolved.sha256 or sha256_file(resolved.path)}


def evaluate(model=None, *, weights: str | Path | None = None, dataset: str | PatchDataset = "vis-nir",
             data_dir: str | Path | None = None, batch_size: int = 256, device: str = "auto",
             subsets: Iterable[str] | None = None, roc_png: str | Path | None = None, width: float | None = None,
             params: dict | None = None, progress: bool = False, reliability_png: str | Path | None = None) -> dict:
    """Scores every test subset and returns the metrics as a JSON-ready dict.

    ``model``: a Matcher instance or a registry name (with ``weights``: a checkpoint path or shipped tag; a
    name alone works for parameter-free matchers such as ``ncc``). With ``weights`` alone the architecture is
    read from the checkpoint. ``params`` are the matcher's own options (a pipeline's ``match.params``), e.g.
    ``{"absolute": True}`` for NCC.
    """
    dev = parse_device(device)
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size} must be at least 1")
    ds = dataset if isinstance(dataset, PatchDataset) else load_dataset(dataset, data_dir, need_train=False)
    tests = dict(ds.tests)
    if subsets:
        wanted = list(subsets)
        unknown = [s for s in wanted if s not in tests]
        if unknown:
            raise InputError(f"--subset {', '.join(unknown)}: not in {ds.root}; present: {', '.join(tests) or 'none'}")
        tests = {k: tests[k] for k in wanted}
    if not tests:
        raise InputError(f"{ds.root}: no test subset found for the {ds.name} layout; nothing to evaluate")
    info: dict = {}
    if model is None or isinstance(model, str):
        model, info = _load_model(model, weights, width, next(iter(tests.values())).patch_size, params)
    model = model.to(dev)
    check_patch_fit(model, next(iter(tests.values())))
    # On CPU, the pipeline's fastest runtime (ONNX Runtime where it matches eager within 1e-4): about twice
    # eager's pairs/s, for a second of export, built once for every subset. Training's per-epoch validation
    # stays eager.
    engine = engine_for(model, dev)[0] if dev.type == "cpu" else None
    t0 = time.perf_counter()
    results, curves, scored = {}, {}, {}
    for name, patches in tests.items():
        scores = score_pairs(model, patches, batch_size, dev, progress=progress, desc=name, engine=engine)
        results[name] = metrics.summary(patches.labels, scores)
        fpr, tpr, _ = roc_curve(patches.labels, scores, drop_intermediate=True)
        curves[name] = (fpr, tpr, results[name]["fpr95"])
        scored[name] = (patches.labels, scores)
        log.info("%s: FPR95 %.2f %% over %d pairs", name, results[name]["fpr95_pct"], len(patches))
    seconds = time.perf_counter() - t0
    mean = float(np.mean([r["fpr95"] for r in results.values()]))
    pairs = sum(r["pairs"] for r in results.values())
    report = {
        "model": model.name,
        "width": float(model.config.width),
        **info,
        "dataset": ds.name,
        "data_dir": str(ds.root),
        "device": str(dev),
        "subsets": results,
        "mean_fpr95": mean,
        "mean_fpr95_pct": 100.0 * mean,
        "missing_subsets": [s for s in ds.missing_tests if s not in results] if not subsets else [],
        "pairs": pairs,
        "seconds": round(seconds, 3),
        "pairs_per_s": round(pairs / seconds, 1) if seconds > 0 else None,
        "roc_png": None,
        "reliability_png": None,
    }
    if roc_png:
        from geomatch.training.plots import roc_curves

        report["roc_png"] = str(roc_curves(curves, roc_png, title=f"{model.name} on {ds.name}"))
    if reliability_png:
        from geomatch.models.calibration import reliability_diagram

        title = f"{model.name} on {ds.root.name if ds.name == 'dir' else ds.name}"
        report["reliability_png"] = str(reliability_diagram(scored, reliability_png, title=title))
    return report


def format_table(report: dict) -> str:
    """The human-readable table ``geomatch evaluate`` prints."""
    lines = [f"{report['model']} (width {report['width']:g}) on {report['dataset']} [{report['data_dir']}]",
             f"{'subset':<14}{'pairs':>10}{'FPR95 %':>10}{'acc@0.5':>10}{'AUC':>9}{'ECE':>8}"]
    for name, r in report["subsets"].items():
        lines.append(f"{name:<14}{r['pairs']:>10}{r['fpr95_pct']:>10.2f}{r['accuracy']:>10.4f}{r['auc']:>9.4f}"
                     f"{r['ece']:>8.4f}")
    label = "mean" if len(report["subsets"]) > 1 else "total"
    lines.append(f"{label:<14}{report['pairs']:>10}{report['mean_fpr95_pct']:>10.2f}")
    if report.get("missing_subsets"):
        lines.append(f"(mean over {len(report['subsets'])} subsets; absent: {', '.join(report['missing_subsets'])})")
    if report.get("roc_png"):
        lines.append(f"ROC curves: {report['roc_png']}")
    if report.get("reliability_png"):
        lines.append(f"reliability diagrams: {report['reliability_png']}")
    return "\n".join(lines)
