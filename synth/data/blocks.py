"""Leak-free splits of ONE volume: cut its region of interest into blocks and give each block a split.

When a data set is a single volume (the MNI152 template, a CT atlas, a user's one scan), "split by subject"
means split by block. Neighbouring voxels are nearly identical, so a held-out block that touches (or lies
inside) a training block is not held out at all. `cut_blocks` therefore:

- lays held-out candidate *cells* on a grid with pitch = cell + gap, so any two cells are >= gap apart;
  the cells, ordered z-major (last axis slowest), are cut into as many equal strata as there are held-out
  blocks and one cell is drawn (seeded) from each; val and test take alternate strata (anatomical balance:
  held-out blocks spread over the whole z-extent, not bunched at one end);
- cuts *training* blocks as windows (size, stride) over the whole region and keeps only those at >= gap from
  every held-out cell (training windows may overlap each other; a held-out block never touches one).

Distances are the empty space between two boxes, in mm: per axis the number of voxels strictly between them
times the spacing, combined as a Euclidean norm (0 when they touch or overlap). Counts: val/test get
round(fraction x candidate cells) cells each (>= 1 when the fraction is > 0).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from synth.errors import SynthError

Box = tuple[tuple[int, int], ...]  # voxel [start, stop) per axis


@dataclass(frozen=True)
class Block:
    split: str  # train | val | test
    box: Box


def gap_mm(a: Box, b: Box, spacing: Sequence[float]) -> float:
    """Empty space between two boxes in mm (0 when they touch or overlap)."""
    sep = [max(0, b0 - a1, a0 - b1) * float(s) for (a0, a1), (b0, b1), s in zip(a, b, spacing)]
    return float(np.sqrt(sum(v * v for v in sep)))


def overlap(a: Box, b: Box) -> int:
    """Voxels two boxes share."""
    return int(np.prod([max(0, min(a1, b1) - max(a0, b0)) for (a0, a1), (b0, b1) in zip(a, b)]))


def held_out_counts(n: int, fractions: Sequence[float]) -> tuple[int, int]:
    """(val, test) cells out of n candidates: rounded fractions, >= 1 where the fraction is > 0."""
    counts = [max(1, int(round(f * n))) if f > 0 else 0 for f in fractions[1:3]]
    return counts[0], counts[1]


def _cells(region: Box, size: Sequence[int], pitch: Sequence[int]) -> list[Box]:
    """Cells of `size` laid with `pitch` along each axis, centred in the region; z-major order (last axis slowest)."""
    starts = []
    for (lo, hi), n, p in zip(region, size, pitch):
        count = max(0, (hi - lo - n) // p + 1)
        first = lo + (hi - lo - (n + (count - 1) * p)) // 2
        starts.append([int(first + k * p) for k in range(count)])
    return [tuple((s, s + n) for s, n in zip(reversed(c), size)) for c in itertools.product(*reversed(starts))]


def _windows(region: Box, size: Sequence[int], stride: Sequence[int]) -> list[Box]:
    """Windows of `size` every `stride` voxels covering the region (the last one flush with its end)."""
    starts = []
    for (lo, hi), n, s in zip(region, size, stride):
        if hi - lo < n:
            return []
        axis = [int(v) for v in range(lo, hi - n + 1, s)]
        if axis[-1] != hi - n:
            axis.append(int(hi - n))
        starts.append(axis)
    return [tuple((s, s + n) for s, n in zip(c, size)) for c in itertools.product(*starts)]


def cut_blocks(
    region: Box,                         # voxel box to cut (e.g. the foreground's bounding box)
    spacing: Sequence[float],            # mm per voxel along each axis
    cell: Sequence[int | None],          # held-out block size in voxels per axis (None: the whole region's extent)
    window: Sequence[int | None],        # training block size in voxels (None: the whole extent)
    stride: Sequence[int | None],        # training block step in voxels (None: the window size)
    fractions: Sequence[float],          # train/val/test (data.split); val/test are fractions of candidate cells
    seed: int,
    gap: float,                          # mm of empty space between blocks of different splits
    keep: Callable[[Box], bool] | None = None,  # e.g. enough foreground; applied to cells and windows
    what: str = "volume",                # named in errors
) -> list[Block]:
    """Blocks of one volume with their split (see the module docstring). Raises a SynthError naming the fix
    when the region cannot give the held-out cells or leaves no training block."""
    extent = [hi - lo for lo, hi in region]
    cell = [e if c is None else min(int(c), e) for c, e in zip(cell, extent)]
    window = [e if w is None else min(int(w), e) for w, e in zip(window, extent)]
    stride = [w if s is None else max(1, int(s)) for s, w in zip(stride, window)]
    gap_vox = [int(np.ceil(gap / float(s) - 1e-9)) for s in spacing]
    keep = keep or (lambda box: True)
    n_val, n_test = held_out_counts(1, fractions)  # which held-out splits exist at all
    held: list[Block] = []
    if n_val or n_test:
        cells = [c for c in _cells(region, cell, [c + g for c, g in zip(cell, gap_vox)]) if keep(c)]
        n_val, n_test = held_out_counts(len(cells), fractions)
        if n_val + n_test >= len(cells):
            size = " x ".join(f"{c * float(s):g}" for c, s in zip(cell, spacing))
            raise SynthError(
                f"the {what} holds {len(cells)} held-out candidate block(s) of {size} mm with a {gap:g} mm gap, too few for "
                f"{n_val} val + {n_test} test block(s) and training: use smaller blocks or gap (data.source.*_mm, data.gap_mm), "
                "or a smaller held-out share (data.split)"
            )
        rng = np.random.default_rng(seed)
        h = n_val + n_test
        edges = np.floor(np.arange(h + 1) * len(cells) / h).astype(int)  # h strata along the order: one cell from each
        positions = [int(rng.integers(a, b)) for a, b in zip(edges[:-1], edges[1:])]
        keys = [((i + ph) / n, name) for name, n, ph in (("val", n_val, rng.random()), ("test", n_test, rng.random())) for i in range(n)]
        labels = [name for _, name in sorted(keys)]  # val and test interleaved, each spread over the whole order
        held = [Block(name, cells[p]) for p, name in zip(positions, labels)]
    train = [
        Block("train", w) for w in _windows(region, window, stride)
        if keep(w) and all(overlap(w, b.box) == 0 and gap_mm(w, b.box, spacing) >= gap - 1e-6 for b in held)
    ]
    if not train and fractions[0] > 0:
        raise SynthError(
            f"no training block of the {what} lies >= {gap:g} mm from the held-out blocks: use smaller blocks or gap, "
            "or a smaller held-out share (data.split)"
        )
    return train + held


def describe(blocks: list[Block]) -> str:
    """'123 train / 4 val / 4 test blocks' for the log."""
    counts = {s: sum(b.split == s for b in blocks) for s in ("train", "val", "test")}
    return " / ".join(f"{n} {s}" for s, n in counts.items()) + " blocks"
