"""Training a matcher on a patch dataset the way the seed's ``train_model_new.py`` does (rrlnet-spec §1).

What is the seed's: the optimiser each model was trained with (Nadam or Adam, Keras epsilon 1e-7, Nadam
momentum decay 0.004, no schedule), the per-head losses (``losses``), the ``gen4`` augmentation
(``augment``), and the sampling: an epoch is ``N // batch_size`` iterations, each drawing ``batch_size``
distinct random rows, with replacement across iterations (not a permutation pass). The best epoch is the
one with the lowest validation FPR95, ties going to the later epoch.

What differs, on purpose: model selection uses a validation split that is not the test set
(``selection="clean"``: the dataset's own validation file, else a seeded share of the training rows).
``selection="seed"`` reproduces the seed's choice for comparison: ``val_data.npy`` for VIS-NIR (8 blocks
drawn from the test subsets), and the test file itself for OS and SEN1-2.

Files in ``out_dir``: ``best.pt`` and ``last.pt`` (geomatch checkpoints, ``geomatch evaluate --weights``),
``resume.pt`` (weights, optimiser, epoch, random-number states: ``--resume`` continues from it after an
interruption), ``metrics.jsonl`` (one JSON object per epoch), ``curves.png`` and ``run.json`` (the settings).
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from geomatch.errors import InputError, OutputExistsError
from geomatch.fileio import write_atomic
from geomatch.models.checkpoint import load_training_state, save_checkpoint, save_training_state
from geomatch.models.device import parse_device
from geomatch.training import metrics
from geomatch.training.augment import AugmentConfig, Augmenter
from geomatch.training.datasets import PatchDataset, PatchSet, carve_validation, load_dataset
from geomatch.training.evaluate import autocast, autocast_dtype, check_patch_fit, score_pairs
from geomatch.training.losses import MatcherLoss, load_vgg19

log = logging.getLogger(__name__)

SELECTIONS = ("clean", "seed")
OUTPUT_FILES = ("best.pt", "last.pt", "resume.pt", "metrics.jsonl", "curves.png", "run.json")
# Settings a resumed run must share with the run it continues (epochs may grow; the rest may change freely).
RESUME_KEYS = ("model", "width", "dataset_root", "selection", "batch_size", "seed", "val_fraction")


@dataclass
class TrainConfig:
    model: str = "rrlnet"
    dataset: str = "vis-nir"
    data_dir: str | None = None
    out_dir: str = "runs/train"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-4
    width: float = 1.0
    device: str = "auto"
    seed: int = 100
    selection: str = "clean"
    val_fraction: float = 0.1  # share of the training rows carved off when the dataset has no validation file
    max_val_pairs: int = 20_000
    max_iters_per_epoch: int | None = None
    eval_batch_size: int = 256
    vgg19_weights: str | None = None
    init_weights: str | None = None  # start from this checkpoint's weights (fine-tuning), not a fresh init
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: bool = True  # mixed precision on CUDA (no effect on CPU)
    validate_initial: bool = False  # also score the untrained model, as epoch 0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def check(self) -> None:
        if self.selection not in SELECTIONS:
            raise InputError(f"--selection {self.selection}: choose one of {', '.join(SELECTIONS)}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
        if not self.lr > 0:
            raise InputError(f"--lr {self.lr} must be positive")
        if not self.width > 0:
            raise InputError(f"--width {self.width} must be positive")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"--val-fraction {self.val_fraction} must be between 0 and 1")
        if self.max_iters_per_epoch is not None and self.max_iters_per_epoch < 1:
            raise InputError(f"--max-iters-per-epoch {self.max_iters_per_epoch} must be at least 1")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.as_dict()
        return d


@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path
    last_path: Path
    best_epoch: int
    best_val_fpr95: float
    epochs_done: int
    history: list[dict]
    train_pairs: int
    val_pairs: int

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("out_dir", "best_path", "last_path"):
            d[k] = str(d[k])
        return d


def make_optimizer(model, lr: float) -> torch.optim.Optimizer:
    kind = getattr(model, "optimizer", "nadam")
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "nadam":
        return torch.optim.NAdam(params, lr=lr, betas=(0.9, 0.999), eps=1e-7, momentum_decay=0.004)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-7)
    raise InputError(f"matcher {model.name}: unknown optimizer '{kind}'; use nadam or adam")


def draw_batches(rng: np.random.Generator, n: int, batch_size: int, iters: int) -> list[np.ndarray]:
    """The seed's sampling: per iteration ``batch_size`` distinct rows, drawn with replacement across iterations.

    Drawn up front, in order, so a resumed run draws exactly what an uninterrupted one would.
    """
    return [rng.choice(n, batch_size, replace=False) for _ in range(iters)]


def select_validation(ds: PatchDataset, cfg: TrainConfig) -> tuple[PatchSet, dict[str, PatchSet], str]:
    """(training rows, validation sets, description). The validation score is the mean FPR95 of the sets."""
    train = ds.train
    if cfg.selection == "seed":
        if ds.seed_val is not None:
            return train, {"val_data": ds.seed_val}, f"{ds.seed_val.path.name} (the seed's selection)"
        if not ds.tests:
            raise InputError(f"{ds.root}: --selection seed needs the test files or val_data.npy; none found")
        if ds.name == "vis-nir":
            log.warning("%s has no val_data.npy: --selection seed selects on the test subsets themselves", ds.root)
        names = ", ".join(ds.tests)
        return train, dict(ds.tests), f"test subsets {names} (the seed's selection: the test set itself)"
    if ds.clean_val is not None:
        return train, {"val": ds.clean_val}, f"{ds.clean_val.path.name} (split by source image)"
    train, val = carve_validation(train, cfg.val_fraction, cfg.seed, cfg.max_val_pairs)
    return train, {"val": val}, f"{len(val)} rows carved from {ds.train.path.name} (seed {cfg.seed})"


def validate(model, val_sets: dict[str, PatchSet], cfg: TrainConfig, device: torch.device) -> dict:
    out: dict = {}
    fprs = []
    for name, patches in val_sets.items():
        scores = score_pairs(model, patches, cfg.eval_batch_size, device, amp=cfg.amp)
        fprs.append(metrics.fpr95_blocks(patches.labels, scores, patches.blocks))
        if len(val_sets) == 1:
            out["val_accuracy"] = metrics.accuracy(patches.labels, scores)
            out["val_auc"] = metrics.auc(patches.labels, scores)
        else:
            out.setdefault("val_subsets", {})[name] = fprs[-1]
    out["val_fpr95"] = float(np.mean(fprs))
    return out


def _rng_state(np_rng: np.random.Generator, aug_gen: torch.Generator, device: torch.device) -> dict:
    state = {"numpy": np_rng.bit_generator.state, "augment": aug_gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict, np_rng: np.random.Generator, aug_gen: torch.Generator, device: torch.device) -> None:
    np_rng.bit_generator.state = state["numpy"]
    aug_gen.set_state(state["augment"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _prepare_out_dir(out: Path, cfg: TrainConfig) -> None:
    existing = [n for n in OUTPUT_FILES if (out / n).exists()]
    if cfg.resume:
        if not (out / "resume.pt").is_file():
            raise InputError(f"--resume: {out / 'resume.pt'} not found; nothing to resume (drop --resume)")
        return
    if existing and not cfg.overwrite:
        raise OutputExistsError(
            f"{out} already holds a training run ({', '.join(existing)}); use --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    for name in existing:
        (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)


def _build_model(model, cfg: TrainConfig, patch_size: int):
    if not isinstance(model, str):
        return model
    from geomatch.models.factory import build_for_finetuning, build_matcher

    if cfg.init_weights is None:
        return build_matcher(model, width=cfg.width, patch_size=patch_size)
    # Architecture and width must match (checked there); a pruned checkpoint's dropped heads start fresh.
    return build_for_finetuning(model, cfg.init_weights, width=cfg.width, patch_size=patch_size)


def train(model="rrlnet", dataset: str | PatchDataset = "vis-nir", config: TrainConfig | None = None,
          **options) -> TrainResult:
    """Train ``model`` (a registry name, or a Matcher instance) on ``dataset``; see the module doc.

    Options are :class:`TrainConfig` fields (``epochs=2, out_dir=..., selection="seed"``...), or pass ``config``.
    """
    if config is None:
        if isinstance(options.get("augment"), dict):
            options["augment"] = AugmentConfig(**options["augment"])
        config = TrainConfig(model=model if isinstance(model, str) else model.name,
                             dataset=dataset if isinstance(dataset, str) else str(dataset.root), **options)
    cfg = config
    cfg.check()
    device = parse_device(cfg.device)
    out = Path(cfg.out_dir)
    ds = dataset if isinstance(dataset, PatchDataset) else load_dataset(cfg.dataset, cfg.data_dir)
    train_set, val_sets, val_desc = select_validation(ds, cfg)
    iters = len(train_set) // cfg.batch_size
    if iters < 1:
        raise InputError(f"{ds.root}: {len(train_set)} training pairs is less than one batch of {cfg.batch_size}")
    if cfg.max_iters_per_epoch:
        iters = min(iters, cfg.max_iters_per_epoch)
    _prepare_out_dir(out, cfg)
    run_info = {**cfg.as_dict(), "dataset_layout": ds.name, "dataset_root": str(Path(ds.root).resolve()),
                "validation": val_desc, "train_pairs": len(train_set),
                "val_pairs": sum(len(v) for v in val_sets.values())}

    torch.manual_seed(cfg.seed)  # weight initialisation; the seed itself left this unseeded
    net = _build_model(model, cfg, train_set.patch_size)
    run_info["model"] = net.name
    check_patch_fit(net, train_set)
    net = net.to(device).train()
    optimizer = make_optimizer(net, cfg.lr)
    vgg = load_vgg19(cfg.vgg19_weights).to(device) if cfg.vgg19_weights else None
    loss_fn = MatcherLoss(net.HEADS, vgg)
    run_info.update(optimizer=type(optimizer).__name__, perceptual=loss_fn.perceptual, heads=dict(net.HEADS))
    dtype = autocast_dtype(device) if cfg.amp else None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    np_rng = np.random.default_rng(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    augmenter = Augmenter(cfg.augment, aug_gen)

    history: list[dict] = []
    best = {"epoch": 0, "val_fpr95": math.inf}
    start_epoch = 1
    if cfg.resume:
        state = load_training_state(out / "resume.pt")
        previous = state["run"]
        clash = [k for k in RESUME_KEYS if previous.get(k) != run_info.get(k)]
        if clash:
            raise InputError(
                f"--resume: {out} was trained with different settings ("
                + ", ".join(f"{k} {previous.get(k)!r} now {run_info.get(k)!r}" for k in clash)
                + "); use the same settings or another --out"
            )
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # the saved state carries the old rate; --lr may change on resume
            group["lr"] = cfg.lr
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _restore_rng(state["rng"], np_rng, aug_gen, device)
        history, best = list(state["history"]), dict(state["best"])
        start_epoch = int(state["epoch"]) + 1
        log.info("resuming %s from epoch %d of %d", out, start_epoch, cfg.epochs)
        if start_epoch > cfg.epochs:
            log.warning("%s already has %d epochs; raise --epochs to train more", out, start_epoch - 1)
    write_atomic(out / "run.json", json.dumps(run_info, indent=2, default=str).encode())
    log.info("training %s (width %g) on %s: %d pairs; validation: %s; %s on %s%s", net.name, cfg.width, ds.name,
             len(train_set), val_desc, type(optimizer).__name__, device, f", autocast {dtype}" if dtype else "")

    if cfg.validate_initial and not history:
        history.append({"epoch": 0, **validate(net, val_sets, cfg, device), "train_loss": None})

    meta_training = {k: run_info[k] for k in ("dataset", "dataset_layout", "validation", "selection", "batch_size",
                                              "lr", "optimizer", "seed", "perceptual", "train_pairs")}

    from tqdm import tqdm

    pool = ThreadPoolExecutor(max_workers=1)  # reads the next batch from disk while this one trains
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            batches = draw_batches(np_rng, len(train_set), cfg.batch_size, iters)
            net.train()
            sums: dict[str, torch.Tensor] = {}
            total = torch.zeros((), device=device)
            t0 = time.perf_counter()
            bar = tqdm(total=iters, desc=f"epoch {epoch}/{cfg.epochs}", unit="it", disable=not cfg.progress,
                       dynamic_ncols=True)
            pending = pool.submit(train_set.batch, batches[0])
            for it in range(iters):
                images = pending.result()
                labels_np = train_set.labels[batches[it]]
                if it + 1 < iters:
                    pending = pool.submit(train_set.batch, batches[it + 1])
                x = torch.from_numpy(images)
                if cfg.augment.photometric or cfg.augment.geometric or cfg.augment.speckle_prob > 0:
                    optical, sar = augmenter(x[:, 0:1], x[:, 1:2])
                else:
                    optical, sar = x[:, 0:1].float() / 255.0, x[:, 1:2].float() / 255.0
                optical = optical.to(device, non_blocking=True)
                sar = sar.to(device, non_blocking=True)
                labels = torch.from_numpy(labels_np).to(device, non_blocking=True)
                with autocast(device, dtype):
                    outputs = net(optical, sar)
                    loss, parts = loss_fn(outputs["heads"], labels, optical, sar)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                total += loss.detach()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0) + v
                bar.update(1)
                if cfg.progress and (it % 10 == 0 or it + 1 == iters):
                    rate = (it + 1) * cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{float(total) / (it + 1):.4f}", pairs_s=f"{rate:.0f}")
            bar.close()
            train_seconds = time.perf_counter() - t0
            train_loss = float(total) / iters
            if not math.isfinite(train_loss):
                from geomatch.errors import GeomatchError

                raise GeomatchError(f"training diverged at epoch {epoch} (loss {train_loss}); lower --lr")
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "head_losses": {k: float(v) / iters for k, v in sums.items()},
                "iterations": iters,
                "lr": cfg.lr,  # a resumed run may change it
                "pairs_per_s": round(iters * cfg.batch_size / train_seconds, 1),
                "train_seconds": round(train_seconds, 2),
            }
            t1 = time.perf_counter()
            record.update(validate(net, val_sets, cfg, device))
            record["val_seconds"] = round(time.perf_counter() - t1, 2)
            # <= : ties go to the later epoch, as in the seed.
            record["best"] = record["val_fpr95"] <= best["val_fpr95"]
            history.append(record)
            meta = {"training": {**meta_training, "epoch": epoch, "epochs": cfg.epochs},
                    "metrics": {"val_fpr95": record["val_fpr95"], "epoch": epoch}}
            save_checkpoint(net, out / "last.pt", metadata=meta)
            if record["best"]:
                best = {"epoch": epoch, "val_fpr95": record["val_fpr95"]}
                save_checkpoint(net, out / "best.pt", metadata=meta)
            # The resume state goes last and carries its own copy of the weights, so whatever point an
            # interruption hits, it describes one consistent epoch.
            save_training_state({"epoch": epoch, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scaler": scaler.state_dict() if scaler is not None else None,
                                 "rng": _rng_state(np_rng, aug_gen, device), "history": history, "best": best,
                                 "run": json.loads(json.dumps(run_info, default=str))}, out / "resume.pt")
            _write_metrics(out, history, f"{net.name} (width {cfg.width:g}) on {ds.name}")
            log.info("epoch %d/%d: loss %.4f, val FPR95 %.2f %%%s, %.0f pairs/s", epoch, cfg.epochs, train_loss,
                     100 * record["val_fpr95"], " (best)" if record["best"] else "", record["pairs_per_s"])
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else 0
        log.warning("interrupted; %d epoch(s) saved in %s: continue with --resume", done, out)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    trained = [h for h in history if h["epoch"] > 0]
    return TrainResult(out, out / "best.pt", out / "last.pt", int(best["epoch"]), float(best["val_fpr95"]),
                       trained[-1]["epoch"] if trained else 0, history, len(train_set),
                       sum(len(v) for v in val_sets.values()))


def _write_metrics(out: Path, history: list[dict], title: str) -> None:
    lines = "".join(json.dumps(h) + "\n" for h in history)
    write_atomic(out / "metrics.jsonl", lines.encode())
    try:
        from geomatch.training.plots import training_curves

        training_curves(history, out / "curves.png", title=title)
    except Exception as exc:  # a plotting failure must not cost a training run
        log.warning("could not draw %s: %s", out / "curves.png", exc)
