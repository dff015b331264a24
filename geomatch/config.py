"""Pipeline configuration: TOML stage tables loaded into typed, frozen dataclasses.

Precedence: built-in defaults (the dataclass fields) < pipeline file < overrides (CLI flags or API
keywords). Everything is validated before any raster is opened: an unknown stage, key or plugin
name is a ``ConfigError`` that lists the valid choices.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from geomatch import registry
from geomatch.errors import ConfigError


@dataclass(frozen=True)
class PairConfig:
    """How the two rasters are read and brought onto one grid."""

    optical_bands: tuple[int, ...] = ()  # 1-based; averaged to grey; empty: bands 1-3 (all if fewer)
    sar_bands: tuple[int, ...] = ()  # 1-based; empty: band 1
    optical_nodata: float | None = None  # overrides the file's nodata
    sar_nodata: float | None = None
    optical_mask: str = ""  # raster path, nonzero = valid
    sar_mask: str = ""
    sar_scale: str = "auto"  # auto | linear | db: how SAR values are stored
    resampling: str = "bilinear"  # SAR onto the optical grid
    min_overlap_px: int = 96
    implicit_border: bool = True  # no nodata declared: zeros reaching the image edge are nodata


@dataclass(frozen=True)
class TilesConfig:
    size: int = 512  # core tile size in optical pixels; the halo is added around it


@dataclass(frozen=True)
class CoarseConfig:
    """Initial transform estimate before the fine search (capture range)."""

    enabled: bool = True
    max_shift_px: float = 48.0
    max_shift_widen: float = 2.0  # a shift peak on the edge of max_shift_px widens the search up to this multiple
    max_rotation_deg: float = 0.0
    scale_range: tuple[float, ...] = (1.0,)  # (s,) fixed; (lo, hi) searched in scale_step steps; 3+: a list
    downsample: int = 4
    rotation_step_deg: float = 2.0  # first-pass rotation step; refinement passes halve it
    scale_step: float = 0.04  # first-pass relative scale step
    refine_levels: int = 2  # refinement passes on finer overviews after the global search
    min_confidence: float = 1.1  # best peak over runner-up; below it a quick fine pass picks among candidates
    min_peak: float = 0.15  # descriptor correlation the best peak must reach; below it the identity is used


@dataclass(frozen=True)
class DetectConfig:
    plugin: str = "harris"
    # Keypoints matched per run, spread over the scene (geomatch.pipeline.budget); 0: every candidate. Matching
    # costs per point, so this sets a scene's cost: a 10980 px Sentinel-2 pair gets one point per ~200 px block.
    max_points: int = 3000
    max_points_per_tile: int = 0  # optional cap on each tile's candidates before the budget; 0: none
    cell_size: int = 48  # grid non-maximum suppression cell, pixels
    min_contrast: float = 0.02  # textureless patches (std below this, in [0,1] units) are skipped
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MatchConfig:
    plugin: str = "ncc"
    weights: str = "auto"  # auto | none | a shipped tag | a checkpoint path
    search_radius: float = 12.0
    search_units: str = "px"  # px | m
    coarse_step: int = 4
    refine_top: int = 2  # coarse maxima per keypoint refined at step 1
    coarse_sigma: float = 0.0  # Gaussian blur of patches for the coarse grid only (0: none)
    exclusion_px: float = 0.0  # runner-up must lie farther than this from the best (0: coarse_step)
    batch_size: int = 256
    device: str = "auto"  # auto | cpu | cuda[:N]
    # fp32 | bf16 | int8: a network's scoring arithmetic; a reduced one is kept only while its scores stay within
    # its stated tolerance of fp32 (geomatch.models.precision, benchmarks/precision.md)
    precision: str = "fp32"
    params: dict = field(default_factory=dict)
    # search: the matcher scores the coarse-to-fine grid (a dense matcher, e.g. cfog, scores every offset);
    # cascade: the dense `proposer` scores every offset, the matcher its `top_k` peaks (geomatch.pipeline.cascade)
    mode: str = "search"  # search | cascade
    proposer: str = "cfog"
    top_k: int = 2  # top_k and cascade_weight: chosen on volkov-s1s2 validation pairs (benchmarks/cascade.md)
    cascade_weight: float = 0.25
    # peak: network on the top_k peak centres, fit on the proposer; block: their 3x3 too, fit on the mix
    cascade_verify: str = "peak"
    # Positions settled by the proposer with a refine_patch x refine_patch template within 1 px of each match
    # (geomatch.pipeline.refine); 0: the search's own positions
    refine_patch: int = 0
    # Scale-aware patches (geomatch.pipeline.gsd): "auto" samples patches at the weights' training GSD when the
    # input's lies outside their range; "native" never resamples; a number: that GSD in metres.
    patch_gsd: float | str = "auto"


@dataclass(frozen=True)
class FilterConfig:
    """``min_score`` (score floor) and ``max_ratio`` (ambiguity ceiling, runner-up / best): a number, or "auto"
    (the default), the matcher's own on its score scale, resolved at run time by
    :mod:`geomatch.pipeline.thresholds` from the weights' record or the class (Matcher 0.6 / 0.95, ncc 0.53 /
    0.96, cfog 0.56 / 1.0: CFOG's (zncc + 1) / 2 sits lower and its flat peaks put good ratios near 1). The ncc
    and cfog values were chosen on the volkov-s1s2 validation scenes 021, 062, 128, 141, 145, 164 (most kept
    points under 1 px; ``benchmarks/cascade.py floors`` / ``ratios``, benchmarks/cascade.md)."""

    min_score: float | str = "auto"
    max_ratio: float | str = "auto"
    local_radius_px: float = 150.0
    local_max_dev_px: float = 3.0
    model: str = "affine"  # affine | poly2
    ransac_threshold_px: float = 2.0


@dataclass(frozen=True)
class WriteConfig:
    plugin: str = "gpkg"
    plot: bool = True


@dataclass(frozen=True)
class PipelineConfig:
    name: str = "default"
    description: str = ""
    pair: PairConfig = PairConfig()
    tiles: TilesConfig = TilesConfig()
    coarse: CoarseConfig = CoarseConfig()
    detect: DetectConfig = DetectConfig()
    match: MatchConfig = MatchConfig()
    filter: FilterConfig = FilterConfig()
    write: WriteConfig = WriteConfig()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


STAGES: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(PipelineConfig).items() if name not in ("name", "description")
}
# Stages whose `plugin` key names a registered plugin of this kind.
PLUGIN_KINDS = {"detect": "detectors", "match": "matchers", "write": "writers"}
CHOICES = {
    ("pair", "sar_scale"): ("auto", "linear", "db"),
    ("pair", "resampling"): ("nearest", "bilinear", "cubic"),
    ("match", "search_units"): ("px", "m"),
    ("match", "mode"): ("search", "cascade"),
    ("match", "cascade_verify"): ("block", "peak"),
    ("match", "precision"): ("fp32", "bf16", "int8"),
    ("filter", "model"): ("affine", "poly2"),
}
# Numeric ranges (low, high; None: unbounded; `low_open`: low itself excluded). A value outside them
# used to fail deep inside a stage, or was accepted silently; now it is refused with the config.
_POSITIVE = (0, None, True)
_NON_NEGATIVE = (0, None, False)
RANGES: dict[tuple[str, str], tuple[float | None, float | None, bool]] = {
    ("pair", "min_overlap_px"): (1, None, False),
    ("tiles", "size"): (8, None, False),
    ("coarse", "max_shift_px"): _NON_NEGATIVE,
    ("coarse", "max_shift_widen"): (1, None, False),  # a multiple of max_shift_px: below 1 would narrow it
    ("coarse", "max_rotation_deg"): (0, 180, False),
    ("coarse", "scale_range"): _POSITIVE,
    ("coarse", "downsample"): (1, None, False),
    ("coarse", "rotation_step_deg"): _POSITIVE,
    ("coarse", "scale_step"): _POSITIVE,
    ("coarse", "refine_levels"): _NON_NEGATIVE,
    ("coarse", "min_confidence"): _NON_NEGATIVE,
    ("coarse", "min_peak"): (-1, 1, False),
    ("detect", "max_points"): _NON_NEGATIVE,
    ("detect", "max_points_per_tile"): _NON_NEGATIVE,
    ("detect", "cell_size"): (1, None, False),
    ("detect", "min_contrast"): _NON_NEGATIVE,
    ("match", "search_radius"): _POSITIVE,
    ("match", "coarse_step"): (1, None, False),
    ("match", "refine_top"): (1, None, False),
    ("match", "coarse_sigma"): _NON_NEGATIVE,
    ("match", "exclusion_px"): _NON_NEGATIVE,
    ("match", "batch_size"): (1, None, False),
    ("match", "top_k"): (1, None, False),
    ("match", "cascade_weight"): (0, 1, False),
    ("match", "refine_patch"): _NON_NEGATIVE,
    ("match", "patch_gsd"): _POSITIVE,
    ("filter", "min_score"): (-1, 1, False),
    ("filter", "max_ratio"): (0, 1, True),
    ("filter", "local_radius_px"): _NON_NEGATIVE,  # 0 switches the neighbour check off
    ("filter", "local_max_dev_px"): _POSITIVE,
    ("filter", "ransac_threshold_px"): _POSITIVE,
}


def range_text(stage: str, key: str) -> str:
    low, high, low_open = RANGES[(stage, key)]
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}]"


def check_range(stage: str, key: str, value: Any, label: str | None = None) -> None:
    """Refuse a number outside RANGES; ``label`` names it as the user gave it (e.g. a CLI flag)."""
    if (stage, key) not in RANGES or value is None:
        return
    low, high, low_open = RANGES[(stage, key)]
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue  # the type check reports it
        too_low = v <= low if low_open else v < low
        if too_low or (high is not None and v > high) or v != v:
            name = label or f"[{stage}] {key}"
            raise ConfigError(f"{name} = {value!r} is out of range; it must be {range_text(stage, key)}")


def _coerce(where: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if isinstance(value, str) and str in inner:
            return value  # a keyword such as "auto"; build() checks it
        return _coerce(where, value, inner[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value))
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _build_stage(stage: str, cls: type, values: dict) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(f"unknown key '{key}' in stage [{stage}]; valid keys: {', '.join(valid)}")
        kwargs[key] = _coerce(f"[{stage}] {key}", value, hints[key])
        choices = CHOICES.get((stage, key))
        if choices and kwargs[key] not in choices:
            raise ConfigError(f"[{stage}] {key} = {value!r} is not valid; choose one of: {', '.join(choices)}")
        check_range(stage, key, kwargs[key])
    obj = cls(**kwargs)
    if stage in PLUGIN_KINDS:
        kind = PLUGIN_KINDS[stage]
        valid_names = registry.names(kind)
        if obj.plugin not in valid_names:
            raise ConfigError(
                f"[{stage}] plugin = '{obj.plugin}' is not an installed {kind[:-1]}; "
                f"valid choices: {', '.join(valid_names)}"
            )
    return obj


def _merge(base: dict, over: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key in STAGES:
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def parse_overrides(items: dict[str, Any]) -> dict:
    """Turn {'match.search_radius': 24} or {'match__search_radius': 24} into nested tables."""
    nested: dict = {}
    for dotted, value in items.items():
        key = dotted.replace("__", ".")
        if "." not in key:
            raise ConfigError(f"override '{dotted}' must look like STAGE.KEY; stages: {', '.join(STAGES)}")
        stage, name = key.split(".", 1)
        nested.setdefault(stage, {})[name] = value
    return nested


def build(data: dict, overrides: dict | None = None, source: str = "<dict>") -> PipelineConfig:
    """Validate a raw table (as read from TOML) plus overrides into a PipelineConfig."""
    merged = _merge(data, parse_overrides(overrides or {}))
    kwargs: dict[str, Any] = {}
    for key, value in merged.items():
        if key in ("name", "description"):
            kwargs[key] = _coerce(f"{source}: {key}", value, str)
        elif key in STAGES:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: stage [{key}] must be a table")
            kwargs[key] = _build_stage(key, STAGES[key], value)
        else:
            raise ConfigError(f"{source}: unknown stage [{key}]; valid stages: {', '.join(STAGES)}")
    for stage, cls in STAGES.items():
        # Defaults go through the same check so an uninstalled default plugin is caught early.
        kwargs.setdefault(stage, _build_stage(stage, cls, {}))
    # "auto" stays as given: resolving it imports torch, and a config is loaded before any heavy import.
    check_auto("filter", "min_score", kwargs["filter"].min_score, "the matcher's own floor")
    check_auto("filter", "max_ratio", kwargs["filter"].max_ratio, "the matcher's own ceiling")
    _check_patch_gsd(kwargs["match"].patch_gsd)
    return PipelineConfig(**kwargs)


def check_auto(stage: str, key: str, value: float | str, meaning: str) -> None:
    """A threshold that is a number (range-checked with the stage) or "auto" (``meaning``)."""
    if isinstance(value, str) and value != "auto":
        raise ConfigError(f"[{stage}] {key} = {value!r} is not valid; give a number {range_text(stage, key)} or "
                          f"\"auto\" ({meaning})")


def _check_patch_gsd(value: float | str) -> None:
    if isinstance(value, str) and value not in ("auto", "native"):
        raise ConfigError(f"[match] patch_gsd = {value!r} is not valid; give \"auto\" (the weights' own GSD), "
                          f"\"native\" or a pixel size in metres {range_text('match', 'patch_gsd')}")


def shipped_pipelines() -> dict[str, Path]:
    root = resources.files("geomatch_pipelines")
    return {p.name[:-5]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_pipeline_path(name_or_path: str) -> Path:
    """A path when it looks like one (ends in .toml or holds a separator), else a shipped name: a folder that
    happens to be called like a pipeline (``visnir/``) must not shadow it."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or "/" in name_or_path or os.sep in name_or_path:
        if not path.is_file():
            raise ConfigError(f"pipeline file {path} not found (taken as a path: it ends in .toml or contains a "
                              "separator); give an existing .toml file or a shipped name")
        return path
    shipped = shipped_pipelines()
    if name_or_path not in shipped:
        raise ConfigError(
            f"unknown pipeline '{name_or_path}' (taken as a shipped name); shipped pipelines: "
            f"{', '.join(sorted(shipped))}, or give a path to a .toml file (ending in .toml or with a separator)"
        )
    return shipped[name_or_path]


def load(name_or_path: str = "default", overrides: dict | None = None) -> PipelineConfig:
    path = resolve_pipeline_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file") from exc
    data.setdefault("name", path.stem)
    return build(data, overrides, source=str(path))
