"""The one train / val / test split rule of every patch-set build: whole groups of images, never single pairs.

A group is what must not feed two sides: for the optical/SAR scenes, the scenes of one place (the same place
name, or footprints that overlap, transitively: :func:`place_groups`); for image pairs given to
``geomatch dataset build`` directly (``--pair``, ``--pairs``, the VIS-NIR preset), each source image.

Fractions are of valid pixels (what patches are cut from), not of group counts, because scenes differ in size
by 20x. Groups go largest first, in a seeded order among equal sizes, each to the split furthest below its
target; a split asked for (fraction > 0) that ends empty takes the smallest group of the fullest split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geomatch.errors import InputError

SPLITS = ("train", "val", "test")


def assign_groups(weights: Sequence[float], fractions: dict[str, float], seed: int) -> list[str]:
    """The split name of each group, given its weight (valid pixels) and the wanted ``fractions`` per split.

    Raises InputError when there are fewer groups than splits asked for: filling them would put one group on
    two sides.
    """
    wanted = [s for s, f in fractions.items() if f > 0]
    if len(weights) < len(wanted):
        raise InputError(
            f"{len(weights)} place(s) cannot fill the {len(wanted)} splits {', '.join(wanted)} without putting one "
            "place on two sides; add scenes or set the val/test fraction to 0"
        )
    total = float(sum(weights)) or 1.0
    order = np.random.default_rng(seed).permutation(len(weights))
    order = sorted(order, key=lambda i: -weights[i])  # stable: the seeded order breaks ties
    assigned: dict[str, list[int]] = {s: [] for s in fractions}
    filled = dict.fromkeys(fractions, 0.0)
    for i in order:
        split = max(wanted, key=lambda s: fractions[s] * total - filled[s])
        assigned[split].append(i)
        filled[split] += weights[i]
    for s in wanted:
        if not assigned[s]:
            donor = max(wanted, key=lambda d: len(assigned[d]))
            smallest = min(assigned[donor], key=lambda i: weights[i])
            assigned[donor].remove(smallest)
            assigned[s].append(smallest)
    side = [""] * len(weights)
    for s, members in assigned.items():
        for i in members:
            side[i] = s
    return side


def _overlaps(a, b) -> bool:
    """Footprints share area (touching edges do not count: BigEarthNet patches tile the ground)."""
    if a is None or b is None:
        return False
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def place_groups(pairs: list) -> list[list]:
    """Scenes (:class:`~geomatch.training.scenes.ScenePair`) that must stay together: the same ``place``, or
    footprints (``bounds``) that overlap, transitively."""
    parent = list(range(len(pairs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of_place: dict[str, int] = {}
    for i, p in enumerate(pairs):
        j = first_of_place.setdefault(p.place, i)
        parent[root(i)] = root(j)
        for k in range(i):
            if _overlaps(p.bounds, pairs[k].bounds):
                parent[root(i)] = root(k)
    groups: dict[int, list] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(root(i), []).append(p)
    return list(groups.values())


def split_scenes(pairs: list, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 seed: int = 0) -> dict[str, list]:
    """Assign whole places (:func:`place_groups`) of scenes to train / val / test by :func:`assign_groups`.

    Each split lists its scenes place by place, places in the order of their first scene id.
    """
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    if min(fractions.values()) < 0 or fractions["train"] <= 0:
        raise InputError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction}: each must be >= 0 "
                         "and together below 1")
    groups = place_groups(list(pairs))
    side = assign_groups([sum(int(p.valid.sum()) for p in g) for g in groups], fractions, seed)
    order = sorted(range(len(groups)), key=lambda i: groups[i][0].scene_id)
    return {s: [p for i in order if side[i] == s for p in groups[i]] for s in SPLITS}


def free_fractions(n_free: int, val_fraction: float) -> dict[str, float]:
    """The fractions for the images a build was given without a split: validation is asked for only when
    there are two or more, so a single image still builds (as train)."""
    if not n_free:
        return {}
    val = val_fraction if n_free >= 2 else 0.0
    return {"train": 1.0 - val, "val": val}


def assign_free_images(sources: list, weights: Sequence[float], val_fraction: float, seed: int) -> None:
    """Give each source image without a ``split`` train or val (each image its own group), in place."""
    free = [i for i, s in enumerate(sources) if s.split is None]
    fractions = free_fractions(len(free), val_fraction)
    if not free:
        return
    for i, side in zip(free, assign_groups([weights[i] for i in free], fractions, seed), strict=True):
        sources[i].split = side
