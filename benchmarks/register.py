"""`geomatch register` against known geometry: residual misregistration of the WRITTEN raster, per pixel.

    nice python benchmarks/register.py --out benchmarks/register.json      # all three parts
    python benchmarks/register.py --only gefolki --tiepoints tp.gpkg      # reuse tie points

How the residual is measured: a "coordinate raster" on the SAR's grid holds, in two float64 bands, each
pixel's own centre (col + 0.5, row + 0.5). Registering it with the SAR's tie points through the very code
path of `geomatch register` (bilinear, which is exact on a linear ramp) gives, at every optical pixel, the SAR
position the output sampled there; the same raster behind the GCP VRT, through `gdalwarp -order N -r
bilinear` onto the optical grid, gives gdalwarp's. Against the known correspondence the difference is the
residual misregistration in pixels, at every valid output pixel.

- GeFolki (S2 / S1 warped by the reference field): truth at every pixel (benchmarks/gefolki_fixture.py);
  "none" is the warped SAR taken as it is; "affine floor" is the least-squares affine of the truth itself.
- VIS-NIR field/forest (the first --limit pairs each): truth is the pair's affine (benchmarks/visnir_pairs.py).
- lngley (UAVSAR / optical, EPSG:4326): no truth; the model's fit and leave-one-out residuals are reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gefolki_fixture import build_gefolki, gefolki_errors  # noqa: E402
from visnir_pairs import default_data, load_pair, pair_keys  # noqa: E402

from geomatch import config  # noqa: E402
from geomatch.pipeline.register import kept_points, read_tiepoints, register  # noqa: E402
from geomatch.pipeline.warp import grid_of  # noqa: E402

ORDERS = ("1", "2", "3", "tps", "auto")


def coordinate_raster(sar: Path, dest: Path) -> Path:
    """Two float64 bands holding each SAR pixel's centre (col, row); same grid and nodata mask as ``sar``."""
    with rasterio.open(sar) as src:
        # Only the grid: a JPEG's profile (YCbCr photometric...) does not fit a 2-band float GeoTIFF.
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 2, "dtype": "float64",
                   "nodata": np.nan, "crs": src.crs, "transform": src.transform}
        valid = src.dataset_mask() > 0
        h, w = src.height, src.width
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    with rasterio.open(dest, "w", **profile) as dst:
        dst.write(np.stack([np.where(valid, cc, np.nan), np.where(valid, rr, np.nan)]))
    return dest


def read_positions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as src:
        return src.read(1), src.read(2)


def gdalwarp_positions(tiepoints, coord: Path, optical: Path, order: str, work: Path):
    """What `gdalwarp -order N` (or -tps) on the GCP VRT samples at each optical pixel."""
    from geomatch_plugins.writers.vrt import gcp_vrt_xml

    df = read_tiepoints(tiepoints)
    vrt = work / f"coord_{order}.vrt"
    crs = grid_of(optical)["crs"]
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["ref_x"], df["ref_y"]), crs=crs)
    vrt.write_text(gcp_vrt_xml(gdf, str(coord.resolve())))
    with rasterio.open(optical) as src:
        b = src.bounds
        res = src.res
        srs = src.crs.to_wkt() if src.crs else None
    out = work / f"gdalwarp_{order}.tif"
    cmd = ["gdalwarp", "-q", "-overwrite", "-r", "bilinear", "-te", *map(str, (b.left, b.bottom, b.right, b.top)),
           "-tr", str(res[0]), str(res[1]), "-dstnodata", "nan"]
    cmd += ["-tps"] if order == "tps" else ["-order", order]
    if srs:
        cmd += ["-t_srs", srs]
    subprocess.run(cmd + [str(vrt), str(out)], check=True, capture_output=True)
    return read_positions(out)


def stats(err: np.ndarray) -> dict:
    err = err[np.isfinite(err)]
    return {"median_px": round(float(np.median(err)), 3), "p90_px": round(float(np.percentile(err, 90)), 3),
            "rmse_px": round(float(np.sqrt(np.mean(err**2))), 3), "pixels": int(err.size)}


def _register_coords(optical, coord, tiepoints, order, work):
    res = register(optical, coord, work / f"coord_{order}.tif", tiepoints=tiepoints, order=order,
                   shift_field=False, plot=False, overwrite=True)
    return read_positions(work / f"coord_{order}.tif"), res.summary


def gefolki(data: Path, work: Path, tiepoints: Path | None) -> dict:
    fix = build_gefolki(data, work)
    t = time.perf_counter()
    if tiepoints is None:  # one pipeline run, through register itself (default pipeline, shipped weights)
        register(fix.optical, fix.sar, work / "S1_on_S2.tif", overwrite=True)
        tiepoints = work / "S1_on_S2_tiepoints.gpkg"
    else:
        register(fix.optical, fix.sar, work / "S1_on_S2.tif", tiepoints=tiepoints, overwrite=True)
    seconds = time.perf_counter() - t
    grid, out = grid_of(fix.optical), grid_of(work / "S1_on_S2.tif")
    same_grid = (grid["crs"] == out["crs"] and tuple(grid["transform"]) == tuple(out["transform"])
                 and (grid["width"], grid["height"]) == (out["width"], out["height"]))
    coord = coordinate_raster(fix.sar, work / "coord.tif")
    h, w = grid["height"], grid["width"]
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5

    def residual(pc, pr):
        err = gefolki_errors(fix, cc.ravel(), rr.ravel(), pc.ravel(), pr.ravel()).reshape(h, w)
        return np.where(np.isfinite(pc) & np.isfinite(pr), err, np.nan)

    rows = {"none": stats(residual(cc, rr))}
    truth = _truth_gefolki(fix, cc, rr)
    a = np.column_stack([cc.ravel(), rr.ravel(), np.ones(cc.size)])
    coef, *_ = np.linalg.lstsq(a, np.column_stack([truth[0].ravel(), truth[1].ravel()]), rcond=None)
    floor = a @ coef
    rows["affine floor (fit to the truth)"] = stats(residual(floor[:, 0].reshape(h, w), floor[:, 1].reshape(h, w)))
    models = {}
    for order in ORDERS:
        (pc, pr), summary = _register_coords(fix.optical, coord, tiepoints, order, work)
        rows[f"register --order {order}"] = stats(residual(pc, pr))
        models[order] = summary["model"]
        if order != "auto" and shutil.which("gdalwarp"):
            gc, gr = gdalwarp_positions(tiepoints, coord, fix.optical, order, work)
            rows[f"gdalwarp {'-tps' if order == 'tps' else '-order ' + order} on the VRT"] = stats(residual(gc, gr))
            both = np.isfinite(gc) & np.isfinite(pc)
            rows[f"register vs gdalwarp, order {order} (max px)"] = round(float(np.max(
                np.hypot(gc - pc, gr - pr)[both])), 4)
    ref, tgt = kept_points(read_tiepoints(tiepoints))
    point_err = gefolki_errors(fix, ref[:, 0], ref[:, 1], tgt[:, 0], tgt[:, 1])
    return {"kept_points": len(ref), "points_median_px": round(float(np.median(point_err)), 3),
            "same_grid_as_optical": same_grid, "register_seconds": round(seconds, 1), "residual": rows,
            "models": models}


def _truth_gefolki(fix, cc, rr):
    from gefolki_fixture import _bilinear, _fixed_point_target

    qx, qy = _fixed_point_target(cc.ravel(), rr.ravel(), lambda x, y: (_bilinear(fix.flow[..., 0], x, y),
                                                                       _bilinear(fix.flow[..., 1], x, y)))
    return qx.reshape(cc.shape), qy.reshape(cc.shape)


def visnir(data: Path, work: Path, limit: int, categories=("field", "forest")) -> list[dict]:
    rows = []
    cfg = config.load("visnir")
    for cat, folder, key in pair_keys(data, categories, limit):
        vis_path, nir_path = folder / f"{key}_rgb.jpg", folder / f"{key}_nir.jpg"
        *_, truth = load_pair(folder, key)
        out = work / f"{cat}_{key}.tif"
        row = {"pair": f"{cat}/{key}"}
        try:
            register(vis_path, nir_path, out, cfg=cfg, overwrite=True, shift_field=False, plot=False)
        except Exception as exc:  # noqa: BLE001 - a refused pair is a result, reported as such
            rows.append({**row, "refused": str(exc)})
            print(row["pair"], "refused:", exc, flush=True)
            continue
        coord = coordinate_raster(nir_path, work / "coord_nir.tif")
        tiepoints = out.with_name(out.stem + "_tiepoints.gpkg")
        for order in ("1", "auto"):  # the default, and the model auto chooses
            (pc, pr), summary = _register_coords(vis_path, coord, tiepoints, order, work)
            h, w = pc.shape
            rr, cc = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
            tc = truth[0, 0] * cc + truth[0, 1] * rr + truth[0, 2]
            tr = truth[1, 0] * cc + truth[1, 1] * rr + truth[1, 2]
            row[f"order_{order}"] = {"model": summary["model"]["order"], "residual": stats(np.hypot(pc - tc, pr - tr)),
                                     "check_median_px": round(summary["model"]["check"]["median_px"], 3)}
        ref, tgt = kept_points(read_tiepoints(tiepoints))
        point_err = np.hypot(*(ref @ truth[:, :2].T + truth[:, 2] - tgt).T)
        row.update(kept=int(len(ref)), points_median_px=round(float(np.median(point_err)), 3),
                   none=stats(np.where(np.isfinite(pc), np.hypot(cc - tc, rr - tr), np.nan)))
        rows.append(row)
        print(row, flush=True)
    return rows


def lngley(data: Path, work: Path) -> dict:
    folder = data / "gefolki"
    optical = next(folder.glob("lngley_*_optique.tif"))
    sar = next(folder.glob("lngley_*_radar.tif"))
    t = time.perf_counter()
    res = register(optical, sar, work / "lngley_on_optical.tif", overwrite=True)
    grid, out = grid_of(optical), grid_of(work / "lngley_on_optical.tif")
    import pyogrio

    tp = pyogrio.read_dataframe(res.outputs["tiepoints"], layer="tiepoints")
    kept = tp[~tp["outlier"].astype(bool)]
    return {"crs": str(grid["crs"]), "same_grid_as_optical": tuple(grid["transform"]) == tuple(out["transform"]),
            "seconds": round(time.perf_counter() - t, 1), "model": res.summary["model"],
            "candidates": res.summary["candidates"], "valid_fraction": round(res.summary["valid_fraction"], 3),
            "kept_shift_abs_m_median": float(kept["shift_abs_m"].median()) if "shift_abs_m" in kept else None}


def markdown(result: dict) -> str:
    lines = ["# `geomatch register`: residual misregistration of the written raster", "",
             "Command: `" + result["command"] + "`", ""]
    if "gefolki" in result:
        g = result["gefolki"]
        lines += [f"## GeFolki S2 / warped S1 ({g['kept_points']} kept tie points, their median error "
                  f"{g['points_median_px']:.2f} px; output on the optical grid: {g['same_grid_as_optical']})", "",
                  "| correction | median px | p90 px | RMSE px |", "|---|---|---|---|"]
        for name, s in g["residual"].items():
            if isinstance(s, dict):
                lines.append(f"| {name} | {s['median_px']:.2f} | {s['p90_px']:.2f} | {s['rmse_px']:.2f} |")
        lines += ["", "register and gdalwarp on the same points, largest difference of the sampled position:", ""]
        lines += [f"- {k}: {v} px" for k, v in g["residual"].items() if not isinstance(v, dict)]
        lines += ["", "Model checks at the tie points (median; leave-one-out / block cross-validation): " + ", ".join(
            f"{k} {m['check']['median_px']:.2f} / {m['blocks']['median_px']:.2f} px" for k, m in g["models"].items())
            + f"; auto chose {g['models']['auto']['order']}.", ""]
    if "visnir" in result:
        lines += ["## VIS-NIR pairs (known affine; dense residual of the written raster against it)", "",
                  "| pair | kept | kept points' median error px | --order 1 median px | auto: model, median px | "
                  "uncorrected median px |", "|---|---|---|---|---|---|"]
        for r in result["visnir"]:
            if "refused" in r:
                lines.append(f"| {r['pair']} | refused: {r['refused']} | | | | |")
            else:
                o1, auto = r["order_1"], r["order_auto"]
                lines.append(f"| {r['pair']} | {r['kept']} | {r['points_median_px']:.2f} | "
                             f"{o1['residual']['median_px']:.2f} | {auto['model']}, "
                             f"{auto['residual']['median_px']:.2f} | {r['none']['median_px']:.1f} |")
        lines.append("")
    if "lngley" in result:
        g = result["lngley"]
        m = g["model"]
        lines += [f"## lngley UAVSAR / optical ({g['crs']})", "",
                  f"Model {m['order']} on {m['points']} kept points: fit median {m['fit']['median_px']:.2f} px, "
                  f"leave-one-out median {m['check']['median_px']:.2f} px; on the optical grid: "
                  f"{g['same_grid_as_optical']}; valid output fraction {g['valid_fraction']}; median kept shift "
                  f"{g['kept_shift_abs_m_median']:.1f} m (the `shift_abs_m` column; `shift_abs` is in degrees).", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--only", choices=["gefolki", "visnir", "lngley"], action="append")
    ap.add_argument("--tiepoints", type=Path, help="GeFolki tie points to reuse instead of a pipeline run")
    ap.add_argument("--limit", type=int, default=3, help="VIS-NIR pairs per category")
    ap.add_argument("--out", type=Path, help="JSON here, and the Markdown table beside it (.md)")
    a = ap.parse_args(argv)
    parts = a.only or ["gefolki", "visnir", "lngley"]
    result = {"command": "python benchmarks/register.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent).stdout.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "gefolki" in parts:
            result["gefolki"] = gefolki(a.data, work, a.tiepoints)
            print(json.dumps(result["gefolki"]["residual"], indent=1), flush=True)
        if "visnir" in parts:
            result["visnir"] = visnir(a.data, work, a.limit)
        if "lngley" in parts:
            result["lngley"] = lngley(a.data, work)
    print(markdown(result))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        a.out.with_suffix(".md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
