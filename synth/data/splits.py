"""Who goes to train / val / test: by subject (files sharing a subject key go together), as a source assigned
it, or — for a data set of one volume — by blocks of that volume (synth.data.blocks: no overlap, a gap).

`split_subjects` shuffles subject keys with numpy Generator(seed) and cuts by fractions. `volume_blocks` turns
one processed volume into block subjects: 2D, held-out slabs of `slab_mm` among its slices and training slices
around them; 3D, cubes of image_size (held-out ones on a grid, training ones every `stride` x image_size)
with at least `min_foreground` foreground. `block_items` cuts a block's items out of the processed volume.
"""
from __future__ import annotations

import numpy as np

from synth.data.blocks import cut_blocks
from synth.data.readers import Subject
from synth.data.transforms import Processed, lesion
from synth.errors import SynthError

SPLITS = ("train", "val", "test")
BLOCKS = {"gap_mm": 8.0, "slab_mm": 8.0, "stride": 0.5, "min_foreground": 0.25}  # data.blocks defaults


def split_subjects(subjects: list[Subject], fractions, seed: int) -> dict[str, list[Subject]]:
    """Shuffle subject keys (Subject.group, else the id) with numpy Generator(seed) and cut by fractions; every
    split with a fraction > 0 gets >= 1 key; all files of a key land in one split."""
    keys = list(dict.fromkeys(s.group if s.group is not None else s.id for s in subjects))
    n = len(keys)
    need = sum(f > 0 for f in fractions)
    if n < need:
        grouped = any(s.group is not None for s in subjects)
        what = f"{n} subject(s) (the subject key groups {len(subjects)} files into {n})" if grouped else f"only {n} subject(s)"
        raise SynthError(f"{what} for a {need}-way split data.split={list(fractions)}: add subjects (>= {need}) or set data.split=[1.0, 0.0, 0.0]")
    order = np.random.default_rng(seed).permutation(n)
    counts = [int(round(f * n)) for f in fractions]
    for i in (1, 2):
        if fractions[i] > 0:
            counts[i] = max(1, counts[i])
    counts[0] = n - counts[1] - counts[2]
    while counts[0] < (1 if fractions[0] > 0 else 0):  # take back from the larger held-out split
        j = 1 if counts[1] >= counts[2] else 2
        counts[j] -= 1
        counts[0] += 1
    cuts = np.cumsum([0] + counts)
    where = {keys[k]: SPLITS[i] for i in range(3) for k in order[cuts[i]:cuts[i + 1]]}
    return {name: [s for s in subjects if where[s.group if s.group is not None else s.id] == name] for name in SPLITS}


def assigned_splits(subjects: list[Subject]) -> dict[str, list[Subject]] | None:
    """The split a source gave its subjects, or None when it gave none."""
    given = [s.split for s in subjects]
    if all(g is None for g in given):
        return None
    if any(g not in SPLITS for g in given):
        raise SynthError(f"a data source gave splits {sorted(set(map(str, given)))}: every subject needs one of {list(SPLITS)}")
    return {name: [s for s in subjects if s.split == name] for name in SPLITS}


def block_settings(blocks) -> dict:
    out = dict(BLOCKS)
    for key, value in dict(blocks or {}).items():
        if key not in BLOCKS:
            raise SynthError(f"data.blocks.{key} is not a setting: use {', '.join(BLOCKS)}")
        out[key] = float(value)
    if out["gap_mm"] < 0 or out["slab_mm"] <= 0 or not 0 < out["stride"] <= 1 or not 0 <= out["min_foreground"] <= 1:
        raise SynthError(f"data.blocks={out} needs gap_mm >= 0, slab_mm > 0, 0 < stride <= 1, 0 <= min_foreground <= 1")
    return out


def volume_blocks(parent: Subject, p: Processed, spatial_dims: int, image_size, fractions, seed: int, blocks: dict) -> list[Subject]:
    """Block subjects of one processed volume (see the module docstring), each with its split."""
    what = f"volume {parent.id}"
    affine = np.asarray(p.affine)
    if spatial_dims == 2:
        index = list(p.index)
        step = (index[1] - index[0]) if len(index) > 1 else 1
        z_mm = p.thickness * step
        cut = cut_blocks(((0, len(index)),), (z_mm,), (max(1, int(round(blocks["slab_mm"] / z_mm))),), (1,), (1,),
                         fractions, seed, blocks["gap_mm"], what=what)
        plane = p.items.shape[2:]
        out = []
        for b in cut:
            a, e = b.box[0]
            box = ((0, plane[0]), (0, plane[1]), (index[a], index[e - 1] + 1))
            out.append(Subject(f"{parent.id}_z{index[a]:03d}-{index[e - 1]:03d}", parent.label, parent.paths,
                               {"parent": parent.id, "items": (a, e), "box": box, "affine": affine.tolist()}, split=b.split))
        return out
    vol = p.items[0]
    fg = (vol > -0.8).any(axis=0)
    idx = np.argwhere(fg)
    if not len(idx):
        raise SynthError(f"{what} has no foreground to cut blocks from: check data.intensity")
    region = tuple((int(a), int(b) + 1) for a, b in zip(idx.min(0), idx.max(0)))
    size = [int(s) for s in image_size]
    if any(b - a < n for (a, b), n in zip(region, size)):
        raise SynthError(f"{what}: its foreground ({' x '.join(str(b - a) for a, b in region)} voxels at {p.spacing} mm) is smaller "
                         f"than one block of data.image_size={size}: lower data.image_size or data.spacing")
    stride = [max(1, int(round(n * blocks["stride"]))) for n in size]

    def enough(box) -> bool:
        return float(fg[tuple(slice(a, b) for a, b in box)].mean()) >= blocks["min_foreground"]

    cut = cut_blocks(region, p.spacing, size, size, stride, fractions, seed, blocks["gap_mm"], keep=enough, what=what)
    return [Subject(f"{parent.id}_x{b.box[0][0]:03d}_y{b.box[1][0]:03d}_z{b.box[2][0]:03d}", parent.label, parent.paths,
                    {"parent": parent.id, "box": b.box, "affine": affine.tolist()}, split=b.split) for b in cut]


def block_items(p: Processed, subject: Subject) -> Processed:
    """The items of one block subject, cut from its volume's processed items."""
    from dataclasses import replace

    if "items" in subject.extra:
        a, e = subject.extra["items"]
        labels = None if p.seg_labels is None else p.seg_labels[a:e]
        masks = None if p.masks is None else p.masks[a:e]
        return replace(p, items=p.items[a:e], seg_labels=labels, index=None, seg=None, notes=None, masks=masks)
    box = tuple(slice(a, b) for a, b in subject.extra["box"])
    labels = None if p.seg is None else np.array([int((p.seg[box] > 0).any())], dtype=np.int64)
    masks = None if p.seg is None else lesion(p.seg[box])[None, None]
    return replace(p, items=np.ascontiguousarray(p.items[0][(slice(None), *box)][None]), seg_labels=labels, index=None, seg=None,
                   notes=None, masks=masks)
