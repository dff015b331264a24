"""Orchestration of ``geomatch run``: pair -> coarse transform -> tiles (dask) -> filter -> write.

Coordinates: everything between stages is in the OPTICAL raster's pixel grid (GDAL convention: the
centre of pixel (i, j) is (j + 0.5, i + 0.5)). The SAR is read as a view warped onto that grid; only at
the end are matched positions taken to the SAR raster's own pixel grid and to map units.
"""

from __future__ import annotations

import logging
import platform
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from geomatch import __version__, config, config_text, preflight, process_limits, registry
from geomatch.models.runtime import Scorer, build_scorer
from geomatch.pipeline import budget, thresholds
from geomatch.pipeline.affinetools import bbox_window, shift_affine, to_global
from geomatch.pipeline.candidates import settle_initial
from geomatch.pipeline.filters import flag_outliers
from geomatch.pipeline.gsd import footprint, patch_zoom
from geomatch.pipeline.keypoints import Keypoints
from geomatch.pipeline.raster import RasterPair
from geomatch.pipeline.schema import add_shift_columns, empty_frame, to_geodataframe
from geomatch.pipeline.search import match_points
from geomatch.pipeline.tiling import Tile, halo_for, plan_tiles
from geomatch.pipeline.verdict import run_verdict
from geomatch.pipeline.writer import writer_for

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    gdf: object  # GeoDataFrame of tie points
    summary: dict
    run_info: dict
    outputs: dict = field(default_factory=dict)


def _match_in_pixels(match: config.MatchConfig, pixel_size: float) -> config.MatchConfig:
    """The match stage with its search radius in optical pixels, the only unit the search takes."""
    if match.search_units == "m":
        return replace(match, search_radius=match.search_radius / pixel_size, search_units="px")
    return match


def process_tile(pair: RasterPair, tile: Tile, chosen: Keypoints, affine: np.ndarray,
                 match: config.MatchConfig, scorer: Scorer, zoom: float = 1.0) -> pd.DataFrame:
    """Search and refine the tile's chosen keypoints (optical-grid coordinates of the whole raster, picked by
    :func:`geomatch.pipeline.budget.choose`); return raw matches in optical-grid coordinates.

    ``match`` has its radius in pixels (:func:`_match_in_pixels`); ``zoom`` is the patches' optical pixels per
    patch pixel (:func:`geomatch.pipeline.gsd.patch_zoom`). On a dask.distributed worker ``scorer``
    arrives rebuilt from its build arguments, once per worker process (``Scorer.__reduce__``).
    """
    patch = footprint(scorer.patch_size, zoom)
    if len(chosen) == 0:
        return pd.DataFrame()
    optical, opt_valid = pair.read_optical(tile.read)
    origin = (tile.read.col_off, tile.read.row_off)
    kps = Keypoints(chosen.x - origin[0], chosen.y - origin[1], chosen.response)
    sar_win = bbox_window(affine, tile.read, margin=match.search_radius + patch)
    sar, sar_valid = pair.read_sar(sar_win)
    local = shift_affine(affine, origin, (sar_win.col_off, sar_win.row_off))
    df = match_points(optical, sar, opt_valid, sar_valid, kps, local, scorer, match, zoom)
    if df.empty:
        return df
    df["ref_x"] += origin[0]
    df["ref_y"] += origin[1]
    df["tgt_x"] += sar_win.col_off
    df["tgt_y"] += sar_win.row_off
    df["tile_id"] = tile.id
    return df


class _CountingScorer:
    """The tile scorer, counting the patch pairs it scores into a progress bar: a one-tile run still moves.

    Local threads only (a dask.distributed worker's bar would be drawn in the worker's process).
    """

    def __init__(self, scorer: Scorer):
        from tqdm import tqdm

        self._scorer = scorer
        # Redrawn on every batch: tqdm's default 0.1 s throttle hides a short one-tile run's progress entirely.
        self.bar = tqdm(desc="patch pairs scored", unit="pair", unit_scale=True, leave=False, position=1,
                        mininterval=0, miniters=1)

    def __getattr__(self, name):
        if name == "_scorer":  # not yet set (copying): no recursion
            raise AttributeError(name)
        return getattr(self._scorer, name)

    def __call__(self, optical, sar):
        out = self._scorer(optical, sar)
        self.bar.update(len(out))
        return out


def _compute(tasks, scheduler: str | None, progress: bool, scoring: bool = True):
    """Run delayed tile tasks on the local threaded scheduler or a dask.distributed cluster; ``scoring`` tasks
    go to the cluster's GPU workers when it has any (:func:`geomatch.process_limits.scoring_resources`)."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="tiles", unit="tile", disable=not progress, leave=False)
    try:
        if scheduler:
            from distributed import Client, as_completed

            with Client(scheduler) as client:
                resources = process_limits.scoring_resources(client) if scoring else None
                futures = client.compute(tasks, resources=resources)
                index = {f.key: i for i, f in enumerate(futures)}
                out = [None] * len(futures)
                try:
                    for fut in as_completed(futures):
                        out[index[fut.key]] = fut.result()
                        bar.update(1)
                except BaseException:
                    # Ctrl-C or a failed tile: the cluster must not go on matching tiles nobody will read.
                    client.cancel(futures)
                    raise
                return out
        from dask.callbacks import Callback

        class _Bar(Callback):
            def _posttask(self, key, result, dsk, state, id):
                if isinstance(key, tuple) and str(key[0]).startswith("tile-"):
                    bar.update(1)
                elif isinstance(key, str) and key.startswith("tile-"):
                    bar.update(1)

        with _Bar():
            return list(dask.compute(*tasks, scheduler="threads", num_workers=process_limits.apply().tasks))
    finally:
        bar.close()


def _absolute_paths(optical, sar, cfg: config.PipelineConfig, output):
    """Inputs, masks and output as absolute paths: tile tasks reopen the rasters by path, and a dask worker
    resolves a relative path from its own working folder, not the client's."""
    masks = {k: str(Path(v).absolute()) for k in ("optical_mask", "sar_mask") if (v := getattr(cfg.pair, k))}
    return (Path(optical).absolute(), Path(sar).absolute(), replace(cfg, pair=replace(cfg.pair, **masks)),
            None if output is None else Path(output).absolute())


def run_pipeline(optical, sar, cfg: config.PipelineConfig, output=None, *, scheduler: str | None = None,
                 overwrite: bool = False, progress: bool = False, plot: bool | None = None,
                 fmt: str | None = None) -> RunResult:
    timings: dict[str, float] = {}
    started = time.time()
    optical, sar, cfg, output = _absolute_paths(optical, sar, cfg, output)
    writer = plan = None
    if output is not None:
        # Every file the run writes, checked before any work, not after an hour of it (geomatch.preflight).
        plan = preflight.plan_outputs(output, writer_for(output, fmt), cfg.write.plot if plot is None else plot)
        preflight.check_outputs(plan, preflight.run_inputs(optical, sar, cfg), overwrite)
        writer = registry.load("writers", plan.writer)()
        output = plan.table

    t = time.perf_counter()
    process_limits.apply()  # threads and GDAL's cache, before the first read and the first scorer
    pair = RasterPair(optical, sar, cfg.pair)
    scorer = build_scorer(cfg.match.plugin, cfg.match.weights, cfg.match.device, cfg.match.batch_size,
                          params=dict(cfg.match.params), precision=cfg.match.precision)
    # The record keeps the pipeline as given ("auto" floors too: batch reruns compare it); the run filters with
    # the matcher's resolved floor, which asks its weights or class and so waits for the scorer.
    given = cfg
    performed = thresholds.effective_match(cfg.match)
    if performed.mode != cfg.match.mode:
        log.info("match.mode = cascade with the classical matcher %s: it searches on its own", scorer.name)
        cfg = replace(cfg, match=performed)
    match = _match_in_pixels(cfg.match, pair.optical_res)
    zoom = patch_zoom(cfg.match.patch_gsd, scorer.gsd_m, scorer.gsd_range_m, pair.optical_res_m, str(optical))
    if zoom != 1.0:
        log.info("patches sampled at %.3g optical pixels per patch pixel (input %.3g m, weights %s m)", zoom,
                 pair.optical_res_m, scorer.gsd_m)
    own = scorer.thresholds
    cfg = replace(cfg, filter=replace(cfg.filter,
                                      min_score=thresholds.resolve_min_score(cfg.filter.min_score, cfg.match, own),
                                      max_ratio=thresholds.resolve_max_ratio(cfg.filter.max_ratio, cfg.match, own)))
    timings["pair"] = time.perf_counter() - t

    t = time.perf_counter()
    ov = pair.read_overview(max_size=1024)
    # The coarse stage counts full-resolution pixels per overview pixel: the inverse of the overview's scale.
    initial = settle_initial(ov.optical, ov.optical_valid, ov.sar, ov.sar_valid, 1.0 / ov.scale, cfg, scorer,
                             match.search_radius)
    affine = to_global(np.asarray(initial.affine, float), (pair.overlap.col_off, pair.overlap.row_off))
    timings["coarse"] = time.perf_counter() - t
    log.info("coarse transform (%s, score %.3f): shift %.1f, %.1f px", initial.method, initial.score,
             affine[0, 2], affine[1, 2])

    t = time.perf_counter()
    max_scale = max(cfg.coarse.scale_range) if cfg.coarse.scale_range else 1.0
    reach = footprint(scorer.patch_size, zoom)  # optical pixels a patch spans
    # A refinement template larger than the patch needs its context inside the tile read (not a wider border).
    halo = halo_for(max(reach, int(cfg.match.refine_patch)), max_scale, cfg.detect.cell_size)
    tiles = plan_tiles(pair.overlap, cfg.tiles.size, halo)
    # Two passes: every tile's candidates first (small tables), then the scene's budget decides what is matched.
    found = _compute([dask.delayed(budget.detect_tile, pure=False)(pair, tile, cfg.detect, reach,
                                                                   dask_key_name=f"detect-{tile.id}")
                      for tile in tiles], scheduler, False, scoring=False)
    chosen = budget.choose(found, pair.overlap, cfg.detect)
    timings["detect"] = time.perf_counter() - t
    tile_scorer = _CountingScorer(scorer) if progress and not scheduler else scorer
    tasks = [
        dask.delayed(process_tile, pure=False)(pair, tile, kps, affine, match, tile_scorer, zoom,
                                               dask_key_name=f"tile-{tile.id}")
        for tile, kps in zip(tiles, chosen, strict=True) if len(kps)
    ]
    try:
        parts = _compute(tasks, scheduler, progress)
    finally:
        if tile_scorer is not scorer:
            tile_scorer.bar.close()
    parts = [p for p in parts if p is not None and not p.empty]
    timings["match"] = time.perf_counter() - t - timings["detect"]

    t = time.perf_counter()
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    refined = int(df["refined"].sum()) if "refined" in df else 0
    df, model_info = _finish_points(df, pair, cfg.filter, scorer)
    gdf = to_geodataframe(df, pair.grid.crs)
    timings["filter"] = time.perf_counter() - t

    kept = int((gdf["outlier"] == 0).sum()) if len(gdf) else 0
    summary = {
        "points_found": int(len(gdf)),
        "points_kept": kept,
        "model": model_info,
        "coarse": {"method": initial.method, "score": float(initial.score), "affine": affine.tolist(),
                   "confident": initial.confident, "details": initial.json_details()},
        "verdict": run_verdict(gdf, model_info, initial, pair.overlap, cfg.filter).as_dict(),
        "tiles": len(tiles),
        "patch_gsd": {"setting": cfg.match.patch_gsd, "input_gsd_m": pair.optical_res_m, "weights_gsd_m": scorer.gsd_m,
                      "weights_gsd_range_m": None if scorer.gsd_range_m is None else list(scorer.gsd_range_m),
                      "zoom": zoom, "refined_points": refined},
        "filter_min_score": float(cfg.filter.min_score),
        "filter_max_ratio": float(cfg.filter.max_ratio),
        "keypoints": {"candidates": sum(len(k) for k in found), "budget": cfg.detect.max_points,
                      "chosen": sum(len(k) for k in chosen)},
        "timings_s": timings,
        "message": "" if kept >= 3 else "no reliable tie points: the pair may not overlap in content, or the "
        "misregistration exceeds the search radius (raise match.search_radius / coarse.max_shift_px)",
    }
    run_info = {
        "run_id": uuid.uuid4().hex,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "geomatch_version": __version__,
        "pipeline_toml": config_text.to_toml(given),
        "inputs": pair.describe(),
        "scorer": scorer.describe(),  # resolved: the file may say weights/device "auto"
        "versions": _versions(),
        "summary": summary,
        "timings": timings,
    }
    result = RunResult(gdf, summary, run_info)
    if writer is not None:
        t = time.perf_counter()
        run_info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        writer.write(gdf, run_info, output, overwrite=overwrite)
        result.outputs["tiepoints"] = str(output)
        if plan.plot is not None:
            from geomatch.pipeline.plot import plot_shifts

            png = plan.plot
            # The coarse stage's overview: bounded memory on full scenes, and no second read.
            plot_shifts(ov.optical, gdf, png, title=f"{Path(optical).name} vs {Path(sar).name}",
                        decimate=1.0 / ov.scale, origin=(pair.overlap.col_off, pair.overlap.row_off),
                        overwrite=overwrite, transform=pair.grid.transform)
            result.outputs["plot"] = str(png)
        timings["write"] = time.perf_counter() - t
    pair.close()
    return result


def _finish_points(df: pd.DataFrame, pair: RasterPair, filter_cfg: config.FilterConfig,
                   scorer: Scorer) -> tuple[pd.DataFrame, dict]:
    """Raw matches of all tiles -> numbered tie points in both pixel grids and map units, outliers flagged."""
    if df.empty:
        return empty_frame(), {"reason": "no candidate points"}
    df = df.sort_values(["tile_id", "ref_y", "ref_x"], kind="stable").reset_index(drop=True)
    df["point_id"] = np.arange(1, len(df) + 1)
    df["ref_col"], df["ref_row"] = df["ref_x"].to_numpy(), df["ref_y"].to_numpy()
    view_col, view_row = df["tgt_x"].to_numpy(), df["tgt_y"].to_numpy()
    df["tgt_col"], df["tgt_row"] = pair.sar_pixel(view_col, view_row)
    df["view_col"], df["view_row"] = view_col, view_row
    df["ref_x"], df["ref_y"] = pair.to_map(df["ref_col"].to_numpy(), df["ref_row"].to_numpy())
    df["tgt_x"], df["tgt_y"] = pair.to_map(view_col, view_row)
    df = add_shift_columns(df, pair.grid.transform)
    df, model_info = flag_outliers(df, filter_cfg)
    df["matcher"] = scorer.name
    df["weights"] = scorer.weights_tag
    return df, model_info


def _versions() -> dict:
    import importlib.metadata as md

    import pyproj
    import rasterio

    out = {"python": platform.python_version(), "gdal": rasterio.__gdal_version__, "proj": pyproj.proj_version_str}
    for dist in ("numpy", "torch", "onnxruntime", "rasterio", "geopandas", "pyogrio", "shapely", "dask",
                 "scikit-image"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out

