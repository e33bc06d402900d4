"""synth.data.blocks: one volume cut into train/val/test blocks that never overlap and keep a gap in mm.

Distances are measured independently of the splitter: voxel masks of each split and scipy's Euclidean distance
transform with the voxel spacing."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from synth.data.blocks import cut_blocks
from synth.errors import SynthError


def _masks(blocks, shape):
    out = {s: np.zeros(shape, bool) for s in ("train", "val", "test")}
    for b in blocks:
        out[b.split][tuple(slice(a, c) for a, c in b.box)] = True
    return out


def _empty_mm(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Smallest distance (mm) between voxel centres of two masks, less one voxel: the unused space between them."""
    d = distance_transform_edt(~a, sampling=spacing)[b].min()
    return float(d) - min(spacing)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5)])
def test_3d_cubes_keep_the_gap_in_mm(spacing):
    shape = (60, 70, 40)
    region = ((0, 60), (0, 70), (0, 40))
    cube = [int(round(12 / s)) for s in spacing]  # 12 mm cubes
    blocks = cut_blocks(region, spacing, cube, cube, [max(1, c // 2) for c in cube], (0.8, 0.1, 0.1), seed=3, gap=5.0)
    m = _masks(blocks, shape)
    counts = {s: sum(b.split == s for b in blocks) for s in m}
    assert counts["val"] >= 1 and counts["test"] >= 1 and counts["train"] > 4 * (counts["val"] + counts["test"])
    for s in ("val", "test"):
        assert not (m[s] & m["train"]).any()
        assert _empty_mm(m["train"], m[s], spacing) >= 5.0 - 1e-6
    assert _empty_mm(m["val"], m["test"], spacing) >= 5.0 - 1e-6
    held = [b for b in blocks if b.split != "train"]
    assert all(b.box[a][1] - b.box[a][0] == cube[a] for b in held for a in range(3))
    trains = [b.box for b in blocks if b.split == "train"]
    assert len(set(trains)) == len(trains)  # windows may overlap each other but are distinct


def test_2d_slabs_interleave_along_z_and_follow_the_seed():
    """Thin held-out slabs over a long z range: spread over the whole extent, same for the same seed."""
    region = ((0, 10), (0, 10), (0, 400))
    spacing = (1.0, 1.0, 1.0)

    def cut(seed):
        return cut_blocks(region, spacing, (None, None, 4), (None, None, 1), (None, None, 1), (0.6, 0.2, 0.2), seed=seed, gap=4.0)

    a, b, c = cut(7), cut(7), cut(8)
    assert a == b and a != c
    held = sorted((blk.box[2][0], blk.split) for blk in a if blk.split != "train")
    z = np.array([h[0] for h in held])
    assert len(held) >= 10
    for third in range(3):  # every third of the z-range holds val and test slabs
        inside = [s for zz, s in held if third * 400 / 3 <= zz < (third + 1) * 400 / 3]
        assert {"val", "test"} <= set(inside)
    assert np.diff(z).min() >= 4 + 4  # slab + gap
    m = _masks(a, (10, 10, 400))
    for s in ("val", "test"):
        assert _empty_mm(m["train"], m[s], spacing) >= 4.0
    assert all(blk.box[:2] == ((0, 10), (0, 10)) for blk in a)  # 2D: whole x/y plane
    train_z = sorted(blk.box[2][0] for blk in a if blk.split == "train")
    assert len(train_z) == len(set(train_z)) and m["train"].any(axis=(0, 1)).sum() == len(train_z)  # one slice each, no repeats


def test_keep_filter_and_errors():
    region = ((0, 40), (0, 40), (0, 40))
    fg = np.zeros((40, 40, 40), bool)
    fg[:20] = True  # only the x < 20 half has "foreground"

    def keep(box):
        return fg[tuple(slice(a, b) for a, b in box)].mean() >= 0.5

    blocks = cut_blocks(region, (1, 1, 1), (8, 8, 8), (8, 8, 8), (4, 4, 4), (0.8, 0.1, 0.1), seed=0, gap=2.0, keep=keep)
    assert all(keep(b.box) for b in blocks) and {b.split for b in blocks} == {"train", "val", "test"}
    with pytest.raises(SynthError, match="too few for 1 val \\+ 1 test"):
        cut_blocks(((0, 20),) * 3, (1, 1, 1), (16, 16, 16), (16, 16, 16), (4, 4, 4), (0.8, 0.1, 0.1), seed=0, gap=4.0)
    only_train = cut_blocks(((0, 20),) * 3, (1, 1, 1), (16, 16, 16), (16, 16, 16), (4, 4, 4), (1.0, 0.0, 0.0), seed=0, gap=4.0)
    assert {b.split for b in only_train} == {"train"} and len(only_train) == 8
