"""``geomatch register``: tie points -> fitted model -> the SAR resampled onto the optical grid.

Tie points come from a file a run wrote (GeoPackage layer ``tiepoints`` or CSV; only ``outlier == 0`` rows
are used) or from running the pipeline first, in which case they are kept beside the output so the same
registration can be repeated or audited. Every output path is checked before any work starts.

Outputs, for ``-o NAME.tif``: ``NAME.tif`` (the registered SAR, a COG on the optical grid),
``NAME_shifts.tif`` (the model's shift field on a coarse grid), ``NAME_register.png`` (before/after) and,
when the pipeline ran, ``NAME_tiepoints.gpkg``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geomatch.errors import InputError
from geomatch.fileio import check_writable
from geomatch.pipeline import gcpmodel
from geomatch.pipeline.affinetools import apply
from geomatch.pipeline.warp import COMPRESSION, RESAMPLING, grid_of, warp_onto_grid, write_shift_field

log = logging.getLogger(__name__)

NEEDED = ("ref_col", "ref_row", "ref_x", "ref_y", "tgt_col", "tgt_row", "outlier")
GRID_TOLERANCE_PX = 0.01  # ref_x/ref_y against the optical transform at ref_col/ref_row


@dataclass
class RegisterResult:
    summary: dict
    outputs: dict = field(default_factory=dict)


def output_paths(output, shift_field: bool = True, plot: bool = True, tiepoints: bool = False) -> dict:
    out = Path(output)
    paths = {"registered": out}
    if shift_field:
        paths["shift_field"] = out.with_name(out.stem + "_shifts.tif")
    if plot:
        paths["plot"] = out.with_name(out.stem + "_register.png")
    if tiepoints:
        paths["tiepoints"] = out.with_name(out.stem + "_tiepoints.gpkg")
    return paths


def read_tiepoints(path) -> pd.DataFrame:
    """The tie-point table of a GeoPackage (layer ``tiepoints``) or CSV written by ``geomatch run``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--tiepoints {path}: file not found; give a .gpkg or .csv written by geomatch run")
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path)
        else:
            import pyogrio

            layers = [name for name, _ in pyogrio.list_layers(path)]
            df = pyogrio.read_dataframe(path, layer="tiepoints" if "tiepoints" in layers else layers[0],
                                        read_geometry=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same user error
        raise InputError(f"--tiepoints {path}: cannot be read as a tie-point table ({exc})") from exc
    missing = [c for c in NEEDED if c not in df.columns]
    if missing:
        raise InputError(f"--tiepoints {path}: lacks column(s) {', '.join(missing)}; give a table written by "
                         "geomatch run (.gpkg or .csv)")
    return df


def check_grid(df: pd.DataFrame, grid: dict, path) -> None:
    """Refuse tie points whose reference positions were measured on another optical grid."""
    if df.empty:
        return
    x, y = apply(grid["transform"], df["ref_col"].to_numpy(float), df["ref_row"].to_numpy(float))
    res = abs(grid["transform"].a) or 1.0
    worst = float(np.max(np.hypot(x - df["ref_x"].to_numpy(float), y - df["ref_y"].to_numpy(float)))) / res
    if worst > GRID_TOLERANCE_PX:
        raise InputError(f"--tiepoints {path}: the points' ref_x/ref_y disagree with the optical raster's grid by "
                         f"up to {worst:.2f} px; they were made on another optical raster: rerun geomatch run on "
                         "this pair or pass the matching --optical")


def kept_points(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    kept = df[df["outlier"].astype(int).to_numpy() == 0]
    ref = kept[["ref_col", "ref_row"]].to_numpy(float)
    tgt = kept[["tgt_col", "tgt_row"]].to_numpy(float)
    ok = np.isfinite(ref).all(axis=1) & np.isfinite(tgt).all(axis=1)
    return ref[ok], tgt[ok]


def fit_model(ref: np.ndarray, tgt: np.ndarray, order: str):
    """``order`` 1, 2, 3, tps or auto (lowest block cross-validation median); returns (model, candidates).

    ``candidates`` maps each order fitted to its block cross-validation statistics."""
    if order == "auto":
        return gcpmodel.fit_auto(ref, tgt)
    model = gcpmodel.fit(ref, tgt, order)
    return model, {order: model.info["blocks"]}


def register(optical, sar, output, *, tiepoints=None, order: str = "1", resampling: str = "bilinear",
             dst_nodata=None, compress: str = "deflate", field_step: int = 32, shift_field: bool = True,
             plot: bool = True, cfg=None, overwrite: bool = False, progress: bool = False) -> RegisterResult:
    """Register ``sar`` onto ``optical``'s grid; see the module docstring for the outputs."""
    timings: dict[str, float] = {}
    # Every choice and every output checked before a pipeline run that may take minutes.
    if order != "auto" and order not in gcpmodel.ORDERS:
        raise InputError(f"--order {order}: choose one of auto, {', '.join(gcpmodel.ORDERS)}")
    if resampling not in RESAMPLING:
        raise InputError(f"--resampling {resampling}: choose one of {', '.join(RESAMPLING)}")
    if compress not in COMPRESSION:
        raise InputError(f"--compress {compress}: choose one of {', '.join(COMPRESSION)}")
    paths = output_paths(output, shift_field, plot, tiepoints is None)
    inputs = [Path(p).resolve() for p in (optical, sar, tiepoints) if p is not None]
    for p in paths.values():
        if p.resolve() in inputs:
            raise InputError(f"output {p} is one of the inputs; choose another -o name")
        check_writable(p, overwrite)
    grid = grid_of(optical)

    t = time.perf_counter()
    source = {"tiepoints": str(tiepoints)} if tiepoints is not None else {}
    if tiepoints is None:
        from geomatch import config
        from geomatch.pipeline.run import run_pipeline

        res = run_pipeline(optical, sar, cfg or config.load("default"), paths["tiepoints"], overwrite=overwrite,
                           progress=progress, plot=False, fmt="gpkg")
        df = pd.DataFrame(res.gdf.drop(columns="geometry"))
        source = {"tiepoints": str(paths["tiepoints"]), "pipeline_points_kept": res.summary.get("points_kept")}
    else:
        df = read_tiepoints(tiepoints)
    check_grid(df, grid, tiepoints or paths.get("tiepoints"))
    timings["tiepoints"] = time.perf_counter() - t

    t = time.perf_counter()
    ref, tgt = kept_points(df)
    model, candidates = fit_model(ref, tgt, order)
    timings["fit"] = time.perf_counter() - t
    info = {k: v for k, v in model.info.items() if not k.endswith("_px")}
    log.info("model %s on %d kept points: fit median %.2f px, check (leave-one-out) median %.2f px, RMSE %.2f px",
             model.order, len(ref), info["fit"]["median_px"], info["check"]["median_px"], info["check"]["rmse_px"])

    t = time.perf_counter()
    tags = {"geomatch_model": model.order, "geomatch_points": len(ref),
            "geomatch_check_median_px": f"{info['check']['median_px']:.4f}", "geomatch_optical": Path(optical).name,
            "geomatch_sar": Path(sar).name}
    warp = warp_onto_grid(sar, grid, model, paths["registered"], resampling=resampling, dst_nodata=dst_nodata,
                          compress=compress, overwrite=overwrite, tags=tags)
    timings["warp"] = time.perf_counter() - t
    outputs = {k: str(v) for k, v in paths.items()}
    if shift_field:
        t = time.perf_counter()
        write_shift_field(sar, grid, model, paths["shift_field"], field_step, overwrite, compress)
        timings["shift_field"] = time.perf_counter() - t
    if plot:
        t = time.perf_counter()
        _plot(optical, sar, paths["registered"], paths["plot"], model, ref, overwrite)
        timings["plot"] = time.perf_counter() - t
    summary = {"model": info, "candidates": candidates, "source": source, "resampling": resampling,
               "nodata": warp["nodata"], "valid_fraction": warp["valid_fraction"],
               "grid": {"crs": str(grid["crs"]) if grid["crs"] else None, "transform": list(grid["transform"])[:6],
                        "width": grid["width"], "height": grid["height"]},
               "timings_s": timings}
    return RegisterResult(summary, outputs)


def _plot(optical, sar, registered, dest, model, ref, overwrite: bool) -> None:
    from geomatch.pipeline.plot import plot_before_after
    from geomatch.pipeline.raster import RasterPair

    panels = []
    for label, other in (("before: SAR by its georeferencing", sar), ("after: registered", registered)):
        with RasterPair(optical, other) as pair:
            view = pair.read_overview(max_size=800)
            ov = pair.overlap
            x0, y0 = pair.to_map(ov.col_off, ov.row_off)
            x1, y1 = pair.to_map(ov.col_off + ov.width, ov.row_off + ov.height)
            panels.append((label, np.where(view.optical_valid, view.optical, np.nan),
                           np.where(view.sar_valid, view.sar, np.nan),
                           (float(x0), float(x1), float(y1), float(y0))))
    plot_before_after(panels, dest, overwrite=overwrite,
                      title=f"{Path(sar).name} onto {Path(optical).name}: model {model.order}, {len(ref)} points, "
                            f"check median {model.info['check']['median_px']:.2f} px")
