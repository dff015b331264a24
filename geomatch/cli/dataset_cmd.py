"""``geomatch dataset``: build patch datasets in the published format from co-registered image pairs."""

from __future__ import annotations

import click

from geomatch.cli.options import emit_json, json_opt, overwrite_opt, progress_enabled


@click.group("dataset")
def dataset():
    """Build patch-pair datasets for `geomatch train` and `geomatch evaluate`."""


@dataset.command("build")
@click.option("--preset", type=click.Choice(["vis-nir", "optical-sar"]),
              help="vis-nir: --source is the VIS-NIR registration folder; country/ -> train + val (by image), "
                   "every other category -> a test subset <name>.npy; output usable as --dataset vis-nir. "
                   "optical-sar: --data-dir holds s1s2/, volkov-s1s2/, 3mos/, changedet/ (optical/SAR scene pairs; "
                   "gefolki/ is left out as the pipeline's test scene), each scene's residual shift measured and "
                   "taken out; split by place into train, val and test_optical-sar.")
@click.option("--source", type=click.Path(file_okay=False), help="Source folder of the preset.")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="optical-sar preset: the data folder holding s1s2/ and the other sources (e.g. ../shared/data).")
@click.option("--pair", "pairs", nargs=2, multiple=True, type=click.Path(dir_okay=False),
              metavar="OPTICAL SAR", help="An aligned pair (GeoTIFFs on one grid or same-size images); repeatable.")
@click.option("--pairs", "pair_list", type=click.Path(dir_okay=False),
              help="CSV of optical,sar[,affine[,split]] rows (affine: 2x3 .npy/.txt, optical pixel -> SAR pixel; "
                   "split: train, val or test:NAME).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--patch-size", type=int, default=64, show_default=True)
@click.option("--max-points", type=int, default=1000, show_default=True,
              help="Keypoints per source image (each gives one positive and one negative pair).")
@click.option("--cell-size", type=int, default=16, show_default=True, help="Detector grid cell (px).")
@click.option("--min-contrast", type=float, default=0.02, show_default=True)
@click.option("--detector", default="harris", show_default=True, help="Detector plugin.")
@click.option("--hard-fraction", type=float, default=0.5, show_default=True,
              help="Share of negatives that are hard (the SAR patch a few pixels off the true point).")
@click.option("--hard-offset", type=float, nargs=2, default=(2.0, 16.0), show_default=True, metavar="MIN MAX",
              help="Offset range of the hard negatives, in patch pixels (what the fine search has to reject).")
@click.option("--zoom", type=float, nargs=2, default=(1.0, 1.0), show_default=True, metavar="MIN MAX",
              help="Scale augmentation: cut each pair at a zoom log-uniform in [MIN, MAX] scene pixels per patch "
                   "pixel (e.g. 0.5 2 for weights that tolerate half to twice the scenes' GSD).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Share of the valid pixels of the (unassigned) source images that goes to validation, whole "
                   "images (optical-sar: whole places).")
@click.option("--test-fraction", type=float, default=0.15, show_default=True,
              help="optical-sar preset: share of the valid pixels, by place, held out as the test split.")
@click.option("--exclude", "exclude", multiple=True, default=("gefolki",), show_default=True,
              help="optical-sar preset: a source or the start of scene ids to leave out; repeatable (giving it "
                   "replaces the default, which keeps the pipeline's gefolki test scene out).")
@click.option("--include", "include", multiple=True,
              help="optical-sar preset: read only this source or scenes whose id starts so (e.g. volkov-s1s2/00); "
                   "repeatable; default: every source found.")
@click.option("--tile-align", type=int, default=0, show_default=True, metavar="PX",
              help="optical-sar preset: cut each scene's positives at its ~PX px tiles' own residual shifts (none "
                   "where a tile has no single shift); 0: the scene's one shift everywhere.")
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_opt
@json_opt
def build(preset, source, pairs, pair_list, out_dir, patch_size, max_points, cell_size, min_contrast, detector,
          hard_fraction, val_fraction, seed, overwrite, as_json, data_dir=None, hard_offset=(2.0, 16.0),
          zoom=(1.0, 1.0), test_fraction=0.15,
          exclude=("gefolki",), include=(), tile_align=0):
    """Cut 64x64 patch pairs (published format: uint8 (N, 2, P, P) + labels) from co-registered image pairs.

    \b
    Examples:
      geomatch dataset build --preset vis-nir --source ../shared/data/vis-nir --out data/vis-nir-patches
      geomatch dataset build --pair s2.tif s1.tif --pair s2b.tif s1b.tif --out data/my-patches
      geomatch dataset build --pairs pairs.csv --out data/my-patches --max-points 500
      geomatch dataset build --preset optical-sar --data-dir ../shared/data --out data/optical-sar-patches
      geomatch dataset build --preset optical-sar --data-dir ../shared/data --include volkov-s1s2/00 --out d/trial
    """
    from geomatch.errors import InputError
    from geomatch.training.build import BuildConfig, build_dataset
    from geomatch.training.presets import vis_nir_sources
    from geomatch.training.source_pairs import SourcePair, read_pair_list

    if preset == "optical-sar" or data_dir:
        manifest = _optical_sar(preset, source, pairs, pair_list, data_dir, out_dir, BuildConfig(
            patch_size=patch_size, cell_size=cell_size, min_contrast=min_contrast, detector=detector,
            hard_fraction=hard_fraction, hard_offset=tuple(hard_offset), zoom=tuple(zoom)), seed, max_points,
            val_fraction, test_fraction, overwrite, exclude,
            include, tile_align)
        return _report(manifest, out_dir, as_json)
    if include or tile_align:
        given = "--include" if include else "--tile-align"
        raise InputError(f"{given} goes with --preset optical-sar (it works on the scenes under --data-dir)")
    if preset and (pairs or pair_list):
        raise InputError("--preset takes its pairs from --source; drop --pair/--pairs")
    if preset and not source:
        raise InputError("--preset vis-nir needs --source DIR (the VIS-NIR registration folder)")
    if source and not preset:
        raise InputError("--source goes with --preset; for your own images use --pair or --pairs")
    if preset:
        sources = vis_nir_sources(source)
    else:
        sources = [SourcePair(o, s) for o, s in pairs] + (read_pair_list(pair_list) if pair_list else [])
    cfg = BuildConfig(patch_size=patch_size, max_points=max_points, cell_size=cell_size, min_contrast=min_contrast,
                      detector=detector, hard_fraction=hard_fraction, hard_offset=tuple(hard_offset),
                      zoom=tuple(zoom), val_fraction=val_fraction, seed=seed)
    manifest = build_dataset(sources, out_dir, cfg, layout=preset or "dir", overwrite=overwrite,
                             progress=progress_enabled())
    return _report(manifest, out_dir, as_json)


def _optical_sar(preset, source, pairs, pair_list, data_dir, out_dir, cfg, seed, max_points, val_fraction,
                 test_fraction, overwrite, exclude, include, tile_align=0) -> dict:
    from geomatch.errors import InputError
    from geomatch.training.presets import build_optical_sar_patches

    if preset != "optical-sar":
        raise InputError("--data-dir goes with --preset optical-sar; for your own images use --pair or --pairs")
    if source or pairs or pair_list:
        raise InputError("--preset optical-sar takes its scenes from --data-dir; drop --source/--pair/--pairs")
    if not data_dir:
        raise InputError("--preset optical-sar needs --data-dir DIR (the folder holding s1s2/, e.g. ../shared/data)")
    return build_optical_sar_patches(data_dir, out_dir, seed=seed, per_scene=max_points, val_fraction=val_fraction,
                                     test_fraction=test_fraction, sources=tuple(include) or None,
                                     exclude=tuple(exclude), config=cfg,
                                     overwrite=overwrite, progress=progress_enabled(), tile_align=tile_align)


def _report(manifest: dict, out_dir, as_json: bool) -> None:
    if as_json:
        emit_json(manifest)
        return
    for split, info in manifest["splits"].items():
        click.echo(f"{split:<14} {info['images_file']:<22} {info['pairs']:>8} pairs "
                   f"({info['positives']} positive, {info['hard_negatives']} hard and "
                   f"{info['random_negatives']} random negatives) from {info['sources']} images")
    preset = manifest.get("preset", {})
    for source, a in preset.get("alignment", {}).items():
        click.echo(f"{source:<14} alignment: {a['scenes']} scenes, {a['measured']} measured, {a['confirmed']} "
                   f"confirmed (folder's table or quadrants), {a['shifted']} shifted (median {a['median_shift_px']} "
                   f"px, max {a['max_shift_px']} px), {a['left_out']} left out")
    tiles = [i["tile_alignment"] for i in preset.get("scene_info", {}).values() if "tile_alignment" in i]
    if tiles:
        click.echo(f"tile alignment ({preset['tile_align_px']} px): {sum(t['tiles'] for t in tiles)} tiles of "
                   f"{len(tiles)} scenes, {sum(t['moved'] for t in tiles)} moved off their scene's shift, "
                   f"{sum(t['no_single_shift'] for t in tiles)} without a single shift (no pairs cut there)")
    click.echo(f"manifest: {out_dir}/manifest.json")
