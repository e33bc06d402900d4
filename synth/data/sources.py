"""Data sources: where images come from. Each lists `subjects()` and decodes one with `load(subject)`.

A source knows nothing about normalisation, slicing, resizing or caching (that is the DataModule's
job); it returns native-resolution channel-first float32 arrays with their spacing. NIfTI arrays are
reoriented to canonical RAS, so array axes are (x, y, z); 2D images (PNG/JPG/TIFF) are (C, H, W).

Sources: MNI152 (real T1 shipped with nilearn), Phantom (procedural), BraTS (2021/2023 layouts),
CSVList (GaNDLF-style CSV), Folder (a directory of image files).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from synth.data import phantom as _phantom
from synth.data.blocks import Block, cut_blocks, describe
from synth.data.readers import NIFTI_SUFFIXES, Subject, Volume, _stack, is_image, pil_channels, read_image, read_nifti, stem, why
from synth.errors import SynthError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------- sources
class Source:
    """Base: `subjects()`, `load(subject)`, label metadata, and a key describing the source for caches."""

    num_classes: int = 0
    class_names: list[str] | None = None

    def subjects(self) -> list[Subject]:
        raise NotImplementedError

    def load(self, subject: Subject) -> Volume:
        raise NotImplementedError

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

    Because it is ONE brain, subjects are blocks of it, split by synth.data.blocks: held-out (val/test) blocks
    are interleaved along z, never overlap a training block and keep `gap_mm` of unused brain from every block
    of another split. 2D: held-out axial slabs of `slab_mm` inside the brain's z-extent x `slice_range`,
    training blocks are the single slices >= gap_mm from them; each is cropped to the brain's x/y bounding box
    padded to a square and sliced by the DataModule. 3D: held-out cubes of `crop_mm` on a grid, training cubes
    of the same size every `stride_mm` (they may overlap each other); cubes with less than `min_foreground`
    brain are dropped.
    """

    FILE = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"

    def __init__(
        self,
        spatial_dims: int = 2,
        slice_range: tuple[float, float] = (0.2, 0.8),  # 2D: fraction of the brain's z-extent used
        slab_mm: float = 8,  # 2D: thickness of a held-out slab
        crop_mm: float = 32,  # 3D: cube edge
        stride_mm: float = 16,  # 3D: step between training cubes
        gap_mm: float = 8,  # unused brain between blocks of different splits
        min_foreground: float = 0.25,  # 3D: least brain fraction of a cube
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),  # pass ${data.split}
        seed: int = 42,  # pass ${data.seed}
    ):
        self.spatial_dims = int(spatial_dims)
        self.slice_range = tuple(float(f) for f in slice_range)
        self.slab_mm = float(slab_mm)
        self.crop_mm = float(crop_mm)
        self.stride_mm = float(stride_mm)
        self.gap_mm = float(gap_mm)
        self.min_foreground = float(min_foreground)
        self.split = tuple(float(f) for f in split)
        self.seed = int(seed)
        for key in ("slab_mm", "crop_mm", "stride_mm"):
            if getattr(self, key) <= 0:
                raise SynthError(f"data.source.{key}={getattr(self, key):g} must be > 0: e.g. data.source.{key}=8")
        if self.gap_mm < 0:
            raise SynthError(f"data.source.gap_mm={self.gap_mm:g} must be >= 0: e.g. data.source.gap_mm=8")
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

    def _volume(self):
        if self._data is None:
            arr, spacing, origin = read_nifti(self.path())
            idx = np.argwhere(arr[0] > 0)
            self._data = (arr, spacing, origin, idx.min(0), idx.max(0) + 1)
        return self._data

    def blocks(self) -> list[Block]:
        """The volume's blocks with their split (voxel boxes in the template's RAS grid)."""
        arr, spacing, _, lo, hi = self._volume()
        vox = [lambda mm, s=s: max(1, int(round(mm / s))) for s in spacing]
        if self.spatial_dims == 2:
            z0 = lo[2] + int(round(self.slice_range[0] * (hi[2] - lo[2])))
            z1 = lo[2] + int(round(self.slice_range[1] * (hi[2] - lo[2])))
            region = ((int(lo[0]), int(hi[0])), (int(lo[1]), int(hi[1])), (z0, z1))
            return cut_blocks(region, spacing, (None, None, vox[2](self.slab_mm)), (None, None, 1), (None, None, 1),
                              self.split, self.seed, self.gap_mm, what="MNI152 brain (2D)")
        fg = arr[0] > 0

        def enough(box) -> bool:
            return float(fg[tuple(slice(a, b) for a, b in box)].mean()) >= self.min_foreground

        region = tuple((int(a), int(b)) for a, b in zip(lo, hi))
        size = [v(self.crop_mm) for v in vox]
        return cut_blocks(region, spacing, size, size, [v(self.stride_mm) for v in vox], self.split, self.seed,
                          self.gap_mm, keep=enough, what="MNI152 brain (3D)")

    def subjects(self) -> list[Subject]:
        out = []
        blocks = self.blocks()
        log.info("mni152 (%dD): %s, >= %g mm apart across splits", self.spatial_dims, describe(blocks), self.gap_mm)
        for b in blocks:
            (x0, x1), (y0, y1), (z0, z1) = b.box
            sid = f"mni152_z{z0:03d}-{z1 - 1:03d}" if self.spatial_dims == 2 else f"mni152_x{x0:03d}_y{y0:03d}_z{z0:03d}"
            out.append(Subject(sid, None, None, {"box": b.box, "presliced": self.spatial_dims == 2}, split=b.split))
        return out

    def load(self, subject: Subject) -> Volume:
        arr, spacing, origin, lo, hi = self._volume()
        box = [tuple(ab) for ab in subject.extra["box"]]
        if self.spatial_dims == 2:
            side = int(max(hi[0] - lo[0], hi[1] - lo[1]))  # pad the brain's x/y box to a square
            starts = [int(a) - (side - int(b - a)) // 2 for a, b in zip(lo[:2], hi[:2])]
            box = [(s, s + side) for s in starts] + [box[2]]
        out = np.zeros((1, *(b - a for a, b in box)), dtype=np.float32)  # template background is 0
        src = tuple(slice(max(a, 0), min(b, n)) for (a, b), n in zip(box, arr.shape[1:]))
        dst = tuple(slice(s.start - a, s.stop - a) for s, (a, _) in zip(src, box))
        out[(slice(None), *dst)] = arr[(slice(None), *src)]
        world = tuple(o + a * s for o, (a, _), s in zip(origin, box, spacing))
        return Volume(out, spacing, ["T1"], origin=world)


class Phantom(Source):
    """Procedural brain-like subjects (see synth.data.phantom), generated directly at `shape`.

    label = 1 when the subject has a lesion (mask in Volume.seg), else 0; deterministic by `seed`.
    """

    def __init__(
        self,
        shape: tuple[int, ...] = (64, 64),  # pass ${data.image_size}
        spatial_dims: int = 2,
        channels: int = 1,  # 1-4 contrasts: T1, T2, FLAIR, T1ce
        n_subjects: int = 48,
        lesion_prob: float = 0.5,
        seed: int = 42,
    ):
        self.shape = tuple(int(s) for s in shape)
        self.spatial_dims = int(spatial_dims)
        self.channels = int(channels)
        self.n_subjects = int(n_subjects)
        self.lesion_prob = float(lesion_prob)
        self.seed = int(seed)
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
        p = _phantom.make_phantom(self.shape, self.channels, seed=self.seed * 100_003 + i, lesion=subject.extra["lesion"])
        return Volume(p["image"], _phantom.phantom_spacing(self.shape), p["channel_names"], seg=p["seg"])


BRATS_2021_TO_2023 = {k: v[0] for k, v in _phantom.BRATS_MODALITIES.items()}
BRATS_2023_TO_2021 = {v: k for k, v in BRATS_2021_TO_2023.items()}


class BraTS(Source):
    """BraTS 2021 (`BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz`) or 2023
    (`BraTS-GLI-XXXXX-XXX/BraTS-GLI-XXXXX-XXX-{t1n,t1c,t2w,t2f,seg}.nii.gz`, any `BraTS-*` prefix)
    subject folders under `root`, detected per folder. `modalities` may use either naming.
    With `label_from_seg` (default), each image is labelled by its segmentation: 1 = tumour in the slice
    (2D) or volume (3D), else 0; a subject without a seg file then has no label (-1)."""

    label_from_seg = True

    def __init__(self, root: str | Path, modalities: list[str] = ("t1ce",), label_from_seg: bool = True):
        self.root = Path(root).expanduser()
        self.label_from_seg = bool(label_from_seg)
        if self.label_from_seg:
            self.num_classes, self.class_names = 2, ["no_tumour", "tumour"]
        self.modalities = [str(m) for m in _as_list(modalities)]
        known = sorted(BRATS_2021_TO_2023) + sorted(BRATS_2023_TO_2021)
        for m in self.modalities:
            if m not in known:
                raise SynthError(f"data.source.modalities has unknown BraTS modality {m!r}: use some of {known}")
        if not self.modalities:
            raise SynthError("data.source.modalities is empty: list at least one, e.g. [t1ce]")

    def _files(self, folder: Path) -> tuple[list[Path], Path | None]:
        sid = folder.name
        if sid.startswith("BraTS2021_") or not sid.startswith("BraTS-"):
            names, sep = [BRATS_2023_TO_2021.get(m, m) for m in self.modalities], "_"
        else:
            names, sep = [BRATS_2021_TO_2023.get(m, m) for m in self.modalities], "-"

        def find(m: str) -> Path | None:
            for suffix in NIFTI_SUFFIXES:
                if (p := folder / f"{sid}{sep}{m}{suffix}").is_file():
                    return p
            return None

        paths = []
        for m in names:
            if (p := find(m)) is None:
                raise SynthError(f"BraTS subject {sid} is missing {folder / f'{sid}{sep}{m}.nii.gz'}: restore the file or remove the subject folder")
            paths.append(p)
        return paths, find("seg")

    def subjects(self) -> list[Subject]:
        if not self.root.is_dir():
            raise SynthError(f"data.root={self.root} does not exist: point data.root at your BraTS folder")
        pattern = re.compile(r"^(BraTS2021_\d+|BraTS-[A-Za-z]+-\d+-\d+)$")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and pattern.match(p.name))
        if not folders:
            raise SynthError(f"no BraTS subject folders in data.root={self.root}: expected BraTS2021_XXXXX/ or BraTS-GLI-XXXXX-XXX/ folders there")
        out = []
        for f in folders:
            paths, seg = self._files(f)
            out.append(Subject(f.name, None, paths, {"seg": seg}))
        return out

    def load(self, subject: Subject) -> Volume:
        vol = _stack(subject, list(self.modalities))
        if subject.extra.get("seg") is not None:
            seg = read_nifti(subject.extra["seg"])[0][0]
            vol.seg = seg.astype(np.int64) if seg.shape == vol.array.shape[1:] else None
        return vol


class CSVList(Source):
    """GaNDLF-style data list: columns SubjectID, Channel_0..Channel_N (paths absolute or relative to
    the CSV's folder), optional class column `label_column` (default Label; ints kept; strings mapped to
    sorted class indices). LabelMap/Mask
    columns are ignored. Each Channel_ column is one channel, except that a single column may hold
    multi-channel files (e.g. RGB); the DataModule checks the decoded channel count."""

    def __init__(self, csv: str | Path, channels: int = 1, label_column: str | None = "Label"):
        self.csv = Path(csv).expanduser()
        self.channels = int(channels)
        self.label_column = None if label_column in (None, "") else str(label_column)

    def subjects(self) -> list[Subject]:
        import pandas as pd

        if not self.csv.is_file():
            raise SynthError(f"data.csv_path={self.csv} does not exist: point data.csv_path at your data list")
        df = pd.read_csv(self.csv, dtype=str, keep_default_na=False)
        df.columns = [c.strip() for c in df.columns]
        cols = sorted((c for c in df.columns if re.fullmatch(r"Channel_\d+", c)), key=lambda c: int(c.split("_")[1]))
        if "SubjectID" not in df.columns or not cols:
            raise SynthError(f"{self.csv} needs columns SubjectID and Channel_0..Channel_N, found {list(df.columns)}: rename its columns")
        if len(cols) != self.channels and len(cols) != 1:
            raise SynthError(f"{self.csv} has {len(cols)} Channel_ columns but data.channels={self.channels}: set data.channels={len(cols)}")
        if df.empty:
            raise SynthError(f"{self.csv} lists no subjects: add rows to it")
        labels = None
        col = self.label_column
        if col is not None and col not in df.columns and col != "Label":  # the default may be absent: unlabelled data
            others = [c for c in df.columns if c != "SubjectID" and c not in cols]
            raise SynthError(f"data.source.label_column={col} is not a column of {self.csv} (it has {list(df.columns)}): "
                             f"set data.source.label_column to one of {others or ['Label']}, or null for unlabelled data")
        if col is not None and col in df.columns:
            raw = [v.strip() for v in df[col]]
            if "" in raw:
                raise SynthError(f"{self.csv} row {raw.index('') + 2} has an empty {col}: fill it in or set data.source.label_column=null")
            if all(re.fullmatch(r"-?\d+", v) for v in raw):
                labels = [int(v) for v in raw]
                if min(labels) < 0:
                    raise SynthError(f"{self.csv} column {col} holds a negative class {min(labels)}: use classes 0..K-1 (or class names)")
                self.num_classes = max(labels) + 1
                self.class_names = [str(i) for i in range(self.num_classes)]
            else:
                self.class_names = sorted(set(raw))
                self.num_classes = len(self.class_names)
                labels = [self.class_names.index(v) for v in raw]
        base = self.csv.parent
        out = []
        for i, row in enumerate(df.itertuples(index=False)):
            r = dict(zip(df.columns, row))
            paths = []
            for c in cols:
                p = Path(r[c].strip()).expanduser()
                p = p if p.is_absolute() else base / p
                if not p.is_file():
                    raise SynthError(f"{self.csv} row {i + 2} (SubjectID {r['SubjectID']}) {c}: file {p} does not exist: fix the path in the CSV")
                paths.append(p)
            out.append(Subject(str(r["SubjectID"]).strip(), None if labels is None else labels[i], paths, {"row": i + 2}))
        return out

    def load(self, subject: Subject) -> Volume:
        vol = _stack(subject)
        if len(subject.paths) > 1:
            vol.channel_names = [f"Channel_{i}" for i in range(len(subject.paths))]
        return vol


class Folder(Source):
    """A directory of NIfTI / PNG / JPG / TIFF files, one image per file = one subject (id = file stem).
    RGB images give 3 channels (R, G, B), grayscale 1. With `label_from_subdir`, each file's parent
    folder name is its class (sorted class names -> 0..K-1) and sub-folders are searched."""

    def __init__(self, root: str | Path, recursive: bool = False, label_from_subdir: bool = False):
        self.root = Path(root).expanduser()
        self.recursive = bool(recursive)
        self.label_from_subdir = bool(label_from_subdir)

    def _channels(self, p: Path) -> int:
        if p.name.lower().endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            try:
                shape = nib.load(str(p)).shape
            except Exception as e:
                raise SynthError(f"cannot read NIfTI {p} ({why(e)}): replace or remove the corrupt file") from e
            return shape[3] if len(shape) == 4 else 1
        return pil_channels(p)

    def subjects(self) -> list[Subject]:
        if not self.root.is_dir():
            raise SynthError(f"data.root={self.root} does not exist: point data.root at your image folder")
        walk = self.root.rglob("*") if (self.recursive or self.label_from_subdir) else self.root.iterdir()
        files = sorted(p for p in walk if is_image(p))
        if not files:
            raise SynthError(f"no .nii/.nii.gz/.png/.jpg/.tif images in data.root={self.root}: put images there (or set data.source.recursive=true)")
        counts = {}
        for p in files:
            counts.setdefault(self._channels(p), p)
        if len(counts) > 1:
            example = ", ".join(f"{p.name} has {c}" for c, p in counts.items())
            raise SynthError(f"images in {self.root} have mixed channel counts ({example}): convert them to one colour mode")
        if self.label_from_subdir:
            self.class_names = sorted({p.parent.name for p in files})
            self.num_classes = len(self.class_names)
        ids = [stem(p) for p in files]
        if len(set(ids)) < len(ids):  # same stem in different folders: use the relative path
            ids = [str(p.relative_to(self.root).parent / stem(p)).replace("/", "_") for p in files]
        return [
            Subject(i, self.class_names.index(p.parent.name) if self.label_from_subdir else None, [p], {})
            for i, p in zip(ids, files)
        ]

    def load(self, subject: Subject) -> Volume:
        return read_image(subject.paths[0])


__all__ = ["Subject", "Volume", "Source", "MNI152", "Phantom", "BraTS", "CSVList", "Folder", "read_image"]
