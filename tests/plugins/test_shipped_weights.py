"""Shipped weights: checksum and metadata, and real patch pairs that match score above ones that do not."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import color, io

from geomatch.fileio import sha256_file
from geomatch.models.checkpoint import load_checkpoint
from geomatch.models.factory import build_matcher
from geomatch.models.runtime import build_scorer
from geomatch.models.weights import resolve_weights, shipped_weights
from geomatch.pipeline.keypoints import Keypoints
from geomatch.pipeline.patches import sample_patches
from geomatch_plugins.detectors.corners import Harris

EXPECTED_TAGS = {"vis-nir", "optical-sar"}
OFFSET = 16  # px: a non-matching SAR/NIR patch is the same place shifted by this much (a hard negative)


def test_index_lists_the_default_weight_sets():
    index = shipped_weights()
    assert EXPECTED_TAGS <= set(index), sorted(index)
    for tag in EXPECTED_TAGS:
        assert index[tag]["matcher"] == "rrlnet"


@pytest.mark.parametrize("tag", sorted(EXPECTED_TAGS))
def test_checkpoint_checksum_metadata_and_card(tag):
    resolved = resolve_weights("rrlnet", tag)
    entry = shipped_weights()[tag]
    assert sha256_file(resolved.path) == entry["sha256"]
    _, meta = load_checkpoint(resolved.path, expected_sha256=entry["sha256"])
    assert meta["architecture"] == "rrlnet" and meta["pruned"] is True
    assert meta["width"] == entry["width"] and meta["patch_size"] == 64
    assert meta["training"].get("dataset"), meta["training"]
    assert (resolved.path.parent / entry["card"]).read_text().startswith("# ")
    model = build_matcher("rrlnet", weights=resolved.path, expected_sha256=entry["sha256"])
    assert model.pruned and not model.training


def _pairs(optical, other, n=48, cell_size=48, seed=0):
    """Positives at Harris points of an aligned pair; negatives the same points shifted by OFFSET."""
    valid = np.ones_like(optical, bool)
    kps = Harris().detect(optical, valid, max_points=n, cell_size=cell_size, min_contrast=0.03, border=32 + OFFSET)
    assert len(kps) >= 12
    pos = sample_patches(other, kps.xy)
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, len(kps))
    shifted = Keypoints(kps.x + OFFSET * np.cos(angle), kps.y + OFFSET * np.sin(angle), kps.response)
    return sample_patches(optical, kps.xy), pos, sample_patches(other, shifted.xy)


def _margin(tag, optical, other, cell_size=48):
    scorer = build_scorer("rrlnet", tag, "cpu")
    a, pos, neg = _pairs(optical, other, cell_size=cell_size)
    return float(np.mean(scorer(a, pos)) - np.mean(scorer(a, neg)))


def _stretch(img):
    lo, hi = np.percentile(img, (1, 99))
    return np.clip((img - lo) / (hi - lo + 1e-9), 0, 1).astype(np.float32)


@pytest.mark.realdata
def test_vis_nir_weights_separate_real_country_pairs(data_dir):
    # country/0050 is in the validation split of the vis-nir build (image-level split): never trained on.
    rgb = color.rgb2gray(io.imread(data_dir / "vis-nir" / "country" / "0050_rgb.jpg"))
    nir = io.imread(data_dir / "vis-nir" / "country" / "0050_nir.jpg").astype(np.float32)
    nir = nir if nir.ndim == 2 else nir[..., 0]
    assert _margin("vis-nir", _stretch(rgb), _stretch(nir)) > 0.2


@pytest.mark.realdata
def test_optical_sar_weights_separate_real_test_scenes(data_dir):
    from geomatch.training.scene_files import find_scenes
    from geomatch.training.scenes import load_scene

    test_scenes = shipped_weights()["optical-sar"]["test_scenes"]
    wanted = [t for t in test_scenes if t.startswith("volkov-s1s2/")][:2]
    files = [f for f in find_scenes(data_dir, sources=tuple(wanted)) if f.scene_id in wanted]
    if len(files) < len(wanted) or not wanted:
        pytest.skip(f"the weights' volkov-s1s2 test scenes {wanted} are not all under {data_dir}")
    margins = []
    for scene in (load_scene(f) for f in files):  # residual shift taken out, as the patch set's build did
        c = (np.asarray(scene.optical.shape) - 384) // 2  # a 384 px centre crop keeps it quick
        crop = (slice(c[0], c[0] + 384), slice(c[1], c[1] + 384))
        margins.append(_margin("optical-sar", scene.optical[crop], scene.sar[crop], cell_size=32))
    # Calibrated scores (a match probability): held-out positives score well above their hard negatives.
    assert np.mean(margins) > 0.1, margins
