"""Which weights file a ``--weights`` value means: shipped weights by tag, or a user's checkpoint path.

Shipped weights come from weights packages that distributions declare under the ``geomatch.weights``
entry-point group: each entry names an importable package holding ``index.json``, which maps a tag to
``{file, matcher, width, sha256, description, pair_types}`` (files beside the index), and for georeferenced
training material ``gsd_m`` and ``gsd_range_m`` (the ground sampling distance trained at and the range the
scale augmentation covered; :mod:`geomatch.pipeline.gsd`) and ``thresholds``
(``{min_score, max_ratio, cascade: {min_score, max_ratio}}``: the tie-point filter's floor and ceiling on these
weights' own score scale, alone and in the cascade, chosen on validation pairs; what ``filter.min_score =
"auto"`` / ``max_ratio = "auto"`` take before the matcher class's). Our own shipped
weights are registered exactly this way (see ``setup.cfg``); a third-party distribution adds its own with::

    [options.entry_points]
    geomatch.weights =
        mine = my_package.weights
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path

from geomatch.errors import CheckpointError
from geomatch.models.factory import needs_weights

log = logging.getLogger(__name__)

WEIGHTS_GROUP = "geomatch.weights"
PREFERRED_PAIR_TYPE = "optical-sar"


@dataclass(frozen=True)
class ResolvedWeights:
    """Weights chosen for a matcher: ``tag`` goes into the tie points' ``weights`` column."""

    tag: str
    path: Path
    sha256: str | None = None  # known for shipped weights; a user file is checked by its own checksum
    description: str = ""
    record: dict | None = None  # gsd_m, gsd_range_m, thresholds from the shipped index; None: read from the file


def weights_folders() -> dict[str, Path]:
    """Folder of each weights package declared under ``geomatch.weights``, by entry name."""
    folders: dict[str, Path] = {}
    for ep in sorted(entry_points(group=WEIGHTS_GROUP), key=lambda e: e.name):
        if ep.name in folders:
            continue  # first registration wins, as for other plugins
        try:
            folders[ep.name] = Path(str(resources.files(ep.load())))
        except Exception as exc:  # a broken weights package must not hide the others
            log.warning("weights package '%s' (%s) cannot be loaded: %s: %s", ep.name, ep.value,
                        type(exc).__name__, exc)
    return folders


def _read_index(index: Path) -> dict:
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"shipped weights index {index} is unreadable ({exc}); reinstall its package") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"shipped weights index {index} is not a JSON object; reinstall its package")
    return data


def _shipped() -> dict[str, tuple[Path, dict]]:
    """``tag -> (folder, entry)`` over every weights package; a tag claimed twice keeps the first."""
    found: dict[str, tuple[Path, dict]] = {}
    for name, folder in weights_folders().items():
        index = folder / "index.json"
        if not index.is_file():
            continue
        for tag, entry in _read_index(index).items():
            if tag in found:
                log.warning("weights tag '%s' in package '%s' shadowed by %s", tag, name, found[tag][0])
                continue
            found[tag] = (folder, entry)
    return found


def shipped_weights() -> dict[str, dict]:
    """The shipped weights index, ``tag -> {file, matcher, width, sha256, description, pair_types}``."""
    return {tag: entry for tag, (_, entry) in _shipped().items()}


def shipped_tags(matcher_name: str) -> list[str]:
    """Tags shipped for ``matcher_name``, preferred first (an optical-SAR tag leads)."""
    index = shipped_weights()

    def rank(tag: str) -> tuple[int, str]:
        entry = index[tag]
        preferred = tag == PREFERRED_PAIR_TYPE or tag.endswith(PREFERRED_PAIR_TYPE)
        preferred = preferred or PREFERRED_PAIR_TYPE in (entry.get("pair_types") or [])
        return (0 if preferred else 1, tag)

    return sorted((t for t, e in index.items() if e.get("matcher") == matcher_name), key=rank)


def _from_index(tag: str) -> ResolvedWeights:
    folder, entry = _shipped()[tag]
    return ResolvedWeights(tag, folder / entry["file"], entry.get("sha256"), entry.get("description", ""),
                           {k: entry.get(k) for k in RECORD_KEYS})


RECORD_KEYS = ("gsd_m", "gsd_range_m", "thresholds")
THRESHOLD_KEYS = ("min_score", "max_ratio")


def weights_record(resolved: ResolvedWeights | None) -> tuple[float | None, tuple[float, float] | None, dict]:
    """(gsd_m, gsd_range_m, thresholds) recorded with the weights, (None, None, {}) where not: the shipped index's
    entry (it can be given them without repackaging), else the checkpoint's own metadata."""
    if resolved is None:
        return None, None, {}
    if resolved.record is not None:
        rec = resolved.record
        where = f"shipped weights index entry '{resolved.tag}'"
    else:
        from geomatch.models.checkpoint import load_checkpoint

        rec = load_checkpoint(resolved.path)[1]
        where = f"checkpoint {resolved.path}"
    gsd, rng, thr = rec.get("gsd_m"), rec.get("gsd_range_m"), rec.get("thresholds") or {}
    try:
        gsd = None if gsd is None else float(gsd)
        rng = None if rng is None else (float(rng[0]), float(rng[1]))
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise CheckpointError(f"{where} has gsd_m {gsd!r} / gsd_range_m {rng!r}: not metres; repackage it with "
                              "geomatch models package --gsd M --gsd-range LO HI") from exc
    try:
        cascade = thr.get("cascade") or {}
        thr = {k: float(thr[k]) for k in THRESHOLD_KEYS if thr.get(k) is not None}
        cascade = {k: float(cascade[k]) for k in THRESHOLD_KEYS if cascade.get(k) is not None}
        if cascade:
            thr["cascade"] = cascade
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{where} has thresholds {thr!r}: give numbers for {', '.join(THRESHOLD_KEYS)}; "
                              "repackage it with geomatch models package --min-score S --max-ratio R") from exc
    return gsd, rng, thr


def resolve_weights(matcher_name: str, spec: str | os.PathLike | None) -> ResolvedWeights | None:
    """Turn a ``--weights`` value into a file: ``auto`` (the shipped tag, optical-SAR preferred), ``none``
    (fresh initialisation; ``None``), a shipped tag, or a checkpoint path. Parameter-free matchers get None."""
    spec = "none" if spec is None else str(spec)
    if spec.lower() == "none":
        return None
    parameter_free = not needs_weights(matcher_name)
    if spec.lower() == "auto":
        if parameter_free:
            return None
        tags = shipped_tags(matcher_name)
        if not tags:
            raise CheckpointError(
                f"matcher {matcher_name} has no weights: give --weights PATH or use the ncc matcher"
            )
        return _from_index(tags[0])
    if parameter_free:
        raise CheckpointError(f"matcher {matcher_name} is parameter-free and takes no weights; drop --weights {spec}")
    index = shipped_weights()
    if spec in index:
        entry = index[spec]
        if entry.get("matcher") != matcher_name:
            raise CheckpointError(
                f"weights tag '{spec}' is for matcher '{entry.get('matcher')}', not '{matcher_name}'; "
                f"use --matcher {entry.get('matcher')} or another tag"
            )
        return _from_index(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return ResolvedWeights(path.name, path.resolve())
    available = ", ".join(shipped_tags(matcher_name)) or "none shipped"
    raise CheckpointError(
        f"weights '{spec}' for matcher {matcher_name} is neither a shipped tag ({available}) nor an existing "
        "file; give --weights PATH, auto or none"
    )
