"""Data sources: where images come from. Each lists `subjects()` and decodes one with `load(subject)`.

A source knows nothing about intensities, resampling, slicing or caching (that is the DataModule's job); it
returns native-resolution channel-first float32 arrays with their spacing and affine, and `header(subject)`
describes a subject without decoding it. NIfTI arrays are reoriented to canonical RAS, so array axes are
(x, y, z); 2D images (PNG/JPG/TIFF) are (C, H, W). Sources may give subjects a split (blocks) or a subject key
(Subject.group: files split together).

Here: the base class, MNI152 (real T1 shipped with nilearn) and Phantom (procedural). The sources that read a
user's files (BraTS, CSVList, Folder) live in synth/data/user_sources.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synth.data import phantom as _phantom
from synth.data.readers import Header, Subject, Volume, read_header, read_nifti
from synth.errors import SynthError

# ---------------------------------------------------------------------------------------- sources
class Source:
    """Base: `subjects()`, `load(subject)`, label metadata, and a key describing the source for caches."""

    num_classes: int = 0
    class_names: list[str] | None = None

    def subjects(self) -> list[Subject]:
        raise NotImplementedError

    def load(self, subject: Subject) -> Volume:
        raise NotImplementedError

    def header(self, subject: Subject) -> Header | None:
        """Geometry and file type of a subject without decoding it (None for generated data)."""
        if "header" in subject.extra:
            return subject.extra["header"]
        return read_header(subject.paths[0]) if subject.paths else None

    def cache_key(self) -> dict[str, Any]:
        """Public constructor-level attributes: identifies what this source produces (for the disk cache)."""
        key = {"class": type(self).__name__}
        for k, v in sorted(vars(self).items()):
            if not k.startswith("_") and k not in ("num_classes", "class_names"):
                key[k] = str(v) if isinstance(v, Path) else v
        return key


def _as_list(x) -> list:
    return [] if x is None else list(x)


class MNI152(Source):
    """The MNI152 2009a T1 template shipped inside nilearn (one skull-stripped brain, 1 mm, RAS, 0..255).

    One subject: the template cropped to the brain's x/y bounding box padded to a square (all of z). Being one
    volume, the DataModule splits it into blocks (synth.data.blocks via synth.data.splits.volume_blocks): 2D,
    held-out axial slabs with training slices around them; 3D, cubes; never overlapping, `data.blocks.gap_mm`
    apart across splits.
    """

    FILE = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"

    def __init__(self):
        self._data: tuple | None = None

    @classmethod
    def path(cls) -> Path:
        try:
            import nilearn
        except ImportError as e:
            raise SynthError("data=mni152 needs the nilearn package (it ships the template): pip install nilearn") from e
        p = Path(nilearn.__file__).parent / cls.FILE
        if not p.is_file():
            raise SynthError(f"MNI152 template {p} is missing from this nilearn install: reinstall nilearn (pip install --force-reinstall nilearn)")
        return p

    def _crop(self) -> tuple[np.ndarray, np.ndarray]:
        """The brain-cropped template and its affine (decoded once)."""
        if self._data is None:
            arr, _, _, affine = read_nifti(self.path())
            idx = np.argwhere(arr[0] > 0)
            lo, hi = idx.min(0), idx.max(0) + 1
            side = int(max(hi[0] - lo[0], hi[1] - lo[1]))  # pad the brain's x/y box to a square
            box = [(int(a) - (side - int(b - a)) // 2,) * 2 for a, b in zip(lo[:2], hi[:2])]
            box = [(a, a + side) for a, _ in box] + [(0, arr.shape[3])]
            out = np.zeros((1, *(b - a for a, b in box)), dtype=np.float32)  # template background is 0
            src = tuple(slice(max(a, 0), min(b, n)) for (a, b), n in zip(box, arr.shape[1:]))
            dst = tuple(slice(s.start - a, s.stop - a) for s, (a, _) in zip(src, box))
            out[(slice(None), *dst)] = arr[(slice(None), *src)]
            crop = affine.copy()
            crop[:3, 3] = affine[:3, :3] @ np.array([a for a, _ in box], float) + affine[:3, 3]
            self._data = (out, crop)
        return self._data

    def subjects(self) -> list[Subject]:
        return [Subject("mni152", None, [self.path()], {})]

    def header(self, subject: Subject) -> Header:
        arr, affine = self._crop()
        return Header(self.path(), "nifti", tuple(arr.shape[1:]), 1, "uint8", (1.0, 1.0, 1.0), affine, "RAS", 3)

    def load(self, subject: Subject) -> Volume:
        arr, affine = self._crop()
        spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        return Volume(arr.copy(), spacing, ["T1"], origin=tuple(affine[:3, 3]), affine=affine)


class Phantom(Source):
    """Procedural brain-like subjects (see synth.data.phantom), generated directly at `shape`.

    label = 1 when the subject has a lesion (its mask in Volume.seg: data.masks=true serves it per item), else 0;
    deterministic by `seed`.
    """

    def __init__(
        self,
        shape: tuple[int, ...] = (64, 64),  # pass ${data.image_size}
        spatial_dims: int = 2,
        channels: int = 1,  # 1-4 contrasts: T1, T2, FLAIR, T1ce
        n_subjects: int = 48,
        lesion_prob: float = 0.5,
        seed: int = 42,
        lesion_radius=(0.08, 0.16),  # range of lesion radii, in half fields of view (larger: easier to learn)
    ):
        self.shape = tuple(int(s) for s in shape)
        self.spatial_dims = int(spatial_dims)
        self.channels = int(channels)
        self.n_subjects = int(n_subjects)
        self.lesion_prob = float(lesion_prob)
        self.seed = int(seed)
        self.lesion_radius = [float(r) for r in lesion_radius]
        if len(self.lesion_radius) != 2 or not 0 < self.lesion_radius[0] <= self.lesion_radius[1] < 1:
            raise SynthError(f"phantom lesion_radius={list(lesion_radius)} must be [lo, hi] with 0 < lo <= hi < 1 (half fields of view): e.g. [0.08,0.16]")
        if len(self.shape) != self.spatial_dims:
            raise SynthError(f"phantom shape {list(self.shape)} does not have spatial_dims={spatial_dims} sizes: set data.image_size to {spatial_dims} numbers")
        if not 1 <= self.channels <= len(_phantom.CONTRASTS):
            raise SynthError(f"phantom channels={channels} is out of range: set data.channels to 1..{len(_phantom.CONTRASTS)}")
        self.num_classes = 2 if self.lesion_prob > 0 else 0
        self.class_names = ["healthy", "lesion"] if self.num_classes else None

    def subjects(self) -> list[Subject]:
        out = []
        for i in range(self.n_subjects):
            lesion = bool(np.random.default_rng([self.seed, i, 0]).random() < self.lesion_prob)
            out.append(Subject(f"phantom_{i:03d}", int(lesion), None, {"index": i, "lesion": lesion}))
        return out

    def load(self, subject: Subject) -> Volume:
        i = subject.extra["index"]
        p = _phantom.make_phantom(self.shape, self.channels, seed=self.seed * 100_003 + i, lesion=subject.extra["lesion"],
                                   lesion_radius=tuple(self.lesion_radius))
        return Volume(p["image"], _phantom.phantom_spacing(self.shape), p["channel_names"], seg=p["seg"])


__all__ = ["Source", "MNI152", "Phantom"]
