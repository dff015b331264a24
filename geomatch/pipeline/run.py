"""Orchestration of ``geomatch run``: pair -> coarse transform -> tiles (dask) -> filter -> write.

Coordinates: everything between stages is in the OPTICAL raster's pixel grid (GDAL convention: the
centre of pixel (i, j) is (j + 0.5, i + 0.5)). The SAR is read as a view warped onto that grid; only at
the end are matched positions taken to the SAR raster's own pixel grid and to map units.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geomatch import __version__, config, registry
from geomatch.pipeline.tiling import Tile, plan_tiles

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    gdf: object  # GeoDataFrame of tie points
    summary: dict
    run_info: dict
    outputs: dict = field(default_factory=dict)


def _to_global(affine_local: np.ndarray, origin: tuple[float, float]) -> np.ndarray:
    """Affine on overlap-local coordinates -> the same map on optical-grid coordinates."""
    lin, t = affine_local[:, :2], affine_local[:, 2]
    o = np.asarray(origin, float)
    return np.hstack([lin, (t + o - lin @ o)[:, None]])


def _shift_affine(affine: np.ndarray, src_origin, dst_origin) -> np.ndarray:
    """Express a global map q = A p in arrays whose origins are src_origin (p) and dst_origin (q)."""
    lin = affine[:, :2]
    t = affine[:, 2] + lin @ np.asarray(src_origin, float) - np.asarray(dst_origin, float)
    return np.hstack([lin, t[:, None]])


def _bbox_window(affine: np.ndarray, win, margin: float):
    from rasterio.windows import Window

    c0, r0 = win.col_off, win.row_off
    c1, r1 = c0 + win.width, r0 + win.height
    corners = np.array([[c0, r0, 1], [c1, r0, 1], [c0, r1, 1], [c1, r1, 1]], float)
    q = corners @ affine.T
    x0, y0 = np.floor(q.min(axis=0) - margin)
    x1, y1 = np.ceil(q.max(axis=0) + margin)
    return Window(int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def halo_for(patch_size: int, cfg: config.PipelineConfig, radius_px: float) -> int:
    # Rotated/scaled patches reach further than half their side; and a suppression cell touching the
    # core may reach cell_size - 1 pixels beyond it, where its candidates need their whole patch window
    # inside the read window to be judged exactly as a single-window run judges them.
    smax = max(cfg.coarse.scale_range) if cfg.coarse.scale_range else 1.0
    patch_reach = int(math.ceil(patch_size / 2 * math.sqrt(2) * max(1.0, smax))) + 2
    return patch_reach + int(cfg.detect.cell_size)


def process_tile(pair, tile: Tile, affine: np.ndarray, cfg: config.PipelineConfig, radius_px: float,
                 scorer_spec: tuple) -> pd.DataFrame:
    """Detect, search and refine inside one tile; return raw matches in optical-grid coordinates."""
    from geomatch.models.runtime import build_scorer
    from geomatch.pipeline.search import match_points

    scorer = build_scorer(*scorer_spec)
    patch = scorer.patch_size
    optical, opt_valid = pair.read_optical(tile.read)
    detector = registry.load("detectors", cfg.detect.plugin)(**cfg.detect.params)
    origin = (tile.read.col_off, tile.read.row_off)
    kps = detector.detect(
        optical, opt_valid, max_points=cfg.detect.max_points_per_tile, cell_size=cfg.detect.cell_size,
        min_contrast=cfg.detect.min_contrast, border=patch // 2, origin=origin,
    )
    # Ownership: a keypoint belongs to the tile whose core contains it (half-open), so seams never
    # produce duplicates or gaps.
    gx, gy = kps.x + origin[0], kps.y + origin[1]
    core = tile.core
    own = (gx >= core.col_off) & (gx < core.col_off + core.width)
    own &= (gy >= core.row_off) & (gy < core.row_off + core.height)
    kps = kps.subset(own)
    if len(kps) == 0:
        return pd.DataFrame()
    sar_win = _bbox_window(affine, tile.read, margin=radius_px + patch)
    sar, sar_valid = pair.read_sar(sar_win)
    local = _shift_affine(affine, origin, (sar_win.col_off, sar_win.row_off))
    df = match_points(optical, sar, opt_valid, sar_valid, kps, local, scorer, cfg.match, patch, radius_px)
    if df.empty:
        return df
    df["ref_x"] += origin[0]
    df["ref_y"] += origin[1]
    df["tgt_x"] += sar_win.col_off
    df["tgt_y"] += sar_win.row_off
    df["tile_id"] = tile.id
    return df


def _compute(tasks, scheduler: str | None, progress: bool):
    """Run delayed tile tasks on the local threaded scheduler or a dask.distributed cluster."""
    import dask
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="tiles", unit="tile", disable=not progress, leave=False)
    try:
        if scheduler:
            from distributed import Client, as_completed

            with Client(scheduler) as client:
                futures = client.compute(tasks)
                index = {f.key: i for i, f in enumerate(futures)}
                out = [None] * len(futures)
                for fut in as_completed(futures):
                    out[index[fut.key]] = fut.result()
                    bar.update(1)
                return out
        from dask.callbacks import Callback

        class _Bar(Callback):
            def _posttask(self, key, result, dsk, state, id):
                if isinstance(key, tuple) and str(key[0]).startswith("tile-"):
                    bar.update(1)
                elif isinstance(key, str) and key.startswith("tile-"):
                    bar.update(1)

        with _Bar():
            return list(dask.compute(*tasks, scheduler="threads"))
    finally:
        bar.close()


def run_pipeline(optical, sar, cfg: config.PipelineConfig, output=None, *, scheduler: str | None = None,
                 overwrite: bool = False, progress: bool = False, plot: bool | None = None,
                 fmt: str | None = None) -> RunResult:
    import dask

    from geomatch.models.runtime import build_scorer
    from geomatch.pipeline.coarse import estimate_initial
    from geomatch.pipeline.filters import flag_outliers
    from geomatch.pipeline.raster import RasterPair
    from geomatch.pipeline.schema import add_shift_columns, to_geodataframe
    timings: dict[str, float] = {}
    started = time.time()
    writer = None
    if output is not None:
        writer = registry.load("writers", fmt or cfg.write.plugin)()
        output = Path(output)
        writer.check(output, overwrite)  # fail before any work, not after an hour of it

    t = time.perf_counter()
    pair = RasterPair(optical, sar, cfg.pair)
    device = cfg.match.device
    scorer_spec = (cfg.match.plugin, cfg.match.weights, device, cfg.match.batch_size, "auto", None,
                   dict(cfg.match.params))
    scorer = build_scorer(*scorer_spec)
    radius_px = cfg.match.search_radius
    if cfg.match.search_units == "m":
        radius_px = cfg.match.search_radius / pair.optical_res
    timings["pair"] = time.perf_counter() - t

    t = time.perf_counter()
    ov = pair.read_overview(max_size=1024)
    initial = estimate_initial(*ov[:4], cfg.coarse, ov[4])
    affine = _to_global(np.asarray(initial.affine, float), (pair.overlap.col_off, pair.overlap.row_off))
    timings["coarse"] = time.perf_counter() - t
    log.info("coarse transform (%s, score %.3f): shift %.1f, %.1f px", initial.method, initial.score,
             affine[0, 2], affine[1, 2])

    t = time.perf_counter()
    halo = halo_for(scorer.patch_size, cfg, radius_px)
    tiles = plan_tiles(pair.overlap, cfg.tiles.size, halo)
    tasks = [
        dask.delayed(process_tile, pure=False)(pair, tile, affine, cfg, radius_px, scorer_spec,
                                               dask_key_name=f"tile-{tile.id}")
        for tile in tiles
    ]
    parts = _compute(tasks, scheduler, progress)
    parts = [p for p in parts if p is not None and not p.empty]
    timings["match"] = time.perf_counter() - t

    t = time.perf_counter()
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    df, model_info = _finish_points(df, pair, cfg, flag_outliers, add_shift_columns, scorer)
    gdf = to_geodataframe(df, pair.grid.crs)
    timings["filter"] = time.perf_counter() - t

    kept = int((gdf["outlier"] == 0).sum()) if len(gdf) else 0
    summary = {
        "points_found": int(len(gdf)),
        "points_kept": kept,
        "model": model_info,
        "coarse": {"method": initial.method, "score": float(initial.score), "affine": affine.tolist()},
        "tiles": len(tiles),
        "timings_s": timings,
        "message": "" if kept >= 3 else "no reliable tie points: the pair may not overlap in content, or the "
        "misregistration exceeds the search radius (raise match.search_radius / coarse.max_shift_px)",
    }
    run_info = {
        "run_id": uuid.uuid4().hex,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "geomatch_version": __version__,
        "pipeline_toml": config.to_toml(cfg),
        "inputs": pair.describe(),
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
        if cfg.write.plot if plot is None else plot:
            from geomatch.pipeline.plot import plot_shifts

            png = output.with_suffix(".png")
            # The coarse stage's overview: bounded memory on full scenes, and no second read.
            img, scale = ov[0], ov[4]
            plot_shifts(img, gdf, png, title=f"{Path(optical).name} vs {Path(sar).name}", decimate=1.0 / scale,
                        origin=(pair.overlap.col_off, pair.overlap.row_off), overwrite=overwrite)
            result.outputs["plot"] = str(png)
        timings["write"] = time.perf_counter() - t
    pair.close()
    return result


def _finish_points(df, pair, cfg, flag_outliers, add_shift_columns, scorer):
    if df.empty:
        from geomatch.pipeline.schema import empty_frame

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
    df, model_info = flag_outliers(df, cfg.filter)
    df["matcher"] = scorer.name
    df["weights"] = scorer.weights_tag
    return df, model_info


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("numpy", "torch", "rasterio", "geopandas", "pyogrio", "shapely", "dask", "scikit-image"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def summary_json(result: RunResult) -> str:
    return json.dumps({**result.summary, "outputs": result.outputs}, indent=2, default=str)
