"""Turn a training checkpoint into shipped weights: the pruned inference form (float16 when its scores stay
within tolerance of float32, else float32), registered in ``plugins/weights/index.json`` with its sha256
beside a model card. A calibrated checkpoint (``geomatch models calibrate``) keeps its ``calibration`` record, and
the index says ``calibrated`` (with the ECE after calibration)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from geomatch.errors import CheckpointError, InputError
from geomatch.fileio import write_atomic
from geomatch.models.checkpoint import load_checkpoint, save_checkpoint
from geomatch.models.factory import build_matcher

FP16_TOLERANCE = 2e-3  # largest |score(shipped) - score(float32 original)| accepted for float16 storage


def package_weights(checkpoint, tag: str, out_dir, *, description: str, pair_types: list[str],
                    card: str, metrics: dict | None = None, extra: dict | None = None, seed: int = 0,
                    gsd_m: float | None = None, gsd_range_m=None, thresholds: dict | None = None) -> dict:
    """Prune, store as float16, check scores on random pairs, write ``<matcher>-<tag>.pt`` + card + index.

    ``gsd_m`` / ``gsd_range_m`` (metres; default: the checkpoint's own) record the ground sampling distance
    trained at and the range its scale augmentation covered, in the file and the index entry; ``thresholds``
    (``{min_score, max_ratio}``, default: the checkpoint's own) the filter's floor and ceiling on these weights'
    score scale, which ``"auto"`` takes (:mod:`geomatch.models.weights`)."""
    state, meta = load_checkpoint(checkpoint)
    name = meta["architecture"]
    full = build_matcher(name, weights=checkpoint)
    pruned = full.prune() if not meta.get("pruned") else full
    out_dir = Path(out_dir)
    fname = f"{name}-{tag}.pt"
    training = dict(meta.get("training") or {})
    meta_out = {"training": training, "metrics": metrics or meta.get("metrics") or {}, "tag": tag}
    calibration = meta.get("calibration")  # folded into the weights already: the record travels with them
    if calibration:
        meta_out["calibration"] = calibration
    scale = _scale(gsd_m if gsd_m is not None else meta.get("gsd_m"),
                   gsd_range_m if gsd_range_m is not None else meta.get("gsd_range_m"))
    meta_out.update(scale)
    given = thresholds or {}
    old = meta.get("thresholds") or {}
    chosen = _thresholds({**old, **{k: v for k, v in given.items() if k != "cascade" and v is not None}})
    cascade = _thresholds({**(old.get("cascade") or {}),
                           **{k: v for k, v in (given.get("cascade") or {}).items() if v is not None}})
    if cascade:
        chosen["cascade"] = cascade
    if chosen:
        meta_out["thresholds"] = chosen
        scale = {**scale, "thresholds": chosen}
    extra = {**scale, **(extra or {})}
    gen = torch.Generator().manual_seed(seed)
    p = pruned.config.patch_size
    x, y = torch.rand(64, 1, p, p, generator=gen), torch.rand(64, 1, p, p, generator=gen)
    with torch.no_grad():
        reference = pruned.eval()(x, y)["score"]
    # float16 halves the file; keep it only when the scores stay within tolerance, else float32.
    for half in (True, False):
        sha = save_checkpoint(pruned, out_dir / fname, half=half, metadata=meta_out)
        shipped = build_matcher(name, weights=out_dir / fname, expected_sha256=sha)
        with torch.no_grad():
            diff = float((reference - shipped.eval()(x, y)["score"].float()).abs().max())
        if np.isfinite(diff) and diff <= FP16_TOLERANCE:
            break
    if not np.isfinite(diff) or diff > FP16_TOLERANCE:
        (out_dir / fname).unlink()
        raise CheckpointError(f"{checkpoint}: reloaded weights change scores by {diff:.2e}; not shipped")
    (out_dir / f"{name}-{tag}.md").write_text(card)
    index_path = out_dir / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[tag] = {"file": fname, "matcher": name, "width": pruned.config.width, "sha256": sha,
                  "description": description, "pair_types": pair_types, "card": f"{name}-{tag}.md",
                  "dtype": "float16" if half else "float32", "max_score_change": diff,
                  "calibrated": bool(calibration), **({"ece": calibration["ece_after"]} if calibration else {}),
                  **(extra or {})}
    write_atomic(index_path, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    return index[tag]


def _thresholds(values: dict) -> dict:
    """The recorded floor/ceiling, checked: both scores in [0, 1] (a ceiling above 0)."""
    out = {}
    for key in ("min_score", "max_ratio"):
        if values.get(key) is None:
            continue
        v = float(values[key])
        if not (0.0 <= v <= 1.0) or (key == "max_ratio" and v == 0.0):
            raise InputError(f"--{key.replace('_', '-')} {v:g}: give a score in [0, 1] (max-ratio above 0)")
        out[key] = v
    return out


def _scale(gsd_m, gsd_range_m) -> dict:
    """``{"gsd_m", "gsd_range_m"}`` as recorded, {} without a GSD (material that is not georeferenced)."""
    if gsd_m is None:
        if gsd_range_m is not None:
            raise InputError("--gsd-range needs --gsd: give the GSD the weights were trained at too")
        return {}
    gsd = float(gsd_m)
    lo, hi = (gsd, gsd) if gsd_range_m is None else (float(v) for v in gsd_range_m)
    if not (0 < lo <= gsd <= hi < float("inf")):
        raise InputError(f"--gsd {gsd:g} --gsd-range {lo:g} {hi:g}: give positive metres with LO <= GSD <= HI")
    return {"gsd_m": gsd, "gsd_range_m": [lo, hi]}
