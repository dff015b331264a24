"""The one split rule: whole places (scenes) or whole images on one side, fractions of valid pixels."""

import numpy as np
import pytest

from geomatch.errors import InputError
from geomatch.training.scenes import ScenePair
from geomatch.training.source_pairs import SourcePair
from geomatch.training.splits import assign_free_images, assign_groups, place_groups, split_scenes


def _pair(sid, place, bounds, size=100):
    z = np.zeros((size, size), np.float32)
    return ScenePair(sid, "test", z, z, np.ones((size, size), bool), place, bounds)


def test_split_keeps_places_and_overlapping_footprints_together():
    pairs = [_pair(f"s{i}", f"p{i}", (i, 0, i + 0.9, 1)) for i in range(10)]
    pairs.append(_pair("s0-date2", "p0", (100, 0, 101, 1)))  # same place by name
    pairs.append(_pair("s3-overlap", "q", (3.5, 0.5, 3.7, 0.7)))  # same place by footprint
    pairs.append(_pair("s5-touch", "r", (5.9, 0, 6.0, 1)))  # touches s5/s6 edges only: its own place
    assert len(place_groups(pairs)) == 11
    seen = set()
    for seed in range(5):
        split = split_scenes(pairs, 0.2, 0.2, seed)
        side = {p.scene_id: s for s, ps in split.items() for p in ps}
        assert len(side) == len(pairs) and all(split.values())
        assert side["s0"] == side["s0-date2"] and side["s3"] == side["s3-overlap"]
        counts = {s: len(v) for s, v in split.items()}
        assert counts["train"] > counts["val"] and counts["train"] > counts["test"]
        seen.add(tuple(sorted(p.scene_id for p in split["test"])))
    assert len(seen) > 1  # the seed changes which places are held out


def test_split_bad_fractions_and_too_few_places():
    pairs = [_pair("a", "a", None), _pair("b", "b", None)]
    with pytest.raises(InputError, match="cannot fill"):
        split_scenes(pairs, 0.2, 0.2, 0)
    assert [len(v) for v in split_scenes(pairs, 0.5, 0.0, 0).values()] == [1, 1, 0]
    with pytest.raises(InputError, match="fraction"):
        split_scenes(pairs, 0.6, 0.5, 0)



def test_fractions_are_of_valid_pixels_not_of_counts():
    # One large group and two small ones: 10 % of the pixels is the two small groups, not one group in three.
    side = assign_groups([900, 50, 50], {"train": 0.9, "val": 0.1}, seed=0)
    assert side == ["train", "val", "val"]
    side = assign_groups([50, 900, 50, 10], {"train": 0.7, "val": 0.2, "test": 0.1}, seed=3)
    assert side[1] == "train" and set(side) == {"train", "val", "test"}


def test_an_asked_split_left_empty_takes_the_smallest_group():
    # Two equal groups at val 0.2: both would go to train; val takes one (the smaller when sizes differ).
    assert sorted(assign_groups([100, 100], {"train": 0.8, "val": 0.2}, seed=0)) == ["train", "val"]
    assert assign_groups([100, 90], {"train": 0.8, "val": 0.2}, seed=0) == ["train", "val"]


def _images(weights):
    return [SourcePair(f"o{i}.png", f"s{i}.png") for i in range(len(weights))]


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_images_and_scenes_split_by_the_same_rule(seed):
    """A build's free images (VIS-NIR, --pair) and the optical-sar scenes, same sizes: the same sides."""
    sizes = [60, 100, 80, 80, 120, 40, 100]
    scenes = [_pair(f"s{i}", f"p{i}", None, size=n) for i, n in enumerate(sizes)]
    by_scene = split_scenes(scenes, 0.3, 0.0, seed)
    images = _images(sizes)
    assign_free_images(images, [n * n for n in sizes], 0.3, seed)
    assert [s.split for s in images] == [
        next(k for k, v in by_scene.items() if any(p.scene_id == f"s{i}" for p in v)) for i in range(len(sizes))]


def test_free_images_one_image_trains_and_given_splits_stay():
    one = _images([10])
    assign_free_images(one, [100], 0.5, 0)
    assert one[0].split == "train"
    mixed = _images([10, 10, 10])
    mixed[0].split = "test:field"
    assign_free_images(mixed, [100, 100, 100], 0.5, 0)
    assert mixed[0].split == "test:field" and sorted(s.split for s in mixed[1:]) == ["train", "val"]
    no_val = _images([10, 10])
    assign_free_images(no_val, [100, 100], 0.0, 0)
    assert [s.split for s in no_val] == ["train", "train"]


def test_seed_changes_the_held_out_images():
    seen = set()
    for seed in range(6):
        images = _images([1] * 8)
        assign_free_images(images, [100] * 8, 0.25, seed)
        seen.add(tuple(i for i, s in enumerate(images) if s.split == "val"))
        assert sum(s.split == "val" for s in images) == 2
    assert len(seen) > 1
